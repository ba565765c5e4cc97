"""Sentiment arms (leverplus.tracks.sentiment.arms) on tiny real Qwen3 causal LMs, and the shipped tiny LM.

The frozen-parameter tests read the embedding (and untied LM head) bytes straight from the checkpoint's safetensors
file and compare them with the arms' digests after training — independent of the arms' own before/after check."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from leverplus.tracks.sentiment import arms
from leverplus.tracks.sentiment.assets import ASSETS, TINY_LM_DIR, TinyLMSize, build_tiny_causal_lm, shipped_files

SIZE = TinyLMSize(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64)
POS = ["质量不错，很喜欢", "物流很快，好评", "非常满意，推荐", "性价比高，值得买"]
NEG = ["太差了，不推荐", "质量很差，失望", "不好用，退货", "房间很脏，服务差"]
CFG = {"head": {"epochs": 3}, "lora_head": {"epochs": 2, "lr": 0.01}, "lora_label": {"epochs": 2, "lr": 0.01},
       "lora": {"r": 4, "alpha": 8}, "batch_size": 8}


def _df(texts_labels, prefix):
    return pd.DataFrame([(f"{prefix}{i}", t, lab) for i, (t, lab) in enumerate(texts_labels)],
                        columns=["id", "text", "label"])


DATA = _df([(t, "pos") for t in POS] + [(t, "neg") for t in NEG], "x")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def lm_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("tied" if request.param else "untied")
    build_tiny_causal_lm(d, POS + NEG, arch="qwen3", tie_word_embeddings=request.param, size=SIZE, seed=3)
    return d


def _checkpoint_digests(model_dir):
    from safetensors.torch import load_file

    sd = load_file(str(model_dir / "model.safetensors"))
    h = lambda t: hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()  # noqa
    emb = h(sd["model.embed_tokens.weight"])
    head = h(sd["lm_head.weight"]) if "lm_head.weight" in sd else emb  # tied: saved once
    return emb, head


@pytest.mark.parametrize("arm", ["C", "D"])
def test_embedding_and_lm_head_byte_identical_after_training(arm, lm_dir):
    emb, head = _checkpoint_digests(lm_dir)
    tied = json.loads((lm_dir / "config.json").read_text())["tie_word_embeddings"]
    if arm == "C":
        pred, rec = arms.arm_lora_head(lm_dir, DATA, DATA, DATA, config=CFG)
    else:
        pred, rec = arms.arm_lora_label(lm_dir, DATA, DATA, DATA, config=CFG)
    after = rec["frozen_after"]
    assert after["embed_tokens"] == emb
    if arm == "D":  # seq-cls (C) has no LM head
        assert after["lm_head"] == head
        assert after["tied"] is tied  # tied embeddings stay tied (one storage)
    assert not after["requires_grad"]
    assert rec["trainable_parameters"] and all("lora_" in n or "score" in n for n in rec["trainable_parameters"])
    assert not any(f in n for n in rec["trainable_parameters"] for f in arms.FROZEN_MODULE_NAMES)
    assert rec["train_loss"][0] != rec["train_loss"][-1]  # training moved something
    assert set(pred["id"]) == set(DATA["id"]) and np.isfinite(pred["score"]).all()
    # the score is the positive-class margin (log-odds), predicted positive where it is > 0
    assert ((pred["score"] > 0) == (pred["prediction"] == "pos")).all() and (pred["score"] < 0).any()


def test_frozen_modules_refused_in_lora_config():
    for key in ("target_modules", "modules_to_save"):
        with pytest.raises(ValueError, match="frozen"):
            arms.arm_settings({"lora": {key: ["q_proj", "embed_tokens"]}})
        with pytest.raises(ValueError, match="frozen"):
            arms.arm_settings({"lora": {key: ["lm_head"]}})


def test_digest_detects_a_changed_embedding(lm_dir):
    from leverplus.tracks.sentiment.causal_lm import load_causal_lm

    model, _ = load_causal_lm(lm_dir)
    before = arms.frozen_param_digests(model)
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1e-3
    with pytest.raises(arms.FrozenParamsChanged):
        arms.check_frozen(before, arms.frozen_param_digests(model))


def test_arms_a_b_bprime_outputs_and_seeded_determinism(lm_dir):
    pred_a, rec_a = arms.arm_zero_shot(lm_dir, DATA, config=CFG, label_pairs=[["正面", "负面"], ["好", "坏"]])
    assert set(pred_a["variant"]) == set(arms.VARIANTS) and set(pred_a["label_pair"]) == {"正面/负面", "好/坏"}
    assert len(pred_a) == len(DATA) * 2 * len(arms.VARIANTS)
    one = arms.select_variant(pred_a, "contextual", label_pair="好/坏")
    assert list(one.columns) == ["id", "prediction", "score"] and len(one) == len(DATA)
    for p in rec_a["pairs"]:  # calibrations shift the margin by the recorded constant
        sub = pred_a[pred_a["label_pair"] == p["label_pair"]]
        m0 = sub[sub["variant"] == "none"]["score"].to_numpy()  # stored scores are margins (log-odds)
        for v in ("contextual", "pmi_dc"):
            mv = sub[sub["variant"] == v]["score"].to_numpy()
            np.testing.assert_allclose(mv - m0, p["margin_shift"][v], rtol=0, atol=1e-12)
    for pooling in ("last", "mean"):
        p1, r1 = arms.arm_head_only(lm_dir, DATA, DATA, DATA, pooling=pooling, config=CFG)
        p2, _ = arms.arm_head_only(lm_dir, DATA, DATA, DATA, pooling=pooling, config=CFG)
        assert r1["trainable_parameters"] == ["score.weight", "score.bias"]
        assert r1["arm"] == ("B" if pooling == "last" else "B'")
        np.testing.assert_array_equal(p1["score"].to_numpy(), p2["score"].to_numpy())
        assert len(r1["train_loss"]) == r1["epochs_run"] and 1 <= r1["best_epoch"] <= r1["epochs_run"]


def test_shipped_tiny_lm_matches_build_json():
    build = json.loads((ASSETS / "BUILD.json").read_text())
    rec = build["models"]["tiny_qwen_lm"]
    assert shipped_files(TINY_LM_DIR) == rec["sha256"]
    assert rec["pretraining_text"]["overlap_with_val_test_texts"] == 0
    total = sum(p.stat().st_size for p in TINY_LM_DIR.iterdir())
    assert total <= 3.2e6


def test_shipped_build_settings_are_the_builders_defaults():
    """`python -m leverplus.tracks.sentiment.assets --verify` rebuilds from the module's defaults: they must be the
    settings the shipped LM was built with."""
    from dataclasses import asdict

    from leverplus.tracks.sentiment.assets import PretrainSettings

    rec = json.loads((ASSETS / "BUILD.json").read_text())["models"]["tiny_qwen_lm"]
    assert rec["settings"] == asdict(PretrainSettings())
    assert rec["size"] == asdict(TinyLMSize())



def test_device_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert arms.resolve_device("auto") == arms.resolve_device(None) == "cpu"
    assert arms.resolve_device("cpu") == "cpu"
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            arms.resolve_device(spec)
    with pytest.raises(ValueError, match="use auto"):
        arms.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert arms.resolve_device("auto") == "cuda"
    assert arms.resolve_device("cuda:1") == "cuda:1"
    assert arms.resolve_device("cpu") == "cpu"
    assert arms.DEFAULTS["device"] == "auto"


def test_every_arm_places_its_model_on_the_selected_device(monkeypatch, tmp_path):
    """With CUDA reported available, every arm moves its model to "cuda" (here intercepted and kept on the CPU, which
    has no CUDA) and records the device; inputs follow the model's device."""
    d = tmp_path / "lm"
    build_tiny_causal_lm(d, POS + NEG, arch="qwen3", size=SIZE, seed=3)
    placed = []

    def fake_place(model, device):
        placed.append(device)
        return model.to("cpu")

    monkeypatch.setattr(arms, "_place", fake_place)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    runs = {
        "A": lambda: arms.arm_zero_shot(d, DATA, config=CFG),
        "B": lambda: arms.arm_head_only(d, DATA, DATA, DATA, config=CFG),
        "C": lambda: arms.arm_lora_head(d, DATA, DATA, DATA, config=CFG),
        "D": lambda: arms.arm_lora_label(d, DATA, DATA, DATA, config=CFG),
    }
    for name, run in runs.items():
        placed.clear()
        _, rec = run()
        assert placed == ["cuda"] and rec["device"] == "cuda", name
    placed.clear()
    _, rec = arms.arm_head_only(d, DATA, DATA, DATA, config={**CFG, "device": "cpu"})
    assert placed == ["cpu"] and rec["device"] == "cpu"
