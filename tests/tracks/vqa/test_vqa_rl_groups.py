"""Issue 22 item 3: GRPO groups with something to learn — every kept beam plus random pool sequences, each scored by
InfoScore and VQA accuracy; TRL's GRPO conventions (unbiased group std, epsilon in reward units, clip fraction of
binding clips); the per-group reward spread reported; v3/v4 train on the groups."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.icd import rl
from leverplus.tracks.vqa.icd.rl_rewards import REWARD_COLUMNS, group_spread, run_beam_rewards
from leverplus.tracks.vqa.icd.selectors import train_selector
from leverplus.models.generation import GenerationSettings
from test_selectors import feature_task

torch.set_num_threads(1)


class StubModel:
    """P̄ = 0.1 + 0.4 × the share of demonstrations whose answer is the query's; the answer: the last one's."""

    def score(self, seqs, queries):
        return np.array([0.1 + 0.4 * (sum(d.answer == q.answer for d in s) / max(1, len(s)))
                         for s, q in zip(seqs, queries)])

    def generate(self, seqs, queries, generation=None):
        return [s[-1].answer if s else "" for s in seqs]


def _task():
    ex = {f"e{i}": VQAExample(f"e{i}", "x.png", "what?", "ab" if i % 2 else "cd") for i in range(12)}
    rows = []
    for a in ("e0", "e1"):
        same = [e for e in ex if e != a and ex[e].answer == ex[a].answer]
        for rank in range(3):  # beams: same-answer demonstrations, P̄ falling with rank
            rows.append({"anchor": a, "beam_rank": rank, "picked": same[rank : rank + 2],
                         "icd_ids": same[rank : rank + 2], "score": 0.5 - 1e-7 * rank, "zero_shot_score": 0.1})
    pools = {a: [e for e in ex if e != a] for a in ("e0", "e1")}
    answers = {e: [x.answer] * 10 for e, x in ex.items()}
    return pd.DataFrame(rows), ex, pools, answers


def _groups(tmp_path, name="rewards.parquet", **kw):
    beam, ex, pools, answers = _task()
    return run_beam_rewards(StubModel(), beam, ex, answers, tmp_path / name,
                            generation=GenerationSettings.from_config({"max_new_tokens": 3}), pools=pools,
                            group=kw.pop("group", {"beams": None, "random": 4}), shot_num=2, seed=kw.pop("seed", 0),
                            vqa_eval="official", stem=False, chunk=1, **kw)


def test_groups_hold_every_beam_and_random_pool_sequences(tmp_path):
    t = _groups(tmp_path)
    assert list(t.columns) == REWARD_COLUMNS and len(t) == 2 * (3 + 4)
    for a, g in t.groupby("anchor"):
        assert list(g["beam_rank"]) == list(range(7)) and list(g["kind"]) == ["beam"] * 3 + ["random"] * 4
        _, _, pools, _ = _task()
        for r in g[g["kind"] == "random"].itertuples():
            assert len(set(r.picked)) == 2 and set(r.picked) <= set(pools[a])
            assert list(r.icd_ids) == list(r.picked)  # construct_order right: prompt order = pick order
            same = sum(int(p[1:]) % 2 == int(a[1:]) % 2 for p in r.picked)
            assert r.infoscore_reward == pytest.approx(0.4 * same / 2)  # P̄ − the anchor's zero-shot P̄ (0.1)
    assert (t[t["kind"] == "beam"]["infoscore_reward"] - 0.4).abs().max() < 1e-6
    # the random rows differ from the beams: rewards spread within the groups (the top beams alone tie)
    spread = group_spread(t)
    assert spread["infoscore_spread_share"] == 1.0 and spread["group_size_mean"] == 7
    assert group_spread(t[t["kind"] == "beam"])["infoscore_spread_share"] == 0.0
    # seeded per anchor: the same draws again, other draws with another seed
    again = _groups(tmp_path, "again.parquet")
    assert again.equals(t)
    other = _groups(tmp_path, "other.parquet", seed=5)
    assert list(other["picked"].map(tuple)) != list(t["picked"].map(tuple))


def test_trl_conventions_unbiased_std_epsilon_in_reward_units_binding_clips():
    adv = rl.group_advantages(["a", "a", "a"], [0.0, 1.0, 2.0], eps=0.0).double()
    assert adv.tolist() == pytest.approx([-1.0, 0.0, 1.0])  # unbiased std of (0, 1, 2) is 1 (population: 0.816)
    assert rl.reward_scale([0.0, 1.0, 2.0]) == pytest.approx(1.0)
    # the same group in other units gets the same advantages when eps scales with the reward
    small = rl.group_advantages(["a"] * 3, [0.0, 0.01, 0.02], eps=0.01 * rl.reward_scale([0.0, 0.01, 0.02]))
    big = rl.group_advantages(["a"] * 3, [0.0, 1.0, 2.0], eps=0.01 * rl.reward_scale([0.0, 1.0, 2.0]))
    assert torch.allclose(small, big)
    ratio_logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1]))
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0])
    _, ratio, binds = rl.ppo_clip(ratio_logp, torch.zeros(5), adv, 0.2)
    # ρ=1.5 binds only with A>0, ρ=0.5 only with A<0; ρ=1.1 is inside the range
    assert binds.tolist() == [True, False, True, False, False]


def test_v3_and_v4_train_grpo_on_the_groups_and_report_their_spread(tmp_path):
    d = feature_task(n_clusters=10, members=4, n_val=10, beams=3)
    beam = d["beam"].assign(score=0.6 - 1e-7 * d["beam"]["beam_rank"], zero_shot_score=0.05)
    pools = {str(a): [str(c) for c in cs] for a, cs in zip(d["pools"]["anchor"], d["pools"]["candidates"])}
    rows = []
    rng = np.random.default_rng(0)
    for a, g in beam.groupby("anchor", sort=True):
        for r in g.sort_values("beam_rank").itertuples():
            rows.append({"anchor": a, "beam_rank": r.beam_rank, "kind": "beam", "picked": list(r.picked),
                         "icd_ids": list(r.icd_ids), "prediction": "x", "vqa_accuracy": 1.0,
                         "infoscore_reward": 0.55 - 1e-7 * r.beam_rank})
        for j in range(3):
            picked = [str(x) for x in rng.choice(pools[str(a)], size=2, replace=False)]
            rows.append({"anchor": a, "beam_rank": 3 + j, "kind": "random", "picked": picked, "icd_ids": picked,
                         "prediction": "y", "vqa_accuracy": 0.0, "infoscore_reward": 0.1 * j})
    rewards = pd.DataFrame(rows)
    cfg = {"epochs": 2, "d_model": 16, "batch_size": 16, "lr": 3e-3, "beam_ranks": 3, "dropout": 0.1,
           "rl": {"grpo_epochs": 2, "lr": 1e-3, "kl_beta": 0.05}}
    for version in ("v3", "v4"):
        stats = train_selector(version, beam=beam, pools=d["pools"], train_features=d["train"], cfg=cfg,
                               out_dir=tmp_path / version, seed=0, rewards=rewards)
        g = stats["grpo"]
        assert g["groups"]["origin"] == "group table" and g["n_sequences"] == len(rewards)
        assert g["groups"]["group_size_mean"] == 6 and g["groups"]["spread_share"] == 1.0
        assert g["adv_eps_reward_units"] > 0
        assert g["mean_reward"][-1] > g["mean_reward_before"]  # the policy moves towards the better sequences
        assert stats["n_sequences"] == 3 * beam["anchor"].nunique()  # RCE still imitates the top beam_ranks beams
