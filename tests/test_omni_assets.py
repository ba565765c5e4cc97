"""The shipped audio demo models: files match BUILD.json, they load as the real class, and captions are meaningful."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leverplus.models.audio_assets import ASSETS, SHIPPED, shipped_digest, shipped_model_dir

torch.set_num_threads(1)


def test_shipped_sha256_match_build_json():
    from leverplus.data.download import file_digest

    build = json.loads((ASSETS / "BUILD.json").read_text())
    assert sorted(build["models"]) == sorted(SHIPPED)
    for name in SHIPPED:
        d = shipped_model_dir(name)
        recorded = build["models"][name]["sha256"]
        on_disk = {p.name: file_digest(p) for p in sorted(d.iterdir()) if p.is_file()}
        assert on_disk == recorded, name
    assert len(shipped_digest()) == 16
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total <= 3.2e6
    ev = build["evaluation_val"]
    assert ev["omni_cloud"]["emotion_accuracy"] > ev["omni_edge"]["emotion_accuracy"] > 20.0
    assert ev["omni_cloud"]["chrf"] > ev["omni_edge"]["chrf"]


def test_shipped_cloud_captions_name_the_emotion():
    from leverplus.data.audio_demo import EMOTIONS, caption_emotion, synthesize
    from leverplus.models.audio_generation import AudioGenerationSettings
    from leverplus.models.omni import OmniCaptioner

    cap = OmniCaptioner.load(shipped_model_dir("omni_cloud"), device="cpu")
    settings = AudioGenerationSettings()
    named = 0
    for i, emotion in enumerate(EMOTIONS):
        wav = synthesize(emotion, "男生", np.random.default_rng([99, i]))
        res = cap.caption(wav, system_prompt=None, prompt="请用8–16个字的中文短句描述此段音频中说话人的情绪",
                          settings=settings)
        assert 8 <= len(res.text) <= 16, res.text
        named += caption_emotion(res.text) is not None
    assert named == len(EMOTIONS)


def test_unknown_shipped_name():
    with pytest.raises(KeyError, match="omni_edge"):
        shipped_model_dir("omni_huge")
