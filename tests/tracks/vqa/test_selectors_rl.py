"""Selectors v3/v4 (offline RL over the beams): RCE reduces to v2's loss, GRPO's advantages, the PPO ratio and the KL
at the first step, inference independent of batch size, determinism, v4's reward mixing, and the registry/config.

The synthetic cluster task of tests/tracks/vqa/test_selectors.py (every anchor's beams picked its nearest pool members); the
beams get rewards here: the InfoScore gain falls with beam rank, v4's accuracies are 1 for beam 0 and 0 otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from leverplus.core.config import VERSION_BLOCKS, selector_config, selector_seeds
from leverplus.tracks.vqa.icd import rl
from leverplus.tracks.vqa.icd.selector_training import build_sequences
from leverplus.tracks.vqa.icd.selectors import config_for, load_selector, selector_class, train_selector
from leverplus.tracks.vqa.icd.selectors.common import FeatureSource, make_batch
from test_selectors import feature_task, hit_rate

torch.set_num_threads(1)

CFG = {"epochs": 3, "d_model": 32, "batch_size": 32, "lr": 3e-3, "beam_ranks": 3, "dropout": 0.1,
       "rl": {"grpo_epochs": 2, "lr": 1e-3, "kl_beta": 0.05}}


def with_rewards(beam: pd.DataFrame) -> pd.DataFrame:
    return beam.assign(score=0.6 - 0.1 * beam["beam_rank"], zero_shot_score=0.05)


def rewards_table(beam: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"anchor": beam["anchor"], "beam_rank": beam["beam_rank"], "icd_ids": beam["icd_ids"],
                         "prediction": "x", "vqa_accuracy": (beam["beam_rank"] == 0).astype(float),
                         "infoscore_reward": beam["score"] - beam["zero_shot_score"]})


@pytest.fixture(scope="module")
def data():
    d = feature_task(n_clusters=30, members=4, n_val=60, beams=3)
    d["beam"] = with_rewards(d["beam"])
    d["rewards"] = rewards_table(d["beam"])
    return d


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = {}
    for version in ("v3", "v4"):
        d = tmp_path_factory.mktemp(version)
        stats = train_selector(version, beam=data["beam"], pools=data["pools"], train_features=data["train"],
                               cfg=CFG, out_dir=d, seed=0, rewards=data["rewards"])
        out[version] = (d, stats)
    return out


def _batch(data, beam_ranks: int, model_cls="v3"):
    cfg = config_for(model_cls, {**CFG, "beam_ranks": beam_ranks})
    torch.manual_seed(0)
    model, src = selector_class(model_cls).for_training(cfg, data["train"])
    seqs = build_sequences(data["beam"], data["pools"], src, beam_ranks)
    idx = list(range(min(40, len(seqs))))
    batch = make_batch([seqs.query_rows[i] for i in idx], [seqs.pool_rows[i] for i in idx],
                       [seqs.targets[i] for i in idx])
    return model.eval(), src, seqs, idx, batch


# ---- RCE --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beam_ranks", [1, 3])
def test_rce_with_equal_rewards_is_v2s_loss(data, beam_ranks):
    model, src, seqs, idx, batch = _batch(data, beam_ranks)
    # one beam per anchor (any rewards), or equal rewards within every anchor: every weight is exactly 1
    rewards = [0.3] * len(seqs) if beam_ranks > 1 else list(np.linspace(0, 1, len(seqs)))
    w = rl.rce_weights(seqs.anchors, rewards, temperature=0.1)
    assert torch.equal(w, torch.ones(len(seqs)))
    v2_loss = model.sequence_loss(batch, src, src)
    rce_loss = rl.weighted_sequence_loss(model, batch, src, src, w[idx])
    assert torch.allclose(rce_loss, v2_loss, rtol=1e-6, atol=1e-7), (float(rce_loss), float(v2_loss))


def test_rce_weights_prefer_the_better_beam():
    w = rl.rce_weights(["a", "a", "b"], [0.2, 0.1, 5.0], temperature=0.1)
    assert w[0] > 1 > w[1] and float(w[0] + w[1]) == pytest.approx(2.0) and float(w[2]) == pytest.approx(1.0)


# ---- GRPO -------------------------------------------------------------------------------------------------------
def test_group_advantages_are_zero_mean_per_group():
    rng = np.random.default_rng(0)
    anchors = [f"a{i}" for i in rng.integers(0, 7, size=60)]
    rewards = rng.normal(size=60).tolist()
    adv = rl.group_advantages(anchors, rewards).double()
    for a in set(anchors):
        g = adv[[i for i, x in enumerate(anchors) if x == a]]
        assert abs(float(g.mean())) < 1e-6
        if len(g) > 1:
            assert float(g.std(unbiased=True)) == pytest.approx(1.0, abs=1e-4)  # TRL: unbiased group std
    # a group whose beams tie carries no preference
    assert torch.equal(rl.group_advantages(["x", "x"], [0.5, 0.5]), torch.zeros(2))


def test_ppo_ratio_is_one_and_kl_zero_before_any_update(data, trained):
    model, src, seqs, idx, batch = _batch(data, 3)
    logp = rl.step_log_probs(model, model.encode(batch, src, src), batch)
    seq = rl.sequence_log_prob(logp, batch.targets)
    adv = rl.group_advantages(seqs.anchors, [1.0 * r for r in seqs.beam_ranks])[idx]
    loss, ratio, clipped = rl.ppo_clip(seq, seq.detach(), adv, 0.2)
    assert torch.equal(ratio, torch.ones_like(ratio)) and not clipped.any()
    assert torch.allclose(loss, -adv)
    assert torch.equal(rl.pool_kl(logp, logp.detach(), batch.targets), torch.zeros(len(idx)))
    # and inside the training loop, at the first GRPO step of both versions
    for version in ("v3", "v4"):
        first = trained[version][1]["grpo"]["first_step"]
        assert first == {"ratio_max_abs_dev": 0.0, "clip_fraction": 0.0, "kl": 0.0}, (version, first)


def test_training_curves_and_learning(data, trained):
    for version in ("v3", "v4"):
        out, stats = trained[version]
        g = stats["grpo"]
        assert len(stats["loss_per_epoch"]) == CFG["epochs"]
        for key in ("loss", "mean_reward", "clip_fraction", "kl", "ratio_min", "ratio_max"):
            assert len(g[key]) == CFG["rl"]["grpo_epochs"], key
        assert g["kl"][-1] > 0  # the policy moved away from the RCE reference
        assert g["mean_reward"][-1] >= g["mean_reward_before"] - 1e-9  # and towards its better beams
        picks = load_selector(out).select(data["val"], data["val_pools"], data["train"], shot=2)
        assert hit_rate(picks, data["gold"]) > 0.5, version


# ---- inference, persistence ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v3", "v4"])
def test_inference_independent_of_batch_size(version, data, trained):
    model = load_selector(trained[version][0])
    picks = [model.select(data["val"], data["val_pools"], data["train"], shot=2, batch_size=b) for b in (1, 7, 64)]
    assert picks[0] == picks[1] == picks[2]


def test_same_seed_bit_identical_and_seed_matters(data, trained, tmp_path):
    again = tmp_path / "again"
    train_selector("v3", beam=data["beam"], pools=data["pools"], train_features=data["train"], cfg=CFG,
                   out_dir=again, seed=0)
    first = load_file(str(trained["v3"][0] / "model.safetensors"))
    second = load_file(str(again / "model.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = tmp_path / "other"
    train_selector("v3", beam=data["beam"], pools=data["pools"], train_features=data["train"], cfg=CFG,
                   out_dir=other, seed=1)
    third = load_file(str(other / "model.safetensors"))
    assert not all(torch.equal(first[k], third[k]) for k in first)


# ---- rewards ------------------------------------------------------------------------------------------------------
def test_v3_reward_is_infoscore_gain_and_v4_mixes_accuracy(data):
    beam, rewards = data["beam"], data["rewards"]
    v3 = selector_class("v3").beam_rewards(config_for("v3", CFG), beam, None)
    assert v3[("t0", 1)] == pytest.approx(0.5 - 0.05)
    for weight, expect in ((0.0, 0.6 - 0.05), (1.0, 1.0), (0.5, 0.5 * 0.55 + 0.5)):
        cfg = config_for("v4", {**CFG, "reward": {"accuracy_weight": weight}})
        assert selector_class("v4").beam_rewards(cfg, beam, rewards)[("t0", 0)] == pytest.approx(expect)
    with pytest.raises(ValueError, match="beam_rewards"):
        selector_class("v4").beam_rewards(config_for("v4", CFG), beam, None)


# ---- config --------------------------------------------------------------------------------------------------------
def test_rl_keys_reach_only_the_versions_that_read_them():
    config = {"experiment": {"seed": 4}, "selector": {
        "versions": ["v2", "v3", "v4"], "epochs": 5, "seeds": None, "lora": {"r": 4}, "rl": {"kl_beta": 0.2},
        "reward": {"accuracy_weight": 0.3}, "per_version": {"v3": {"rl": {"clip_eps": 0.1}}}}}
    assert "rl" not in selector_config(config, "v2") and "reward" not in selector_config(config, "v3")
    assert selector_config(config, "v3")["rl"] == {"kl_beta": 0.2, "clip_eps": 0.1}  # per_version merged key-wise
    assert selector_config(config, "v4")["reward"] == {"accuracy_weight": 0.3}
    assert "seeds" not in selector_config(config, "v4") and VERSION_BLOCKS["lora"] == ("v2_lora",)
    assert selector_seeds(config) == [4]
    config["selector"]["seeds"] = [0, 1, 2]
    assert selector_seeds(config) == [0, 1, 2]
    for v in ("v3", "v4"):
        assert set(config_for(v, {})["rl"]) == {"temperature", "grpo_epochs", "lr", "clip_eps", "kl_beta", "adv_eps",
                                               "group"}


def test_schema_defaults_match_the_modules():
    import yaml

    from pathlib import Path

    schema = yaml.safe_load((Path(__file__).resolve().parents[3] / "config/config.schema.yaml").read_text())
    sel = schema["properties"]["selector"]["properties"]
    for block, version in (("rl", "v3"), ("reward", "v4")):
        defaults = {k: v["default"] for k, v in sel[block]["properties"].items()}
        assert defaults == config_for(version, {})[block], block
    assert sel["versions"]["default"] == ["v0", "v1", "v2", "v2_lora", "v3", "v4"]


def test_feature_source_unused_warning_free(data):
    # the v3 module reuses v2's architecture: same parameter names, so v2 tooling reads its weights
    cfg = config_for("v3", CFG)
    v3 = selector_class("v3")(cfg, FeatureSource.from_features(data["train"]).dim)
    v2 = selector_class("v2")(config_for("v2", CFG), FeatureSource.from_features(data["train"]).dim)
    assert set(v3.saved_parameters()) == set(v2.saved_parameters())


def test_grpo_reusing_full_passes_is_bit_identical(data, tmp_path, monkeypatch):
    """Where every batch has the same shape, GRPO reads the old and reference log-probabilities from its full
    passes instead of recomputing them per epoch: the same weights and curves, bit for bit."""
    from leverplus.tracks.vqa.icd.selectors.v3 import GRPOPointerSelector

    beam = data["beam"]
    size = min(len(c) for c in data["pools"]["candidates"])
    picked = {a: set(p) for a, p in zip(beam["anchor"], beam["picked"])}
    picked = {a: set().union(*(set(p) for p in beam.loc[beam["anchor"] == a, "picked"])) for a in picked}
    pools = data["pools"].assign(candidates=[
        [c for c in cs if c in picked[a]] + [c for c in cs if c not in picked[a]][: size - len(picked[a])]
        for a, cs in zip(data["pools"]["anchor"], data["pools"]["candidates"])])
    cfg = {**CFG, "batch_size": 24}  # 120 anchors x 3 beams = 15 full batches, pools of one size
    model, src = selector_class("v3").for_training(config_for("v3", cfg), data["train"])
    assert model._uniform_batches(build_sequences(beam, pools, src, 3))

    def run(name):
        stats = train_selector("v3", beam=beam, pools=pools, train_features=data["train"], cfg=cfg,
                               out_dir=tmp_path / name, seed=0)
        return load_file(str(tmp_path / name / "model.safetensors")), stats["grpo"]

    reused, reused_curves = run("reused")
    monkeypatch.setattr(GRPOPointerSelector, "reuse_full_passes", False)
    recomputed, recomputed_curves = run("recomputed")
    assert all(torch.equal(reused[k], recomputed[k]) for k in reused)
    assert reused_curves == recomputed_curves
