"""The short-answer instruction is in every user turn, identically in the InfoScore beam search's scored rows and in
inference's generation prompts; the stages hand config `prompt` to the adapter; Flamingo answers get OpenFlamingo's
post-processing.
"""
from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import extend, load_icl_model
from leverplus.models.generation import GenerationSettings

INSTRUCTION = prompting.DEFAULT_INSTRUCTION


# ---- Qwen: scoring and generation build the same prompt ------------------------------------------------------------
@pytest.mark.parametrize("n_icds", [0, 1, 3])
def test_scoring_row_and_generation_prompt_hold_the_instruction_identically(qwen, vqa_examples, n_icds):
    assert qwen.instruction == INSTRUCTION  # the adapter's default: the Qwen-VL instruction
    assert qwen._segments.exact and qwen._blockwise, "the fast path (ChatSegments) must stay exact with the instruction"
    query, icds = vqa_examples[2], vqa_examples[5 : 5 + n_icds]
    # Beam search: the rows score_step scores (assembled from cached per-turn pieces).
    beam, cand = icds[:-1], icds[-1:] if icds else []
    row = qwen._row(extend(beam, cand[0], "right") if cand else [], query, with_answer=True).ids.tolist()
    a0, _ = qwen._answer_span(row)
    ids, mask = qwen.answer_mask(icds, query)
    assert ids == row and mask.index(True) == a0
    # Inference: the processor's encoding of the generation prompt.
    gen = qwen.generation_inputs([icds], [query])["input_ids"][0].tolist()
    assert gen == row[:a0], "the generation prompt must be the scored row up to the answer"
    text = qwen.tokenizer.decode(gen)
    assert text.count(INSTRUCTION) == n_icds + 1
    for ex in (*icds, query):
        assert f"{ex.question}\n{INSTRUCTION}<|im_end|>" in text


def test_empty_instruction_leaves_the_bare_question(tiny_qwen_dir, vqa_examples, qwen):
    bare = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), prompt={"instruction": ""})
    icds, query = [vqa_examples[1]], vqa_examples[3]
    text = bare.tokenizer.decode(bare.generation_inputs([icds], [query])["input_ids"][0])
    assert INSTRUCTION not in text and f"{query.question}<|im_end|>" in text
    assert bare._blockwise
    # The instruction changes what is scored.
    assert bare.score([icds], [query])[0] != qwen.score([icds], [query])[0]


def test_instruction_layout_is_after_the_question_on_its_own_line(vqa_examples):
    ex = vqa_examples[0]
    turn = prompting.ChatLayout("Say it briefly.").user_turn(ex)
    assert turn["content"] == [{"type": "image"}, {"type": "text", "text": f"{ex.question}\nSay it briefly."}]
    assert prompting.user_turn(ex) == prompting.ChatLayout("").user_turn(ex)  # the meta-training layout: none


# ---- stages: config `prompt` reaches the adapter, in the beam search and in inference ------------------------------
class _Stop(Exception):
    pass


def test_beam_search_stage_builds_the_adapter_with_the_configured_prompt(tmp_path, monkeypatch, vqa_examples):
    from leverplus.tracks.vqa.stages import beam

    ex = vqa_examples[:3]
    pd.DataFrame(
        {"id": [e.id for e in ex], "image": [e.image for e in ex], "question": [e.question for e in ex],
         "answers": [[e.answer] * 10 for e in ex], "answer": [e.answer for e in ex]}
    ).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"anchor": [ex[0].id], "candidates": [[ex[1].id, ex[2].id]]}).to_parquet(tmp_path / "pools.parquet")
    seen = {}

    def fake_load_model(spec, path, prompt=None):
        seen["prompt"] = prompt
        raise _Stop

    monkeypatch.setattr(beam, "load_model", fake_load_model)
    params = {"beam": {"beam_size": 2, "shot_num": 1, "construct_order": "right", "shards": 1},
              "model": {"adapter": "qwen2_5_vl"}, "prompt": {"instruction": "Be brief."}}
    inp = SimpleNamespace(train=str(tmp_path / "train.parquet"), pools=str(tmp_path / "pools.parquet"), model="m")
    with pytest.raises(_Stop):
        beam.beam_search(input=inp, output=[str(tmp_path / "out.parquet")], params=params, wildcards={"shard": "0"},
                         threads=1)
    assert seen["prompt"] == prompting.PromptSettings(instruction="Be brief.")


