"""v3 — v2's network trained by offline reinforcement learning over the beam search's beams.

Training has two phases on the same sequences as v2 (each anchor's best ``beam_ranks`` beams, picked ICDs in pick
order, the anchor's beam-search pool as the candidate set):

1. **RCE warm-up** (``epochs`` passes, lr ``lr``, dropout on): v2's teacher-forced cross-entropy, each beam's terms
   weighted by ``K · softmax(r / rl.temperature)`` over its anchor's ``K`` beams, so better beams count more.  With
   equal rewards (or one beam per anchor) every weight is exactly 1 and this is v2's loss.
2. **Offline GRPO** (``rl.grpo_epochs`` passes, lr ``rl.lr``, dropout off so that log-probabilities are a function
   of the weights): the group of an anchor is the group table's rows (``rule beam_rewards``,
   ``leverplus.tracks.vqa.icd.rl_rewards``: every beam the search kept and ``rl.group.random`` random pool sequences, each
   scored by InfoScore and VQA accuracy; without that table, its ``beam_ranks`` best beams); advantages
   ``A = (r − mean) / (std + rl.adv_eps · unit)`` within the group (TRL's GRPO: unbiased std; ``unit`` = the std of
   every reward, so the epsilon is in reward units); loss per sequence
   ``−min(ρA, clip(ρ, 1 ± rl.clip_eps)A) + rl.kl_beta · KL(π ‖ π_RCE)``, where ρ is the ratio of the sequence's
   probability under the current policy to that under the policy at the start of the GRPO epoch, and the KL is the
   exact KL of the per-step pool distributions along the sequence to the frozen RCE policy.  What this is: an
   advantage-weighted, trust-region (clipped ratio + KL) update on a **fixed, offline** set of sequences — nothing
   is sampled from the policy, so it is not on-policy GRPO; the clip fraction counts only clips that bind.

**Reward** (v3): the beam's InfoScore gain, ``P̄(y | beam ⊕ x) − P̄(y | x)`` — its final P̄ (``score`` in
``beam.parquet``) minus the anchor's zero-shot P̄ (``zero_shot_score``), i.e. the sum of its step InfoScores.
v4 (``v4.py``) mixes in an end-to-end reward.  Inference is v2's (same network, same greedy pointer).

Per-epoch curves go into ``selector.json`` (``training.loss_per_epoch`` for RCE; ``training.grpo``: loss, mean
reward, clip fraction, KL, ratio range, and the values at the very first GRPO step).
"""
from __future__ import annotations

import copy
import math
import sys
from typing import Any, ClassVar

import pandas as pd
import torch

from leverplus.tracks.vqa.icd import rl
from leverplus.tracks.vqa.icd.selectors.common import make_batch
from leverplus.tracks.vqa.icd.selectors.v2 import DEFAULTS as V2_DEFAULTS
from leverplus.tracks.vqa.icd.selectors.v2 import CrossAttentionPointerSelector

DEFAULTS: dict[str, Any] = {
    **V2_DEFAULTS,
    "rl": {
        "temperature": 0.1,  # RCE: softmax temperature over an anchor's beam rewards (reward units)
        "grpo_epochs": 4,  # GRPO passes over the sequences after the RCE warm-up (`epochs`)
        "lr": 0.0002,  # GRPO AdamW learning rate
        "clip_eps": 0.2,  # PPO clip range of the sequence probability ratio
        "kl_beta": 0.05,  # weight of the KL penalty to the frozen RCE policy
        "adv_eps": 0.01,  # × the reward's unit (std of all rewards) is added to a group's std (TRL: a fixed 1e-4)
        "group": {"beams": None, "random": 3},  # GRPO group: every kept beam (or the best `beams`) + random sequences
    },
}


