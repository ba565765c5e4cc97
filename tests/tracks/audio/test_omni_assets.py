"""The shipped audio demo models: files match BUILD.json, they load as the real class, and captions are meaningful."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leverplus.tracks.audio.assets import ASSETS, SHIPPED, shipped_digest, shipped_model_dir

torch.set_num_threads(1)


def test_shipped_sha256_match_build_json():
    from leverplus.core.download import file_digest

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
    from leverplus.tracks.audio.demo import EMOTIONS, caption_emotion, synthesize
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.omni import OmniCaptioner

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


def test_shipped_cloud_answers_the_unanchored_prompt_with_a_bare_emotion_word():
    """The document's 7B habit, built into the demo (issue 24 item 7): to the unaligned arm's prompt (no length
    anchor, no minimum length) the cloud answers with the bare emotion word; the edge still answers with a
    sentence, and to the anchored prompt both do. BUILD.json records the training choice and its val figures."""
    from leverplus.tracks.audio.demo import EMOTIONS, synthesize
    from leverplus.tracks.audio.assets import ALIGNED_PROMPT, UNALIGNED_PROMPT
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.omni import OmniCaptioner

    build = json.loads((ASSETS / "BUILD.json").read_text())
    assert build["models"]["omni_cloud"]["unanchored_answer"] == "emotion_word"
    assert build["models"]["omni_edge"]["unanchored_answer"] == "caption"
    un = build["evaluation_val_unanchored"]
    assert un["omni_cloud"]["prompt"] == UNALIGNED_PROMPT and un["omni_cloud"]["share_le_6_chars"] >= 90.0
    assert un["omni_edge"]["share_le_6_chars"] <= 10.0
    free = AudioGenerationSettings(min_new_tokens=0)
    cloud = OmniCaptioner.load(shipped_model_dir("omni_cloud"), device="cpu")
    edge = OmniCaptioner.load(shipped_model_dir("omni_edge"), device="cpu")
    for i, emotion in enumerate(EMOTIONS):
        wav = synthesize(emotion, "女生", np.random.default_rng([98, i]))
        bare = cloud.caption(wav, system_prompt=None, prompt=UNALIGNED_PROMPT, settings=free).text
        assert bare in EMOTIONS, bare
        assert len(edge.caption(wav, system_prompt=None, prompt=UNALIGNED_PROMPT, settings=free).text) > 6
        assert len(cloud.caption(wav, system_prompt=None, prompt=ALIGNED_PROMPT,
                                 settings=AudioGenerationSettings()).text) > 6


@pytest.mark.slow
def test_build_script_rebuilds_the_shipped_files_bit_for_bit(tmp_path):
    """The contract of a shipped model: its build script with the recorded seeds rebuilds every shipped file with
    the sha256 in BUILD.json (same torch build and CPU architecture; one thread, deterministic algorithms). Minutes:
    1200 clips' features and 450 training steps."""
    from leverplus.core import shipped_assets
    from leverplus.tracks.audio.assets import build_assets

    build_assets(tmp_path, evaluate=False, log=lambda *a: None)
    assert shipped_assets.verify(tmp_path, ASSETS) == []
    assert shipped_assets.shipped_digest(tmp_path) == shipped_digest()
