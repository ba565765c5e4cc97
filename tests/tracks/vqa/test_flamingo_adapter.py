"""Flamingo adapter on a tiny OpenFlamingo built locally (real open_flamingo classes, no mocks, no hub)."""
from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import flamingo as fl
from leverplus.tracks.vqa.models.base import adapter_names, extend, load_icl_model

# The adapter module imports open_flamingo lazily; these tests need the package installed.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed")

CORPUS = [
    "What color is the cat? black white brown",
    "How many dogs are there? 2 3 two",
    "Is it raining? yes no",
    "What is on the table? a red apple",
    # makes BPE merge ':' with '(' so an answer starting with '(' straddles the prompt boundary
    "Short answer:(a) Short answer:(b) :( :( :(",
] * 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from leverplus.tracks.vqa.models.tiny_flamingo import build_tiny_flamingo

    return build_tiny_flamingo(tmp_path_factory.mktemp("tiny_flamingo"), CORPUS, seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i, (h, w) in enumerate([(40, 50), (33, 61), (28, 28), (64, 45), (51, 52)]):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_icl_model("flamingo", str(model_dir))


@pytest.fixture(scope="module")
def examples(images):
    qa = [
        ("What color is the cat?", "black"),
        ("How many dogs are there?", "2"),
        ("Is it raining?", "yes"),
        ("What is on the table?", "a red apple"),
        ("Which option?", "(a)"),
    ]
    return [VQAExample(str(i), images[i], q, a) for i, (q, a) in enumerate(qa)]


def test_registry_returns_flamingo_adapter(adapter):
    assert "flamingo" in adapter_names()
    assert isinstance(adapter, fl.FlamingoICL)
    with pytest.raises(ValueError, match="unknown model adapter"):
        load_icl_model("flamingo_typo", "x")


def test_model_is_open_flamingo_code(adapter):
    of = fl._open_flamingo()
    pkg = Path(importlib.util.find_spec("open_flamingo").submodule_search_locations[0])
    assert isinstance(adapter.model, of.Flamingo)
    assert isinstance(adapter.lm, of.FlamingoLMMixin)
    assert Path(inspect.getfile(type(adapter.model))).resolve().is_relative_to(pkg.resolve())
    # the import shim leaves no half-initialised package behind
    stub = sys.modules.get("open_flamingo")
    assert stub is None or hasattr(stub, "create_model_and_transforms")


def test_module_imports_without_open_flamingo():
    code = (
        "import sys; sys.modules['open_flamingo'] = None\n"
        "import leverplus.tracks.vqa.models.flamingo as fl\n"
        "try:\n    fl._open_flamingo()\nexcept ImportError:\n    print('lazy-ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "lazy-ok" in out.stdout


def test_round_trip_loads_the_directory_weights(model_dir, adapter):
    from safetensors.torch import load_file
    from transformers import CLIPVisionModel, MptForCausalLM

    state = adapter.model.state_dict()
    ckpt = load_file(str(model_dir / "checkpoint.safetensors"))
    assert any(k.startswith("perceiver.") for k in ckpt)
    assert any("gated_cross_attn" in k for k in ckpt)
    for k, v in ckpt.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    gates = [layer.attn_gate for layer in adapter.lm.gated_cross_attn_layers if layer is not None]
    assert gates and all(float(g) != 0.0 for g in gates)  # images are visible to the LM

    lang = MptForCausalLM.from_pretrained(model_dir / "lang")
    for old, new in zip(lang.transformer.blocks, adapter.lm.old_decoder_blocks):
        for (n1, p1), (n2, p2) in zip(old.state_dict().items(), new.state_dict().items()):
            assert n1 == n2
            torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    vision = CLIPVisionModel.from_pretrained(model_dir / "vision")
    for (n1, p1), (n2, p2) in zip(vision.state_dict().items(), adapter.model.vision_encoder.model.state_dict().items()):
        assert n1 == n2
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    # the embedding matrix grew by exactly the tokens open_flamingo's factory adds
    assert adapter.lm.get_input_embeddings().weight.shape[0] == len(adapter.tokenizer)
    assert adapter.tokenizer.pad_token == fl.PAD_TOKEN


def test_checkpoint_without_flamingo_weights_is_rejected(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = load_file(str(model_dir / "checkpoint.safetensors"))
    save_file({k: v for k, v in ckpt.items() if not k.startswith("perceiver.")}, str(tmp_path / "c.safetensors"))
    model, _, _ = fl.load_flamingo(model_dir)
    with pytest.raises(ValueError, match="lacks Flamingo weights"):
        fl.load_checkpoint(model, tmp_path / "c.safetensors")


@pytest.mark.parametrize("answer", ["black", "2", "a red apple", " leading space", "  two spaces", ",comma", "yes."])
@pytest.mark.parametrize("n_icds", [0, 2])
def test_answer_mask_covers_exactly_the_answer(adapter, examples, answer, n_icds):
    tok = adapter.tokenizer
    query = VQAExample("q", examples[3].image, "What is on the table?", answer)
    ids, mask = adapter.answer_mask(examples[:n_icds], query)
    ids, mask = np.asarray(ids), np.asarray(mask)
    pos = np.flatnonzero(mask)
    assert len(ids) == len(mask) and len(pos) > 0
    assert np.array_equal(pos, np.arange(pos[0], pos[-1] + 1))  # one contiguous span
    prompt = "".join(fl.vqa_prompt(d.question, d.answer) for d in examples[:n_icds]) + fl.vqa_prompt(query.question)
    assert tok.decode(ids[: pos[0]].tolist()) == prompt  # everything before is the prompt, ending in "answer:"
    assert tok.decode(ids[pos].tolist()) == answer
    assert ids[pos[-1] + 1] == adapter.eoc_id and pos[-1] + 2 == len(ids)
    # the sequence is the model tokenizer's own tokenisation of the full string
    assert ids.tolist() == tok(prompt + answer + fl.EOC_TOKEN, add_special_tokens=False)["input_ids"]
    assert (ids == adapter.media_id).sum() == n_icds + 1


def test_answer_mask_straddling_token_is_scored(adapter, examples):
    """'(a)' after 'Short answer:' tokenises with a ':(' token (corpus-trained merge): it is scored so the
    answer's first character is not dropped."""
    tok = adapter.tokenizer
    ids, mask = adapter.answer_mask([], examples[4])
    ids, mask = np.asarray(ids), np.asarray(mask)
    pos = np.flatnonzero(mask)
    first = tok.convert_ids_to_tokens(int(ids[pos[0]]))
    assert first == ":("
    assert tok.decode(ids[pos].tolist()) == ":(a)"
    assert ids[pos[-1] + 1] == adapter.eoc_id


def test_score_equals_reference_in_one_mixed_batch(adapter, examples):
    e = examples
    seqs = [[], [e[0]], [e[0], e[1]], [e[2], e[0], e[1]], [e[1]], [e[4], e[2]]]
    queries = [e[3], e[2], e[3], e[4], e[0], e[1]]
    adapter._latents.clear()
    adapter.batch_size = 16
    fast = adapter.score(seqs, queries)
    ref = np.array([adapter.score_reference(s, q) for s, q in zip(seqs, queries)])
    assert np.all(ref > 0) and np.all(ref < 1)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.log(fast), np.log(ref), rtol=0, atol=1e-5)
    # each distinct image encoded once, cached by path
    assert set(adapter._latents.keys()) == {p for s, q in zip(seqs, queries) for p in [d.image for d in s] + [q.image]}
    # batch composition does not change a row's score
    adapter.batch_size = 2
    np.testing.assert_allclose(adapter.score(seqs, queries), fast, rtol=0, atol=1e-6)
    adapter.batch_size = 8


def test_images_change_the_score(adapter, examples):
    e = examples
    q = e[3]
    other = VQAExample(q.id, e[0].image, q.question, q.answer)
    a, b = adapter.score([[e[1]], [e[1]]], [q, other])
    assert abs(np.log(a) - np.log(b)) > 1e-3


@pytest.mark.parametrize("order", ["left", "right"])
def test_score_candidates_equals_reference(adapter, examples, order):
    e = examples
    beam, cands, q = [e[0], e[4]], [e[1], e[2], e[4]], e[3]
    got = adapter.score_candidates(beam, cands, q, order)
    # `right` keeps the beam as a shared prefix (run once, KV cache reused); `left` puts the candidate first
    assert (adapter.last_shared_prefix > 0) == (order == "right")
    ref = [adapter.score_reference(extend(beam, c, order), q) for c in cands]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.log(got), np.log(ref), rtol=0, atol=1e-5)


def test_shared_prefix_needs_the_same_images(adapter, examples):
    e = examples
    swapped = VQAExample(e[0].id, e[1].image, e[0].question, e[0].answer)  # same text, other image
    seqs, queries = [[e[0], e[2]], [swapped, e[2]], [e[0], e[1]]], [e[3], e[3], e[3]]
    got = adapter.score(seqs, queries)
    assert adapter.last_shared_prefix == 0
    ref = [adapter.score_reference(s, q) for s, q in zip(seqs, queries)]
    np.testing.assert_allclose(np.log(got), np.log(ref), rtol=0, atol=1e-5)
    assert abs(np.log(got[0]) - np.log(got[1])) > 1e-4  # the image of a demonstration matters too
    got2 = adapter.score([seqs[0], seqs[2]], [queries[0], queries[2]])
    assert adapter.last_shared_prefix > 0
    np.testing.assert_allclose(np.log(got2), np.log([ref[0], ref[2]]), rtol=0, atol=1e-5)


def test_generate_batched_equals_single(adapter, examples):
    e = examples
    seqs = [[], [e[0]], [e[0], e[1], e[2]], [e[4]]]
    queries = [e[3], e[2], e[3], e[1]]
    adapter.batch_size = 8
    batched = adapter.generate(seqs, queries, max_new_tokens=6)
    single = [adapter.generate([s], [q], max_new_tokens=6)[0] for s, q in zip(seqs, queries)]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_generate_matches_open_flamingo_generate(adapter, examples):
    """Our cached-latent greedy loop against `Flamingo.generate` (images re-encoded, transformers' generate) on a
    left-padded batch (Flamingo.generate needs a non-trivial attention mask under transformers 5)."""
    from leverplus.tracks.vqa.data.images import load_image
    from leverplus.tracks.vqa.models import prompting

    e = examples
    seqs, queries = [[e[0]], [e[0], e[1]]], [e[2], e[3]]
    ours = adapter.generate(seqs, queries, max_new_tokens=5)
    texts = [adapter._text(s, q, with_answer=False)[0] for s, q in zip(seqs, queries)]
    enc = adapter.tokenizer(
        texts, padding="longest", padding_side="left", add_special_tokens=False, return_tensors="pt"
    )
    assert (enc["attention_mask"] == 0).any()
    pix = [
        torch.stack([adapter.image_transform(load_image(p)) for p in prompting.images_in_order(s, q)])
        for s, q in zip(seqs, queries)
    ]
    vision_x = torch.nn.utils.rnn.pad_sequence(pix, batch_first=True)[:, :, None]
    with torch.no_grad():
        out = adapter.model.generate(
            vision_x,
            enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=5,
            do_sample=False,
            num_beams=1,
            eos_token_id=adapter.stop_ids,
            pad_token_id=adapter.pad_id,
        )
    theirs = [adapter._decode_answer(r) for r in out[:, enc["input_ids"].shape[1] :].tolist()]
    assert ours == theirs


def test_decode_answer_strips_at_end_of_chunk(adapter):
    tok = adapter.tokenizer
    ids = tok(" a red apple", add_special_tokens=False)["input_ids"] + [adapter.eoc_id]
    ids += tok("Question:junk", add_special_tokens=False)["input_ids"]
    assert adapter._decode_answer(ids) == "a red apple"
    eos = tok.eos_token_id
    assert adapter._decode_answer(tok("yes", add_special_tokens=False)["input_ids"] + [eos, 5, 6]) == "yes"


def test_special_tokens_in_text_are_rejected(adapter, examples):
    bad = VQAExample("b", examples[0].image, "what <image> is this?", "x")
    with pytest.raises(ValueError, match="special token"):
        adapter.answer_mask([], bad)


def test_workflow_stages_load_the_adapter_from_a_model_config(model_dir, monkeypatch):
    """Stages build adapters from `models.<name>` (stages.common.load_model), which passes `trust_remote_code`;
    the flag reaches the language model's loaders."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leverplus.tracks.vqa.stages.common import load_model

    assert isinstance(load_model({"adapter": "flamingo", "batch_size": 2}, str(model_dir)), fl.FlamingoICL)
    seen = []
    for cls in (AutoTokenizer, AutoModelForCausalLM):
        original = cls.from_pretrained.__func__

        def spy(klass, *a, _orig=original, **k):
            seen.append(k.get("trust_remote_code"))
            return _orig(klass, *a, **k)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_model({"adapter": "flamingo", "trust_remote_code": True}, str(model_dir))
    assert seen == [True, True]


def _open_clip_dir(model_dir, tmp_path):
    """The tiny model's directory, but asking for OpenFlamingo's own open_clip vision backend (as
    config/okvqa.yaml's OpenFlamingo-3B does, with its checkpoint.pt)."""
    import json
    import shutil

    d = tmp_path / "open_clip_model"
    shutil.copytree(model_dir, d)
    spec = json.loads((d / fl.CONFIG_NAME).read_text())
    spec.update(vision_backend="open_clip", clip_vision_encoder_path="ViT-L-14", clip_vision_encoder_pretrained="openai")
    (d / fl.CONFIG_NAME).write_text(json.dumps(spec))
    return d


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed here")
def test_open_clip_backend_without_open_clip_names_the_package(model_dir, tmp_path):
    d = _open_clip_dir(model_dir, tmp_path)
    with pytest.raises(ImportError, match=r"leverplus_flamingo\.json: vision_backend 'open_clip' needs .*open_clip_torch"):
        fl.load_flamingo(d)


@pytest.mark.slow  # > 30 s on 2 cores: the slow tier (.ci/run)
def test_broken_torchvision_is_named_in_the_open_clip_error(model_dir, tmp_path):
    """PyPI's torchvision beside the CPU torch: its import raises RuntimeError (not ImportError); the open_clip
    path must say what failed instead of passing the bare RuntimeError on. (Such a torchvision also breaks
    transformers' own `CLIPImageProcessorPil` import, so the hf_clip path cannot load beside it either.)"""
    fake = tmp_path / "fake_site"
    (fake / "open_clip").mkdir(parents=True)
    (fake / "open_clip" / "__init__.py").write_text("import torchvision\n")
    (fake / "torchvision").mkdir()
    (fake / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    d = _open_clip_dir(model_dir, tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {str(fake)!r})\n"
        "import leverplus.tracks.vqa.models.flamingo as fl\n"
        "try:\n"
        f"    fl.load_flamingo({str(d)!r})\n"
        "except ImportError as e:\n"
        "    print('MSG', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.split("MSG", 1)[1]
    assert "open_clip_torch" in msg and "torchvision::nms does not exist" in msg