def test_infer_stage_uses_prompt_and_generation_settings_and_records_them(tmp_path, monkeypatch, vqa_examples):
    from leverplus.tracks.vqa.stages import infer

    ex = vqa_examples[:3]
    table = pd.DataFrame(
        {"id": [e.id for e in ex], "image": [e.image for e in ex], "question": [e.question for e in ex],
         "answers": [[e.answer] * 10 for e in ex], "answer": [e.answer for e in ex]}
    )
    seen = {}

    class FakeModel:
        def prompt_settings(self):
            return {"prompt": "chat_template", "instruction": seen["prompt"].instruction, "postprocess": "strip"}

        def generate(self, seqs, queries, generation=None, *, max_new_tokens=None):
            seen["generation"] = generation
            return [q.answer for q in queries]

    def fake_load_model(spec, path, prompt=None):
        seen["prompt"] = prompt
        return FakeModel()

    monkeypatch.setattr(infer, "load_model", fake_load_model)
    params = {"infer": {"generation": {"max_new_tokens": 5}}, "model": {"adapter": "qwen2_5_vl"},
              "metrics": {"vqa_stem": False, "n_resamples": 100, "seed": 0}, "prompt": json.dumps({"instruction": "Be brief."})}
    params["prompt"] = json.loads(params["prompt"])  # what the stage runner does with every JSON param
    out = SimpleNamespace(predictions=str(tmp_path / "shot1.parquet"), score=str(tmp_path / "shot1.json"))
    infer._answer_and_score(SimpleNamespace(model="m"), out, params, table, table, [[ex[1].id]] * 3,
                            {"kind": "baseline", "shot": 1})
    assert seen["prompt"] == prompting.PromptSettings(instruction="Be brief.")
    assert seen["generation"] == GenerationSettings(max_new_tokens=5)
    written = json.loads((tmp_path / "shot1.json").read_text())
    assert written["generation"]["instruction"] == "Be brief."
    assert written["generation"]["max_new_tokens"] == 5 and written["generation"]["repetition_penalty"] == 1.0
    assert "instruction:Be brief." in written["generation_signature"]
    assert "do_sample:no" in written["generation_signature"]


def test_prompt_settings_reject_unknown_keys_and_values():
    from leverplus.tracks.vqa.stages.common import prompt_settings

    assert prompt_settings({"prompt": {}}) == prompting.PromptSettings()
    with pytest.raises(ValueError, match="needs a `prompt` param"):
        prompt_settings({})
    with pytest.raises(ValueError, match="unknown key"):
        prompting.PromptSettings.from_config({"instructions": "x"})
    with pytest.raises(ValueError, match="flamingo_postprocess"):
        prompting.PromptSettings.from_config({"flamingo_postprocess": "cut"})


# ---- Flamingo: OpenFlamingo's answer post-processing ----------------------------------------------------------------
# Expected values: obtained by running `postprocess_vqa_generation` of mlfoundations/open_flamingo
# (open_flamingo/eval/vqa_metric.py, commit 655f693fbfa04cd6e9a987d960654624d48917cf) on these inputs.
OPEN_FLAMINGO_655F693 = {
    "yes": "yes",
    " two dogs, a cat": " two dogs",
    "blue Question:What is it? Short answer:red": "blue ",
    "no Answer": "no ",
    "Shortly after": "",
    "red,blue": "red,blue",
    "a, b, c": "a",
    "": "",
    "  kite  ": "  kite  ",
    "questionable": "questionable",
    "QuestionAnswer": "",
    "tennis racket Short": "tennis racket ",
    "3, Question": "3",
    "x , y": "x ",
    "yes\nQuestion:": "yes\n",
    "Short answer: yes": "",
}


@pytest.mark.parametrize("raw, expected", list(OPEN_FLAMINGO_655F693.items()))
def test_open_flamingo_vqa_postprocess_matches_the_reference(raw, expected):
    from leverplus.tracks.vqa.models.flamingo import open_flamingo_vqa_postprocess

    assert open_flamingo_vqa_postprocess(raw) == expected


needs_open_flamingo = pytest.mark.skipif(
    importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed"
)


@pytest.fixture(scope="module")
def flamingo_dir(tmp_path_factory):
    from leverplus.tracks.vqa.models.tiny_flamingo import build_tiny_flamingo

    corpus = ["What color is the cat? black white", "Question: Short answer: blue, red", "Is it? yes no"] * 8
    return build_tiny_flamingo(tmp_path_factory.mktemp("tiny_flamingo_pp"), corpus, seed=0)


@needs_open_flamingo
def test_flamingo_answers_are_post_processed_as_open_flamingo_does(flamingo_dir):
    cut = load_icl_model("flamingo", str(flamingo_dir))
    raw = load_icl_model("flamingo", str(flamingo_dir), prompt={"flamingo_postprocess": "none"})
    ids = cut.tokenizer(" blue, red Question: what", add_special_tokens=False)["input_ids"] + [cut.eoc_id, 5, 6]
    assert cut._decode_answer(ids) == "blue"
    assert raw._decode_answer(ids) == "blue, red Question: what"
    assert cut.prompt_settings()["postprocess"] == "open_flamingo_vqa"
    assert raw.prompt_settings()["postprocess"] == "none"


@needs_open_flamingo
def test_flamingo_generate_takes_explicit_settings_and_refuses_what_it_cannot_do(flamingo_dir, vqa_examples):
    model = load_icl_model("flamingo", str(flamingo_dir))
    q = vqa_examples[0]
    a = model.generate([[]], [q], GenerationSettings(max_new_tokens=3))
    assert a == model.generate([[]], [q], max_new_tokens=3)
    # beam search is supported (tests/tracks/vqa/test_flamingo_beam_presets.py checks it against Flamingo.generate)
    assert isinstance(model.generate([[]], [q], GenerationSettings(num_beams=3, max_new_tokens=3))[0], str)
    with pytest.raises(ValueError, match="repetition penalty"):
        model.generate([[]], [q], GenerationSettings(repetition_penalty=1.05))
