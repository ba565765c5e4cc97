"""Decoding is explicit (config `infer.generation`) and never inherits a checkpoint's generation_config.

The tiny Qwen2.5-VL of the fixtures is saved again with a generation_config like the real Qwen2.5-VL-3B-Instruct's,
only stronger (`do_sample: true`, `repetition_penalty: 1.5`, sampling parameters); the adapter must still return
exactly the argmax continuation, computed here by hand with full forward passes.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import load_icl_model
from leverplus.models.generation import GenerationSettings, hf_generation_config

QWEN_LIKE = {  # Qwen2.5-VL-3B-Instruct's generation_config.json, with a stronger penalty and hotter sampling
    "do_sample": True,
    "repetition_penalty": 1.5,
    "temperature": 3.0,
    "top_k": 5,
    "top_p": 0.9,
}
# (demonstrations, query) rows with a non-empty greedy answer made of prompt tokens ("assistant", "What you", ...),
# which is where a repetition penalty over the prompt bites; with penalty 1.5 every one of them changes.
CASES = [([1], 0), ([11, 5], 0), ([0], 1), ([6, 8], 3), ([0, 4], 4), ([8, 10], 5), ([0, 10], 10), ([15, 1], 12)]


@pytest.fixture(scope="module")
def penalised_dir(tiny_qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_qwen_sampling_config") / "model"
    shutil.copytree(tiny_qwen_dir, out)
    cfg_path = out / "generation_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(QWEN_LIKE)
    cfg_path.write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def penalised(penalised_dir):
    return load_icl_model("qwen2_5_vl", str(penalised_dir), batch_size=8)


def manual_greedy(model, icds, query, max_new_tokens: int) -> str:
    """Argmax continuation by hand: one full uncached forward of prompt + answer so far per step."""
    enc = model.generation_inputs([icds], [query])
    ids = enc["input_ids"]
    kw = {k: v for k, v in enc.items() if k in ("pixel_values", "image_grid_thw")}
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            mm = (ids == model.image_token_id).int()
            logits = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm, **kw).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == model.end_id:
                break
            assert nxt != model.image_token_id, "pick rows whose greedy answer has no image pad"
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return model.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_checkpoint_generation_config_really_asks_for_sampling_and_a_penalty(penalised_dir):
    from transformers import GenerationConfig

    saved = GenerationConfig.from_pretrained(penalised_dir)
    assert saved.do_sample is True and saved.repetition_penalty == 1.5 and saved.top_k == 5


def test_generate_is_the_argmax_continuation_despite_the_checkpoint_config(penalised, vqa_examples):
    ex = vqa_examples
    seqs, queries = [[ex[i] for i in icds] for icds, _ in CASES], [ex[q] for _, q in CASES]
    settings = GenerationSettings(max_new_tokens=6)
    expected = [manual_greedy(penalised, s, q, 6) for s, q in zip(seqs, queries)]
    for _ in range(2):  # sampling would also make two runs differ
        assert penalised.generate(seqs, queries, settings) == expected
    # The rows are sensitive to a repetition penalty (so the check above can fail): with the checkpoint's own
    # penalty applied explicitly, at least one answer changes.
    penalty = penalised.generate(seqs, queries, GenerationSettings(max_new_tokens=6, repetition_penalty=1.5))
    assert all(p != e for p, e in zip(penalty, expected))
    assert all(expected)


def test_generation_settings_are_what_generate_runs_with(penalised):
    cfg = hf_generation_config(GenerationSettings(max_new_tokens=3), eos_token_id=1, pad_token_id=0)
    assert (cfg.do_sample, cfg.num_beams, cfg.repetition_penalty, cfg.max_new_tokens) == (False, 1, 1.0, 3)
    assert cfg.no_repeat_ngram_size == 0 and cfg.suppress_tokens is None
    # The model's own generation_config, which transformers merges into every unset field, is neutral.
    own = penalised.model.generation_config
    assert own.do_sample is None and own.repetition_penalty is None and own.top_k is None
    assert own.eos_token_id == penalised.end_id


@pytest.mark.parametrize(
    "block, error",
    [
        ({"do_sample": True}, "deterministic"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"temperature": 0.1}, "unknown key"),
    ],
)
def test_generation_settings_reject_what_they_cannot_honour(block, error):
    with pytest.raises(ValueError, match=error):
        GenerationSettings.from_config(block)


def test_generation_settings_from_config_defaults_are_greedy():
    s = GenerationSettings.from_config({"max_new_tokens": 10})
    assert s.as_dict() == {
        "max_new_tokens": 10, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "length_penalty": 1.0,
        "min_new_tokens": 0, "preset": None,
    }
    assert s.is_greedy


def test_generation_record_names_prompt_and_every_decoding_setting(qwen):
    from leverplus.metrics.signature import parse_signature
    from leverplus.tracks.vqa.stages.infer import generation_record

    rec = generation_record("qwen2_5_vl", qwen, GenerationSettings(max_new_tokens=8))
    name, sig = parse_signature(rec["generation_signature"])
    assert name == "generation"
    assert sig["instruction"] == prompting.DEFAULT_INSTRUCTION
    for key, value in {"do_sample": "no", "num_beams": "1", "repetition_penalty": "1.0", "max_new_tokens": "8"}.items():
        assert sig[key] == value
    assert rec["generation"]["instruction"] == prompting.DEFAULT_INSTRUCTION
    assert rec["generation"]["adapter"] == "qwen2_5_vl"
    assert "transformers" in rec["generation"]


def test_config_schema_holds_generation_and_prompt_defaults():
    from pathlib import Path

    from leverplus.core.config import ConfigError, validate_config

    schema = Path(__file__).resolve().parents[3] / "config" / "config.schema.yaml"

    def minimal(**extra):
        return {
            "dataset": "d",
            "datasets": {"d": {"source": "demo"}},
            "models": {"m": {"adapter": "qwen2_5_vl", "source": "demo"}},
            "encoders": {"e": {"source": "demo"}},
            "experiment": {"models": ["m"], "encoder": "e", "samplers": ["rand"], "sample_num": [4], "cand_num": 4},
            **extra,
        }

    config = validate_config(minimal(), schema)
    assert GenerationSettings.from_config(config["infer"]["generation"]) == GenerationSettings()
    assert config["prompt"] == {
        "instruction": prompting.DEFAULT_INSTRUCTION, "flamingo_postprocess": "open_flamingo_vqa",
        "flamingo_stop": "endofchunk_eos", "flamingo_score_eoc": False, "preset": None,
    }
    assert prompting.PromptSettings.from_config(config["prompt"]) == prompting.PromptSettings()
    config = validate_config(minimal(prompt={"instruction": ""}, infer={"generation": {"max_new_tokens": 10}}), schema)
    assert config["prompt"]["instruction"] == "" and config["infer"]["generation"]["repetition_penalty"] == 1.0
    with pytest.raises(ConfigError, match="do_sample"):
        validate_config(minimal(infer={"generation": {"do_sample": True}}), schema)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        validate_config(minimal(infer={"max_new_tokens": 8}), schema)  # moved into infer.generation
