"""Demo models: the tiny CLIP and the meta-trained tiny Qwen2.5-VL build, load through the standard classes, are
deterministic, and train on exactly the evaluation prompt layout."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leverplus.tracks.vqa.data import demo
from leverplus.tracks.vqa.models import demo_training as dt
from leverplus.tracks.vqa.models.tiny_clip import TinyCLIPSize, build_and_train_tiny_clip, encode_split

ASSETS = Path(dt.__file__).resolve().parents[3] / "assets" / "demo_models"


def _weights_digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_data")
    demo.generate_demo(out, seed=0, n_train=96, n_val=24)
    return out


# ------------------------------------------------------------------------------------------------ tiny CLIP
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("clip") / "m"
    build_and_train_tiny_clip(out, data_dir, seed=0, steps=3, batch_size=16, log=None)
    return out


def test_clip_loads_with_standard_classes_and_encodes(clip_dir, data_dir):
    from transformers import AutoProcessor, CLIPModel, CLIPProcessor

    from leverplus.tracks.vqa.data.records import load_split

    model = CLIPModel.from_pretrained(clip_dir)
    assert isinstance(AutoProcessor.from_pretrained(clip_dir), CLIPProcessor)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "out_proj"} <= names
    feats = encode_split(clip_dir, load_split(data_dir, "val"))
    for k in ("image", "text"):
        assert feats[k].shape == (24, TinyCLIPSize().projection_dim) and feats[k].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(feats[k], axis=1), 1.0, rtol=1e-5)
    # questions differ only in the adjective → their embeddings must not all be identical
    assert np.ptp(feats["text"] @ feats["text"].T) > 1e-3


def test_clip_accepts_lora(clip_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    model = get_peft_model(
        CLIPModel.from_pretrained(clip_dir), LoraConfig(r=2, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    out = model.base_model.model.get_image_features(pixel_values=torch.zeros(1, 3, 56, 56))
    assert (out if isinstance(out, torch.Tensor) else out.pooler_output).shape[-1] == TinyCLIPSize().projection_dim


def test_clip_build_is_bit_identical(clip_dir, data_dir, tmp_path):
    build_and_train_tiny_clip(tmp_path / "again", data_dir, seed=0, steps=3, batch_size=16, log=None)
    assert _weights_digest(tmp_path / "again") == _weights_digest(clip_dir)


# ------------------------------------------------------------------------------------------------ demo VL
@pytest.fixture(scope="module")
def vl_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vl") / "m"
    dt.build_demo_vl(out, seed=1, steps=2, batch_size=2, log=None)
    return out


def test_vl_build_is_bit_identical_and_loads(vl_dir, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from leverplus.tracks.vqa.models.qwen_processor import load_processor

    dt.build_demo_vl(tmp_path / "again", seed=1, steps=2, batch_size=2, log=None)
    assert _weights_digest(tmp_path / "again") == _weights_digest(vl_dir)
    dt.build_demo_vl(tmp_path / "seed2", seed=2, steps=2, batch_size=2, log=None)
    assert _weights_digest(tmp_path / "seed2") != _weights_digest(vl_dir)
    Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir)
    load_processor(str(vl_dir))
    info = json.loads((vl_dir / "leverplus_tiny.json").read_text())
    assert info["seed"] == 1 and info["meta_training"]["steps"] == 2


def test_nonce_words_are_short_copyable_token_sequences(vl_dir):
    from leverplus.tracks.vqa.models.qwen_processor import load_processor

    tok = load_processor(str(vl_dir)).tokenizer
    vocab = demo.nonce_vocabulary()
    per_syllable = [tok.tokenize(w) == [w[:2], w[2:]] for w in vocab]
    assert np.mean(per_syllable) > 0.9  # the rest split at a merge learnt from the question words, e.g. b|is|u
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for word in vocab[::97]:
        alone = tok.encode(word, add_special_tokens=False)
        assert len(alone) <= 3
        in_turn = tok.encode(f"assistant\n{word}<|im_end|>", add_special_tokens=False)
        assert in_turn[-1 - len(alone) : -1] == alone and in_turn[-1] == end  # same pieces inside a turn


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_loss_covers_exactly_the_query_answer_tokens(vl_dir, padding_side):
    from leverplus.tracks.vqa.models.qwen_processor import load_processor

    processor = load_processor(str(vl_dir))
    tok = processor.tokenizer
    ids = dt._special_ids(tok)
    rng = np.random.default_rng(0)
    eps = [dt.sample_episode(rng, demo.nonce_vocabulary(), dt.MetaTrainConfig(), 56) for _ in range(6)]
    enc = dt.encode_batch(processor, eps, with_answer=True, padding_side=padding_side)
    spans = dt.answer_spans(enc["input_ids"], enc["attention_mask"], ids)
    for b, ((s, e), ep) in enumerate(zip(spans, eps)):
        assert enc["input_ids"][b, s:e].tolist() == tok.encode(ep.query.answer, add_special_tokens=False)
        assert int(enc["input_ids"][b, e]) == ids["<|im_end|>"]
        # the answer is the last assistant turn: nothing but the closing "<|im_end|>\n" (and padding) follows
        tail = [t for t, m in zip(enc["input_ids"][b, e:].tolist(), enc["attention_mask"][b, e:].tolist()) if m]
        assert tail == [ids["<|im_end|>"], ids["\n"]]


def test_episodes_mix_matching_and_distracting_demonstrations():
    cfg = dt.MetaTrainConfig()
    rng = np.random.default_rng(0)
    vocab = demo.nonce_vocabulary()
    eps = [dt.sample_episode(rng, vocab, cfg, 56) for _ in range(300)]
    shots = [len(e.icds) for e in eps]
    assert set(shots) == set(range(cfg.max_shots + 1)) and cfg.max_shots >= 2
    answers = [e.query.answer for e in eps]
    assert len(set(answers)) > 200  # fresh naming per episode
    with_demo = [e for e in eps if e.icds]
    match = [any(c == e.classes[-1] for c in e.classes[:-1]) for e in with_demo]
    assert 0.75 < np.mean(match) < 0.95
    for e in with_demo:  # a demonstration's answer is its class's word in the episode's naming
        for icd, c in zip(e.icds, e.classes):
            assert (icd.answer == e.query.answer) == (c == e.classes[-1])
    hard = [
        c for e in with_demo for c in e.classes[:-1]
        if c != e.classes[-1] and set(demo.class_parts(c)) & set(demo.class_parts(e.classes[-1]))
    ]
    assert len(hard) > 60


# ------------------------------------------------------------------------------------------------ shipped
@pytest.mark.skipif(not (ASSETS / "BUILD.json").exists(), reason="no shipped demo models")
def test_shipped_models_match_their_build_record():
    build = json.loads((ASSETS / "BUILD.json").read_text())
    for name, rec in build["models"].items():
        for fname, digest in rec["sha256"].items():
            assert hashlib.sha256((ASSETS / name / fname).read_bytes()).hexdigest() == digest, (name, fname)


def test_curriculum_episodes_are_pure_copying():
    """The first `curriculum` steps train copying only: ≥1 demonstration, every one of the query's class."""
    cfg = dt.MetaTrainConfig()
    assert 0 < cfg.curriculum < cfg.steps
    rng = np.random.default_rng(0)
    vocab = demo.nonce_vocabulary()
    for _ in range(100):
        e = dt.sample_episode(rng, vocab, cfg, 56, copy_only=True)
        assert 1 <= len(e.icds) <= cfg.max_shots
        assert all(c == e.classes[-1] for c in e.classes[:-1])
        assert all(icd.answer == e.query.answer for icd in e.icds)
