"""Offline reinforcement-learning pieces for the selectors v3/v4: reward-weighted cross-entropy (RCE) and offline
GRPO over the beam search's beams.

The *group* of an anchor is a set of demonstration sequences with a scalar reward each: its beams, lower-ranked
beams and random pool sequences (``leverplus.tracks.vqa.icd.rl_rewards``), or, without a group table, its ``beam_ranks`` best
beams.  Nothing here is sampled from the policy: the policy's log-probability of a beam is its teacher-forced sequence log-probability under the selector,

    log π(beam | anchor) = Σ_t log softmax(logits_t over the not-yet-chosen pool candidates)[pick_t],

and the beams are the only actions ever scored (offline RL on a fixed dataset).

* :func:`rce_weights` — per sequence ``K_a · softmax(r / T)`` over its anchor's ``K_a`` beams.  The factor ``K_a``
  makes equal rewards (or a single beam) give weight 1 exactly, so RCE is then v2's loss bit for bit.
* :func:`group_advantages` — ``(r − mean_group) / (std_group + eps)`` (unbiased std, as TRL's GRPO; ``eps`` in
  reward units); a group whose rewards are all equal gets advantage 0 (it carries no preference).
* :func:`ppo_clip` — the PPO-clip surrogate on the sequence ratio ``ρ = exp(log π − log π_old)``; its clip fraction
  counts only clips that bind.
* :func:`pool_kl` — exact KL(π ‖ π_ref) of the per-step pool distributions along the beam, summed over steps.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from leverplus.tracks.vqa.icd.selectors.common import IGNORE, PoolBatch


def _groups(anchors: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(anchors):
        out[a].append(i)
    return out


def rce_weights(anchors: Sequence[str], rewards: Sequence[float], temperature: float) -> torch.Tensor:
    """(N,) in the compute dtype: each sequence's weight ``K_a · softmax(r / temperature)`` within its anchor's group."""
    if temperature <= 0:
        raise ValueError("rl.temperature must be > 0")
    r = torch.as_tensor(list(rewards), dtype=torch.float64)
    w = torch.empty_like(r)
    for rows in _groups(anchors).values():
        idx = torch.as_tensor(rows)
        w[idx] = len(rows) * torch.softmax(r[idx] / temperature, dim=0)
    return w.to(torch.get_default_dtype())


def reward_scale(rewards: Sequence[float]) -> float:
    """The reward's unit: the unbiased std of every reward in the training set (0 for fewer than 2)."""
    r = torch.as_tensor(list(rewards), dtype=torch.float64)
    return float(r.std(unbiased=True)) if r.numel() > 1 else 0.0


def group_advantages(anchors: Sequence[str], rewards: Sequence[float], eps: float = 1e-6) -> torch.Tensor:
    """(N,) GRPO advantages (compute dtype), TRL's GRPO convention: ``(r − mean_group) / (std_group + eps)`` with
    the **unbiased** group std; a group of one, or whose rewards are all equal, gets 0. ``eps`` is in reward units:
    the selectors pass ``rl.adv_eps × reward_scale(rewards)``, so that the same setting means the same for an
    InfoScore gain (~0.1) and a VQA accuracy (0–1); TRL's fixed 1e-4 assumes rewards of order 1."""
    r = torch.as_tensor(list(rewards), dtype=torch.float64)
    adv = torch.zeros_like(r)
    for rows in _groups(anchors).values():
        idx = torch.as_tensor(rows)
        g = r[idx]
        if len(rows) < 2:
            continue
        std = g.std(unbiased=True)
        if std > 0:
            adv[idx] = (g - g.mean()) / (std + eps)
    return adv.to(torch.get_default_dtype())


def group_spread(anchors: Sequence[str], rewards: Sequence[float], tol: float) -> dict:
    """Per-group reward spread of a training set: groups, mean size, the share of groups whose rewards span more
    than ``tol`` (the others carry no preference), and the mean unbiased std of a group's rewards."""
    r = torch.as_tensor(list(rewards), dtype=torch.float64)
    spans, stds, sizes = [], [], []
    for rows in _groups(anchors).values():
        g = r[torch.as_tensor(rows)]
        sizes.append(len(rows))
        spans.append(float(g.max() - g.min()))
        stds.append(float(g.std(unbiased=True)) if len(rows) > 1 else 0.0)
    n = max(1, len(sizes))
    return {"groups": len(sizes), "group_size_mean": sum(sizes) / n,
            "spread_share": sum(s > tol for s in spans) / n, "std_mean": sum(stds) / n, "tolerance": tol}


def step_log_probs(model, state, batch: PoolBatch) -> torch.Tensor:
    """(B, S, P) log-probabilities over the pool at each teacher-forced step (−inf where masked)."""
    assert batch.targets is not None
    logits = model.masked_logits(state, batch, batch.targets[:, :-1])
    return torch.log_softmax(logits, dim=-1)


def sequence_log_prob(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) Σ over real steps of the picked candidate's log-probability."""
    valid = targets != IGNORE
    picked = torch.gather(logp, 2, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, picked, torch.zeros_like(picked)).sum(dim=1)


def weighted_sequence_loss(model, batch: PoolBatch, query_src, pool_src, weights: torch.Tensor) -> torch.Tensor:
    """RCE: v2's teacher-forced cross-entropy with every (sequence, step) term multiplied by its sequence's weight,
    averaged over all real (sequence, step) pairs, as v2 averages."""
    assert batch.targets is not None
    state = model.encode(batch, query_src, pool_src)
    logits = model.masked_logits(state, batch, batch.targets[:, :-1])
    ce = nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                                     reduction="none").view(batch.targets.shape)
    valid = batch.targets != IGNORE
    return (ce * weights[:, None]).sum() / valid.sum()


def pool_kl(logp: torch.Tensor, logp_ref: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) Σ over real steps of KL(π(·|prefix) ‖ π_ref(·|prefix)) over the pool candidates still available."""
    p = logp.exp()
    # masked candidates: −inf − (−inf); zero them before multiplying, or their NaN would reach the gradient
    diff = torch.where(p > 0, logp - logp_ref, torch.zeros_like(p))
    per_step = (p * diff).sum(dim=-1)
    return torch.where(targets != IGNORE, per_step, torch.zeros_like(per_step)).sum(dim=1)


def ppo_clip(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_eps: float):
    """Per-sequence PPO-clip loss ``−min(ρA, clip(ρ, 1−ε, 1+ε)A)``, the ratio ρ, and whether the clip **binds**
    (TRL's clip ratio: ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0 — the cases where the clipped term is the
    minimum and the sequence's gradient is zero; a ratio outside the range on the other side is not clipped)."""
    ratio = torch.exp(logp - logp_old)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    binds = ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))
    return -surrogate, ratio, binds


def expected_group_reward(anchors: Sequence[str], seq_logp: torch.Tensor, rewards: Sequence[float]) -> float:
    """Mean over anchors of Σ_b softmax_b(log π(b)) · r_b: the reward of the anchor's beams weighted by the policy's
    preference among them (rises as the policy concentrates on the high-reward beams)."""
    r = torch.as_tensor(list(rewards), dtype=torch.float64)
    lp = seq_logp.detach().to(torch.float64)
    vals = []
    for rows in _groups(anchors).values():
        idx = torch.as_tensor(rows)
        vals.append(float((torch.softmax(lp[idx], dim=0) * r[idx]).sum()))
    return sum(vals) / len(vals)
