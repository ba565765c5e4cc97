"""Named VQA evaluation protocols: one setting (config `preset`) that fixes decoding, prompt, answer
post-processing, evaluation variant and stemming together, as the code behind a published table does.

Each preset names the reference code it was read from (repository@commit:path). What it sets:

* ``infer.generation`` — every decoding setting (`GenerationSettings`), with ``preset`` recorded in it;
* ``prompt`` — the Flamingo post-processing, stop tokens and InfoScore answer span, and (where the protocol has
  one) the chat models' instruction, with ``preset`` recorded;
* ``metrics.vqa_eval`` and ``metrics.vqa_stem`` — the evaluation variant (`leverplus.metrics.vqa`) and whether
  OK-VQA stemming applies; ``stem_formats``: the dataset formats (config ``datasets.<name>.format``) whose runs stem.

A run with ``preset: null`` (the default) takes these blocks from the config as written. With a preset the preset's
values replace the run's — set ``preset: null`` to configure a block by hand. `apply_preset` does the expansion;
the config loader calls it for every dataset's run, so every rule's params (and the results files and their
signatures) carry the expanded, explicit values and the preset's name.

docs/metrics.md has the table of published tables → preset.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    reference: str  # repository@commit:path(s) the settings were read from
    adapters: tuple[str, ...]  # the adapters the protocol was published for (others: decoding applies as written)
    generation: dict
    prompt: dict
    vqa_eval: str
    stem_formats: tuple[str, ...] = ()
    notes: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="open_flamingo_vqa",
            reference="mlfoundations/open_flamingo@655f693fbfa04cd6e9a987d960654624d48917cf:"
            "open_flamingo/eval/evaluate.py (evaluate_vqa), eval/models/open_flamingo.py, eval/vqa_metric.py, "
            "eval/ok_vqa_utils.py",
            adapters=("flamingo",),
            # evaluate_vqa: max_generation_length 5, num_beams 3, length_penalty 0 (min 0); Flamingo.generate's eos is
            # <|endofchunk|>; answers decoded without special tokens, then postprocess_vqa_generation (OK-VQA:
            # postprocess_ok_vqa_generation = the same cut + OKVQAStemmer)
            generation=dict(max_new_tokens=5, min_new_tokens=0, num_beams=3, length_penalty=0.0),
            prompt=dict(flamingo_postprocess="open_flamingo_vqa", flamingo_stop="endofchunk"),
            vqa_eval="lever_lm",  # open_flamingo/eval/vqa_metric.py normalises both sides always
            stem_formats=("okvqa",),
        ),
        Preset(
            name="lever_lm_vqa",
            reference="ForJadeForest/Lever-LM@11d61e44b3e9c0b0b972b37b2a1b6ec366530d5f:configs/task/vqa.yaml, "
            "open_mmicl/icl_inferencer.py, utils.py (vqa_postprocess, get_info_score), open_mmicl/metrics/vqa_metrics.py",
            adapters=("flamingo",),
            # gen_args: max_new_tokens 5, num_beams 3, length_penalty 0.0, min_new_tokens 0 — for every model;
            # generate(eos_token_id=tokenizer.eos_token_id): <|endoftext|> stops, <|endofchunk|> does not; InfoScore
            # scores answer + <|endofchunk|> (its eos is the pad token, ignored)
            generation=dict(max_new_tokens=5, min_new_tokens=0, num_beams=3, length_penalty=0.0),
            prompt=dict(flamingo_postprocess="open_flamingo_vqa", flamingo_stop="eos", flamingo_score_eoc=True),
            vqa_eval="lever_lm",
            notes="Lever-LM used the same gen_args for every model; the chat models' instruction is the run's own",
        ),
        Preset(
            name="qwen_vl_vqa",
            reference="QwenLM/Qwen-VL@aa00ed04091eea5fcdd32985e7915f1c53e7d599:eval_mm/evaluate_vqa.py, eval_mm/vqa_eval.py",
            adapters=("qwen2_5_vl",),
            # generate(do_sample=False, num_beams=1, max_new_tokens=10, min_new_tokens=1, length_penalty=1); answers
            # decoded without special tokens and stripped; vqa_eval.py = the 2016 official evaluation
            generation=dict(max_new_tokens=10, min_new_tokens=1, num_beams=1, length_penalty=1.0),
            prompt=dict(instruction="Answer the question using a single word or phrase."),
            vqa_eval="official_2016",
            notes="Qwen-VL's base-model prompt is '<img>…</img>{q} Answer:'; the chat adapter uses the short-answer "
            "instruction of Qwen-VL-Chat/LLaVA-1.5 instead",
        ),
    )
}
DECODING_DEFAULTS = dict(do_sample=False, repetition_penalty=1.0)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def apply_preset(run: dict, dataset_format: str | None = None) -> dict:
    """The run config with its `preset` (if any) expanded into `infer.generation`, `prompt` and `metrics`
    (a new dict; `run` is not changed). `dataset_format`: config `datasets.<name>.format` of the run's dataset."""
    name = run.get("preset")
    out = copy.deepcopy(run)
    if name is None:
        return out
    p = get_preset(name)
    infer = out.setdefault("infer", {})
    infer["generation"] = {**DECODING_DEFAULTS, **p.generation, "preset": p.name}
    prompt = {k: v for k, v in out.get("prompt", {}).items() if not k.startswith("flamingo_")}
    prompt.update(flamingo_postprocess="open_flamingo_vqa", flamingo_stop="endofchunk_eos", flamingo_score_eoc=False)
    prompt.update(p.prompt)
    prompt["preset"] = p.name
    out["prompt"] = prompt
    metrics = out.setdefault("metrics", {})
    metrics["vqa_eval"] = p.vqa_eval
    metrics["vqa_stem"] = dataset_format in p.stem_formats
    return out