class GRPOPointerSelector(CrossAttentionPointerSelector):
    version = "v3"
    DEFAULTS = DEFAULTS
    # GRPO reads the epoch's old and reference log-probabilities from the full passes it makes anyway (before
    # GRPO, after each epoch) when every batch has the same shape; see `grpo`
    reuse_full_passes: ClassVar[bool] = True

    # ---- rewards ---------------------------------------------------------------------------------------------
    @classmethod
    def beam_rewards(cls, cfg: dict[str, Any], beam: pd.DataFrame, rewards: pd.DataFrame | None) -> dict:
        """(anchor, beam_rank) → reward: the beam's InfoScore gain over zero-shot."""
        missing = [c for c in ("anchor", "beam_rank", "score", "zero_shot_score") if c not in beam.columns]
        if missing:
            raise ValueError(f"beam table lacks columns {missing} (needed for the v3 reward)")
        gain = beam["score"].astype(float) - beam["zero_shot_score"].astype(float)
        return {(str(a), int(r)): float(g) for a, r, g in zip(beam["anchor"], beam["beam_rank"], gain)}

    @classmethod
    def row_rewards(cls, cfg: dict[str, Any], rows: pd.DataFrame) -> list[float]:
        """The reward of every row of a group table (``rl_rewards``): v3's is the InfoScore gain."""
        return [float(x) for x in rows["infoscore_reward"]]

    def groups(self, data, source, rewards: pd.DataFrame | None, pools: pd.DataFrame | None, beam_reward: list):
        """GRPO's training sequences and their rewards: every row of the group table (beams of every rank, random
        pool sequences) when there is one, else the anchors' ``beam_ranks`` best beams (``data``)."""
        from leverplus.tracks.vqa.icd.selector_training import build_sequences

        if rewards is None or pools is None or "kind" not in rewards.columns or "picked" not in rewards.columns:
            return data, beam_reward, "beams"
        rows = rewards.assign(anchor=rewards["anchor"].astype(str), beam_rank=rewards["beam_rank"].astype(int))
        rows = rows[rows["anchor"].isin(set(data.anchors))].sort_values(["anchor", "beam_rank"], kind="stable")
        seqs = build_sequences(rows, pools, source, beam_ranks=len(rows) + 1)
        by_key = dict(zip(zip(rows["anchor"], rows["beam_rank"]), self.row_rewards(self.cfg, rows)))
        return seqs, [by_key[(a, r)] for a, r in zip(seqs.anchors, seqs.beam_ranks)], "group table"

    # ---- training --------------------------------------------------------------------------------------------
    def fit(self, data, source, *, seed: int, shuffle: torch.Generator, beam: pd.DataFrame,
            rewards: pd.DataFrame | None = None, pools: pd.DataFrame | None = None) -> dict[str, Any]:
        from leverplus.tracks.vqa.icd.ranking import INFOSCORE_TOL
        from leverplus.tracks.vqa.icd.selector_training import supervised_epochs

        table = self.beam_rewards(self.cfg, beam, rewards)
        try:
            reward = [table[(a, r)] for a, r in zip(data.anchors, data.beam_ranks)]
        except KeyError as err:
            raise ValueError(f"no reward for beam {err.args[0]}") from None
        cfg = self.cfg["rl"]
        weights = rl.rce_weights(data.anchors, reward, cfg["temperature"])
        rce = supervised_epochs(self, data, source, shuffle=shuffle, weights=weights, desc=f"{self.version} RCE")
        gdata, greward, origin = self.groups(data, source, rewards, pools, reward)
        grpo = self.grpo(gdata, source, greward, shuffle=shuffle)
        spread = rl.group_spread(gdata.anchors, greward, INFOSCORE_TOL)
        print(f"{self.version} GRPO groups ({origin}): {spread['groups']} anchors, {spread['group_size_mean']:.1f} "
              f"sequences each; {100 * spread['spread_share']:.1f}% with reward spread > {INFOSCORE_TOL:g}",
              file=sys.stderr)
        return {"loss_per_epoch": rce, "final_loss": rce[-1] if rce else None,
                "reward": {"mean": sum(reward) / len(reward), "min": min(reward), "max": max(reward)},
                "grpo": {**grpo, "groups": {"origin": origin, **spread,
                                            "reward": {"mean": sum(greward) / len(greward), "min": min(greward),
                                                       "max": max(greward)}}}}

    def _batches(self, data, order: list[int]):
        size = int(self.cfg["batch_size"])
        for s in range(0, len(order), size):
            idx = order[s : s + size]
            yield idx, make_batch([data.query_rows[i] for i in idx], [data.pool_rows[i] for i in idx],
                                  [data.targets[i] for i in idx])

    def _step_logp(self, model, batch, source):
        logp = rl.step_log_probs(model, model.encode(batch, source, source), batch)
        return logp, rl.sequence_log_prob(logp, batch.targets)

    @torch.no_grad()
    def _full_pass(self, data, source) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Every sequence's step log-probabilities (N, S, P) — None unless every batch has the same shape — and
        sequence log-probability (N,), in batches of the sequences in order."""
        uniform = self._uniform_batches(data)
        seq = torch.empty(len(data))
        step = None
        for idx, batch in self._batches(data, list(range(len(data)))):
            logp, seq[idx] = self._step_logp(self, batch, source)
            if uniform:
                step = logp.new_empty((len(data), *logp.shape[1:])) if step is None else step
                step[idx] = logp
        return step, seq

    def _uniform_batches(self, data) -> bool:
        """Every batch of ``data`` has the same shape, whatever the order: full batches, pools of one size,
        sequences of one length. A sequence's log-probabilities are then the same, bit for bit, in any batch."""
        return (len(data) % int(self.cfg["batch_size"]) == 0 and len({len(p) for p in data.pool_rows}) == 1
                and len({len(t) for t in data.targets}) == 1)

    @torch.no_grad()
    def _policy_reward(self, data, source, reward) -> float:
        return rl.expected_group_reward(data.anchors, self._full_pass(data, source)[1], reward)

    def grpo(self, data, source, reward, *, shuffle: torch.Generator) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg["rl"]
        eps = cfg["adv_eps"] * rl.reward_scale(reward)  # in the reward's units
        adv = rl.group_advantages(data.anchors, reward, eps) if eps > 0 else torch.zeros(len(data))
        reference = copy.deepcopy(self).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=self.cfg["weight_decay"])
        self.eval()  # no dropout: the ratio and the KL compare deterministic log-probabilities
        # The policy before GRPO is the reference and the first epoch's old policy; the policy after an epoch is
        # the next epoch's old policy. Where every batch has the same shape (_uniform_batches), their log-probs
        # are read from these full passes (made for the mean-reward curve) instead of recomputed on each epoch's
        # shuffled batches: the same values bit for bit, a third of the forward passes.
        ref_step, full_seq = self._full_pass(data, source)
        reuse = self.reuse_full_passes and ref_step is not None
        curves: dict[str, Any] = {"loss": [], "mean_reward": [], "clip_fraction": [], "kl": [], "ratio_min": [],
                                  "ratio_max": [],
                                  "mean_reward_before": rl.expected_group_reward(data.anchors, full_seq, reward),
                                  "adv_eps_reward_units": eps, "n_sequences": len(data)}
        n_batches = math.ceil(len(data) / int(self.cfg["batch_size"]))
        with tqdm(total=cfg["grpo_epochs"] * n_batches, desc=f"{self.version} GRPO", unit="batch",
                  file=sys.stderr, mininterval=1.0) as bar:
            for epoch in range(cfg["grpo_epochs"]):
                order = torch.randperm(len(data), generator=shuffle).tolist()
                batches = list(self._batches(data, order))
                if reuse:
                    old = [full_seq[idx] for idx, _ in batches]
                    ref = [ref_step[idx] for idx, _ in batches]
                else:
                    with torch.no_grad():  # the epoch's old policy and the reference, on the same batches
                        old = [self._step_logp(self, b, source)[1] for _, b in batches]
                        ref = [self._step_logp(reference, b, source)[0] for _, b in batches]
                tot = {"loss": 0.0, "clip": 0.0, "kl": 0.0}
                lo, hi = math.inf, -math.inf
                for k, (idx, batch) in enumerate(batches):
                    logp, seq = self._step_logp(self, batch, source)
                    pg, ratio, clipped = rl.ppo_clip(seq, old[k], adv[idx], cfg["clip_eps"])
                    kl = rl.pool_kl(logp, ref[k], batch.targets)
                    loss = (pg + cfg["kl_beta"] * kl).mean()
                    if epoch == 0 and k == 0:
                        curves["first_step"] = {"ratio_max_abs_dev": float((ratio.detach() - 1).abs().max()),
                                                "clip_fraction": float(clipped.float().mean()),
                                                "kl": float(kl.detach().mean())}
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.cfg["grad_clip"]:
                        torch.nn.utils.clip_grad_norm_(trainable, self.cfg["grad_clip"])
                    optimiser.step()
                    ratio, kl = ratio.detach(), kl.detach()
                    tot["loss"] += float(loss.detach()) * len(idx)
                    tot["clip"] += float(clipped.float().sum())
                    tot["kl"] += float(kl.sum())
                    lo, hi = min(lo, float(ratio.min())), max(hi, float(ratio.max()))
                    bar.update(1)
                curves["loss"].append(tot["loss"] / len(data))
                curves["clip_fraction"].append(tot["clip"] / len(data))
                curves["kl"].append(tot["kl"] / len(data))
                curves["ratio_min"].append(lo)
                curves["ratio_max"].append(hi)
                full_seq = self._full_pass(data, source)[1]  # the next epoch's old policy
                curves["mean_reward"].append(rl.expected_group_reward(data.anchors, full_seq, reward))
        return curves
