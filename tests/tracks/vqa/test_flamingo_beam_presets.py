"""Beam-search decoding and the published VQA protocols (config `preset`), each against the reference code itself.

* Flamingo beam search (our batched KV-cache loop over cached perceiver latents) against open_flamingo's own
  `Flamingo.generate` (images re-encoded, transformers' beam search) on the same left-padded batch: identical
  generated token ids, for each stop-token setting, several beam widths and length penalties.
* `open_flamingo_vqa`: decoding as OpenFlamingo's evaluate_vqa (mlfoundations/open_flamingo@655f693, identical to the
  pinned open-flamingo 2.0.1 package's files): `Flamingo.generate(num_beams=3, length_penalty=0, max_new_tokens=5,
  min_new_tokens=0)` with its default eos `<|endofchunk|>`, decoded without special tokens, then the package's own
  `postprocess_vqa_generation`; evaluation by the package's own `compute_vqa_accuracy`.
* `lever_lm_vqa`: decoding as Lever-LM (ForJadeForest/Lever-LM@11d61e4 open_mmicl/icl_inferencer.py):
  `Flamingo.generate(..., eos_token_id=tokenizer.eos_token_id)` with gen_args (3 beams, length_penalty 0, 5 new
  tokens, min 0), generated part decoded without special tokens, `postprocess_vqa_generation` (Lever-LM's copy is the
  same two regex splits as OpenFlamingo's); its vqa_metrics.py printed the same values as OpenFlamingo's
  (tests/metrics/test_vqa_eval_variants.py), so the same reference evaluation applies.
* `qwen_vl_vqa`: Qwen-VL's evaluate_vqa (QwenLM/Qwen-VL@aa00ed0) calls transformers' `generate(do_sample=False,
  num_beams=1, max_new_tokens=10, min_new_tokens=1, length_penalty=1)` and strips the decoded answer.

The tiny model is untrained, so its stop-token logits are moved next to frequent tokens' (rows of the output
embedding copied with a small scale) to make answers end early in some rows — otherwise the finished-hypothesis
logic would never run.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import load_icl_model
from leverplus.models.generation import GenerationSettings

pytestmark = pytest.mark.skipif(importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed")

CORPUS = [
    "What color is the cat? black white brown",
    "How many dogs are there? 2 3 two",
    "Is it raining? yes no",
    "What is on the table? a red apple",
] * 8


def _of_module(relpath: str):
    """A module file of the installed open_flamingo package, loaded by path (the package __init__ imports
    open_clip, which the CPU environment cannot import; these files do not need it)."""
    root = Path(importlib.util.find_spec("open_flamingo").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(f"_of_{relpath.replace('/', '_')}", root / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from leverplus.tracks.vqa.models.tiny_flamingo import TinyFlamingoSize, build_tiny_flamingo

    out = tmp_path_factory.mktemp("tiny_flamingo_beam") / "m"
    return build_tiny_flamingo(out, CORPUS, seed=0, size=TinyFlamingoSize(lang_init_std=0.3))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images_beam")
    qa = [
        ("What color is the cat?", "black"),
        ("How many dogs are there?", "2"),
        ("Is it raining?", "yes"),
        ("What is on the table?", "a red apple"),
    ]
    out = []
    for i, ((h, w), (q, a)) in enumerate(zip([(40, 50), (33, 61), (28, 28), (64, 45)], qa)):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        out.append(VQAExample(str(i), str(p), q, a))
    return out


def rows(e):
    seqs = [[e[0]], [e[0], e[1]], [], [e[2], e[1], e[0]], [e[3]], [e[1], e[2]]]
    queries = [e[2], e[3], e[1], e[3], e[0], e[0]]
    return seqs, queries


def _adapter(model_dir, prompt: dict, batch_size: int = 8):
    ad = load_icl_model("flamingo", str(model_dir), prompt=prompt, batch_size=batch_size)
    with torch.no_grad():  # stop tokens next to frequent tokens (see the module docstring)
        w = ad.lm.get_output_embeddings().weight
        w[ad.eoc_id] = w[240] * 1.01
        w[ad.tokenizer.eos_token_id] = w[220] * 0.99
    return ad


@pytest.fixture(scope="module")
def adapters(model_dir):
    return {stop: _adapter(model_dir, {"flamingo_stop": stop}) for stop in ("endofchunk", "eos", "endofchunk_eos")}


def reference_generate(ad, seqs, queries, **kwargs) -> list[list[int]]:
    """open_flamingo's `Flamingo.generate` on the left-padded batch; the generated ids of each row."""
    texts = [ad._text(s, q, with_answer=False)[0] for s, q in zip(seqs, queries)]
    enc = ad.tokenizer(texts, padding="longest", padding_side="left", add_special_tokens=False, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # Flamingo.generate needs a non-trivial mask under transformers 5
    pix = [
        torch.stack([ad.image_transform(load_image(p)) for p in prompting.images_in_order(s, q)])
        for s, q in zip(seqs, queries)
    ]
    vision_x = torch.nn.utils.rnn.pad_sequence(pix, batch_first=True)[:, :, None]
    with torch.no_grad():
        out = ad.model.generate(vision_x, enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
    return out[:, enc["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("stop", ["endofchunk", "eos", "endofchunk_eos"])
@pytest.mark.parametrize("num_beams,length_penalty,max_new_tokens", [(3, 0.0, 5), (3, 1.0, 6), (2, -0.5, 4)])
def test_beam_search_equals_flamingo_generate(adapters, examples, stop, num_beams, length_penalty, max_new_tokens):
    ad = adapters[stop]
    seqs, queries = rows(examples)
    settings = GenerationSettings(num_beams=num_beams, length_penalty=length_penalty, max_new_tokens=max_new_tokens)
    ours = ad.generate_tokens(seqs, queries, settings)
    eos = ad.stop_ids if len(ad.stop_ids) > 1 else ad.stop_ids[0]
    theirs = reference_generate(
        ad, seqs, queries, max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
        do_sample=False, eos_token_id=eos, pad_token_id=ad.pad_id,
    )
    for o, t in zip(ours, theirs):
        assert o == t[: len(o)]
        if len(o) < max_new_tokens:  # finished at a stop token; the reference pads the rest
            assert o[-1] in ad.stop_ids
    assert any(len(o) < max_new_tokens for o in ours), "no row finished early: the stop logic is not exercised"
    greedy = ad.generate_tokens(seqs, queries, GenerationSettings(max_new_tokens=max_new_tokens))
    assert any(o != g for o, g in zip(ours, greedy)), "beam search gave the greedy answers on every row"


def test_beam_search_batched_equals_single(adapters, examples):
    ad = adapters["endofchunk"]
    seqs, queries = rows(examples)
    settings = GenerationSettings(num_beams=3, length_penalty=0.0, max_new_tokens=5)
    batched = ad.generate(seqs, queries, settings)
    single = [ad.generate([s], [q], settings)[0] for s, q in zip(seqs, queries)]
    assert batched == single


def test_beam_search_with_a_legacy_cache_lm(tmp_path, examples):
    """MosaicGPT (OpenFlamingo-3B's LM) returns a legacy list-of-tuples cache: beams are reordered in it."""
    from leverplus.tracks.vqa.models.tiny_flamingo import build_tiny_flamingo

    md = build_tiny_flamingo(tmp_path / "mosaic", CORPUS, seed=0, lang="mosaic_gpt")
    ad = load_icl_model("flamingo", str(md), trust_remote_code=True)
    seqs, queries = rows(examples)
    ours = ad.generate_tokens(seqs, queries, GenerationSettings(num_beams=3, length_penalty=0.0, max_new_tokens=4))
    single = [ad.generate_tokens([s], [q], GenerationSettings(num_beams=3, length_penalty=0.0, max_new_tokens=4))[0]
              for s, q in zip(seqs, queries)]
    assert ours == single


def test_min_new_tokens_forbids_stop_tokens(model_dir, examples):
    ad = load_icl_model("flamingo", str(model_dir), prompt={"flamingo_stop": "endofchunk"})
    seqs, queries = [[]], [examples[1]]  # no demonstration: no <|endofchunk|> in the prompt (embeddings are tied)
    first = ad.generate_tokens(seqs, queries, GenerationSettings(max_new_tokens=1))[0][0]
    with torch.no_grad():  # <|endofchunk|> just above the first greedy token
        w = ad.lm.get_output_embeddings().weight
        w[ad.eoc_id] = w[first] * 1.05
    free = ad.generate_tokens(seqs, queries, GenerationSettings(max_new_tokens=3))
    assert free == [[ad.eoc_id]], "the stop token is not the first choice: min_new_tokens is not exercised"
    forced = ad.generate_tokens(seqs, queries, GenerationSettings(max_new_tokens=3, min_new_tokens=1))
    assert forced[0] and forced[0][0] not in ad.stop_ids
    beams = ad.generate_tokens(seqs, queries, GenerationSettings(num_beams=3, max_new_tokens=3, min_new_tokens=2))
    assert all(t not in ad.stop_ids for t in beams[0][:2])


# ---- presets ----------------------------------------------------------------------------------------------------
def _preset_run(name: str, fmt: str = "vqav2") -> dict:
    from leverplus.tracks.vqa.models.presets import apply_preset

    return apply_preset({"preset": name, "infer": {"generation": {}}, "prompt": {"instruction": ""}, "metrics": {}}, fmt)


def _of_evaluate(tmp_path, predictions: list[str], answers: list[list[str]]) -> float:
    """open_flamingo's compute_vqa_accuracy (eval/vqa_metric.py) on these predictions and answers."""
    vm = _of_module("eval/vqa_metric.py")
    meta = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "license": {}}
    qs = {**meta, "questions": [{"question_id": i, "image_id": i, "question": "q?"} for i in range(len(answers))]}
    ann = {**meta, "annotations": [
        {"question_id": i, "image_id": i, "question_type": "what", "answer_type": "other",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(ans)]}
        for i, ans in enumerate(answers)
    ]}
    res = [{"question_id": i, "answer": p} for i, p in enumerate(predictions)]
    for name, obj in (("q.json", qs), ("a.json", ann), ("r.json", res)):
        (tmp_path / name).write_text(json.dumps(obj))
    return vm.compute_vqa_accuracy(str(tmp_path / "r.json"), str(tmp_path / "q.json"), str(tmp_path / "a.json"))


def _answers_for(preds: list[str]) -> list[list[str]]:
    """Ground truths that make the accuracy non-trivial: some rows' answers hold the prediction 1-4 times."""
    out = []
    for i, p in enumerate(preds):
        k = i % 5
        out.append([p.upper() if i % 2 else p] * k + ["zebra"] * (10 - k))
    return out


@pytest.mark.parametrize("preset", ["open_flamingo_vqa", "lever_lm_vqa"])
def test_flamingo_presets_reproduce_the_reference(model_dir, examples, preset, tmp_path):
    from leverplus.metrics.vqa import score_vqa

    run = _preset_run(preset)
    ad = _adapter(model_dir, run["prompt"])
    generation = GenerationSettings.from_config(run["infer"]["generation"])
    seqs, queries = rows(examples)
    ours = ad.generate(seqs, queries, generation)
    # the reference: each protocol's own generate call, decoding and post-processing
    kwargs = dict(max_new_tokens=5, min_new_tokens=0, num_beams=3, length_penalty=0.0, pad_token_id=ad.pad_id)
    if preset == "lever_lm_vqa":
        kwargs["eos_token_id"] = ad.tokenizer.eos_token_id  # Lever-LM's icl_inferencer; else Flamingo's <|endofchunk|>
    gen = reference_generate(ad, seqs, queries, **kwargs)
    post = _of_module("eval/vqa_metric.py").postprocess_vqa_generation
    theirs = [post(ad.tokenizer.decode(g, skip_special_tokens=True)) for g in gen]
    assert ours == [t.strip() for t in theirs]
    assert generation.preset == preset and ad.prompt_settings()["prompt_preset"] == preset
    # evaluation: the reference's accuracy equals ours under the preset's variant (the reference strips too)
    answers = _answers_for(theirs)
    ref = _of_evaluate(tmp_path, theirs, answers)
    ids = [str(i) for i in range(len(theirs))]
    got = score_vqa(pd.DataFrame({"id": ids, "prediction": ours}), pd.DataFrame({"id": ids, "answers": answers}),
                    vqa_eval=run["metrics"]["vqa_eval"], stem=run["metrics"]["vqa_stem"])
    assert got["score"] == ref and 0 < ref < 100


def test_lever_lm_and_open_flamingo_protocols_differ(model_dir, examples):
    """The stop token is part of the protocol: with 3 beams the two give different answers on this batch."""
    seqs, queries = rows(examples)
    out = {}
    for preset in ("open_flamingo_vqa", "lever_lm_vqa"):
        run = _preset_run(preset)
        out[preset] = _adapter(model_dir, run["prompt"]).generate(
            seqs, queries, GenerationSettings.from_config(run["infer"]["generation"])
        )
    assert out["open_flamingo_vqa"] != out["lever_lm_vqa"]


def test_qwen_vl_preset_reproduces_its_generate_call(qwen, vqa_examples):
    run = _preset_run("qwen_vl_vqa")
    generation = GenerationSettings.from_config(run["infer"]["generation"])
    assert (generation.num_beams, generation.max_new_tokens, generation.min_new_tokens) == (1, 10, 1)
    e = vqa_examples
    seqs, queries = [[e[1]], [e[2], e[3]], []], [e[0], e[4], e[5]]
    ours = qwen.generate(seqs, queries, generation)
    enc = qwen.generation_inputs(seqs, queries)
    with torch.no_grad():
        out = qwen.model.generate(
            **enc, do_sample=False, num_beams=1, max_new_tokens=10, min_new_tokens=1, length_penalty=1,
            num_return_sequences=1, pad_token_id=qwen.pad_id, eos_token_id=qwen.end_id,
        )
    theirs = [qwen.tokenizer.decode(r[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for r in out]
    assert ours == theirs
    assert run["metrics"]["vqa_eval"] == "official_2016" and run["metrics"]["vqa_stem"] is False


def test_qwen_beam_search_equals_transformers(qwen, vqa_examples):
    e = vqa_examples
    seqs, queries = [[e[1]], [e[2], e[3]], []], [e[0], e[4], e[5]]
    settings = GenerationSettings(num_beams=3, length_penalty=0.0, max_new_tokens=5)
    ours = qwen.generate(seqs, queries, settings)
    enc = qwen.generation_inputs(seqs, queries)
    with torch.no_grad():
        out = qwen.model.generate(**enc, do_sample=False, num_beams=3, length_penalty=0.0, max_new_tokens=5,
                                  pad_token_id=qwen.pad_id, eos_token_id=qwen.end_id)
    theirs = [qwen.tokenizer.decode(r[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for r in out]
    assert ours == theirs


def test_preset_settings_and_stemming_by_dataset_format():
    from leverplus.tracks.vqa.models.presets import PRESETS

    assert set(PRESETS) == {"open_flamingo_vqa", "lever_lm_vqa", "qwen_vl_vqa"}
    of_ok, of_v2 = _preset_run("open_flamingo_vqa", "okvqa"), _preset_run("open_flamingo_vqa", "vqav2")
    assert of_ok["metrics"] == {"vqa_eval": "lever_lm", "vqa_stem": True}
    assert of_v2["metrics"]["vqa_stem"] is False
    assert of_ok["infer"]["generation"] == {
        "do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 5, "min_new_tokens": 0, "num_beams": 3,
        "length_penalty": 0.0, "preset": "open_flamingo_vqa",
    }
    assert of_ok["prompt"]["flamingo_stop"] == "endofchunk" and of_ok["prompt"]["flamingo_score_eoc"] is False
    lever = _preset_run("lever_lm_vqa", "okvqa")
    assert lever["prompt"]["flamingo_stop"] == "eos" and lever["prompt"]["flamingo_score_eoc"] is True
    assert lever["metrics"] == {"vqa_eval": "lever_lm", "vqa_stem": False}
    assert _preset_run("qwen_vl_vqa")["prompt"]["instruction"] == "Answer the question using a single word or phrase."


def test_real_configs_use_their_presets():
    import yaml

    from leverplus.core.config import deep_merge, run_config, validate_config
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS

    root = Path(__file__).resolve().parents[3]
    for ds in ("okvqa", "vqav2"):
        cfg = {}
        for name in (*WORKFLOW_CONFIGS, f"config/{ds}.yaml"):  # as the Snakefile loads them, then --configfile
            cfg = deep_merge(cfg, yaml.safe_load((root / name).read_text()))
        validate_config(cfg, root / "config/config.schema.yaml")
        run = run_config(cfg, ds)
        assert run["preset"] == "lever_lm_vqa"
        assert run["infer"]["generation"]["num_beams"] == 3 and run["infer"]["generation"]["preset"] == "lever_lm_vqa"
        assert run["metrics"]["vqa_eval"] == "lever_lm"
        assert run_config(cfg, "demo")["preset"] is None  # the demo keeps its own blocks


# ---- InfoScore answer span -----------------------------------------------------------------------------------------
def test_infoscore_span_with_and_without_end_of_chunk(model_dir, examples):
    e = examples
    plain = load_icl_model("flamingo", str(model_dir))
    with_eoc = load_icl_model("flamingo", str(model_dir), prompt={"flamingo_score_eoc": True})
    ids0, m0 = plain.answer_mask([e[0]], e[3])
    ids1, m1 = with_eoc.answer_mask([e[0]], e[3])
    assert ids0 == ids1
    last0 = max(i for i, m in enumerate(m0) if m)
    last1 = max(i for i, m in enumerate(m1) if m)
    assert ids1[last1] == with_eoc.eoc_id and ids0[last0] != plain.eoc_id
    assert sum(m1) == sum(m0) + 1
    assert plain.prompt_settings()["infoscore_span"] == "answer"
    assert with_eoc.prompt_settings()["infoscore_span"] == "answer+endofchunk"
    # the fast path and the reference path agree under both spans
    for ad in (plain, with_eoc):
        fast = ad.score([[e[0]], [e[1], e[2]]], [e[3], e[3]])
        ref = [ad.score_reference([e[0]], e[3]), ad.score_reference([e[1], e[2]], e[3])]
        np.testing.assert_allclose(fast, ref, rtol=1e-5)
    assert not np.isclose(plain.score_reference([e[0]], e[3]), with_eoc.score_reference([e[0]], e[3]))
