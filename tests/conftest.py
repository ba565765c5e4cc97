"""Shared fixtures: a tiny Qwen2.5-VL checkpoint (built once per session, in a temp dir) and a handful of tiny
generated images with `VQAExample`s over them.

The model is the real `Qwen2_5_VLForConditionalGeneration` architecture, built by
`leverplus.models.tiny.build_tiny_qwen2_5_vl`. A random init predicts an almost uniform distribution (P̄ ≈ 1/vocab
≈ 2e-3 for every answer, varying by ~1e-5 with the demonstrations), which would make "equal to ≤ 1e-5" comparisons
and beam rankings vacuous. The fixture therefore trains it for `TRAIN_STEPS` language-modelling steps on random
conversations over the fixture examples (a few seconds): P̄ then lies around 1e-3…1e-1 and moves by ~1e-2 with
the demonstrations, so the tolerances in the tests are meaningful.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# ---- offline, proven: before anything imports huggingface_hub / transformers ---------------------------------------
# The hub libraries read these once, at import. Subprocesses (Snakemake, its jobs) inherit them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Non-loopback sockets are refused here and, via tests/netguard/sitecustomize.py on PYTHONPATH, in every Python
# subprocess; refused attempts are logged to one file per session, checked in pytest_sessionfinish.
NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
sys.path.insert(0, str(NETGUARD_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(NETGUARD_DIR), os.environ.get("PYTHONPATH")) if p)
if "LEVERPLUS_NETGUARD_LOG" not in os.environ:  # xdist workers inherit the controller's file
    _fd, _log = tempfile.mkstemp(prefix="leverplus-netguard-", suffix=".log")
    os.close(_fd)
    os.environ["LEVERPLUS_NETGUARD_LOG"] = _log
import lp_netguard  # noqa: E402

lp_netguard.install()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TRAIN_STEPS = 40
TRAIN_LR = 1e-2
N_EXAMPLES = 16
IMAGE_SIZE = 56

# Answers of varied shape: one BPE piece, several words, punctuation, digits, apostrophes, non-ASCII.
ANSWERS = [
    "bazo",
    "kime tolu",
    "red, green & blue!",
    "it's 3.5 m",
    "yes",
    "no",
    "42",
    "a b-c",
    "Upper lower",
    "café au lait",
    "two dogs",
    "bazo",  # same answer as example 0: an ICD may carry the query's own answer
    "(maybe)",
    "snow",
    "kime",
    "x/y: z?",
]
ADJECTIVES = ["red", "green", "blue", "round", "square", "pointy", "crossed", "big"]
TEMPLATES = ["What is the word for this {} thing?", "What do you call this {} object?", "Which name does this {} item have?"]


def _questions() -> list[str]:
    return [TEMPLATES[i % len(TEMPLATES)].format(ADJECTIVES[i % len(ADJECTIVES)]) for i in range(N_EXAMPLES)]


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything -- here or in a subprocess -- tried to leave the machine, even if the library that
    tried caught the refusal. Checked once, in the controlling process (xdist workers share its log file)."""
    if hasattr(session.config, "workerinput"):
        return
    log = Path(os.environ["LEVERPLUS_NETGUARD_LOG"])
    attempts = log.read_text() if log.exists() else ""
    if attempts.strip():
        sys.stderr.write(f"\nnon-loopback network access attempted during the tests ({log}):\n{attempts}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        log.unlink(missing_ok=True)


@pytest.fixture
def hub_online(monkeypatch):
    """For tests that talk to the local fake hub (tests/httpserver.py): lift huggingface_hub's offline switch for
    this test only. The network guard still refuses anything but loopback."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # online, huggingface_hub builds its user agent from an "agent harness" registry it fetches from huggingface.co
    # itself (not from HF_ENDPOINT); give it the empty registry it falls back to when the Hub is unreachable
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """N_EXAMPLES distinct IMAGE_SIZE² PNGs: a random colour field plus a random bright rectangle."""
    from PIL import Image

    out = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1234)
    for i in range(N_EXAMPLES):
        arr = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        x0, y0 = rng.integers(0, IMAGE_SIZE // 2, size=2)
        arr[y0 : y0 + 20, x0 : x0 + 20] = rng.integers(128, 256, size=3, dtype=np.uint8)
        Image.fromarray(arr, "RGB").save(out / f"img_{i:02d}.png")
    return out


@pytest.fixture(scope="session")
def vqa_examples(image_dir) -> list:
    from leverplus.tracks.vqa.data.records import VQAExample

    return [
        VQAExample(f"ex{i:02d}", str(image_dir / f"img_{i:02d}.png"), q, ANSWERS[i])
        for i, q in enumerate(_questions())
    ]


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, vqa_examples) -> Path:
    """A saved tiny Qwen2.5-VL (+ processor) whose tokenizer and weights saw the fixture texts."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from leverplus.tracks.vqa.data.images import load_image
    from leverplus.tracks.vqa.models import prompting
    from leverplus.tracks.vqa.models.qwen_processor import load_processor
    from leverplus.models.tiny import build_tiny_qwen2_5_vl

    base = tmp_path_factory.mktemp("tiny_qwen_init")
    build_tiny_qwen2_5_vl(base, [*_questions(), *ANSWERS] * 4, seed=0)
    processor = load_processor(str(base))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(base))
    images = {e.image: load_image(e.image) for e in vqa_examples}
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR)
    model.train()
    for step in range(TRAIN_STEPS):
        texts, imgs = [], []
        for _ in range(4):
            pick = rng.permutation(len(vqa_examples))[: 1 + step % 3]
            icds, query = [vqa_examples[i] for i in pick[1:]], vqa_examples[pick[0]]
            msgs = prompting.conversation(icds, query, with_answer=True)
            texts.append(processor.apply_chat_template(msgs, tokenize=False))
            imgs += [images[p] for p in prompting.images_in_order(icds, query)]
        enc = processor(text=texts, images=imgs, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = tmp_path_factory.mktemp("tiny_qwen")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def qwen(tiny_qwen_dir):
    """One adapter instance for tests that only read from it (its feature caches are shared, by design)."""
    from leverplus.tracks.vqa.models.base import load_icl_model

    return load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=16)
