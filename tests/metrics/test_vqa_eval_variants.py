"""The three VQA evaluation variants (metrics.vqa_eval) against values their reference code printed.

Every expected value below was obtained by running the reference code itself (fetched into a scratch
directory, never committed) on exactly these inputs: its ``VQAEval.evaluate()`` with one question per
case (10 answer dicts with distinct ``answer_id``, as in the VQA annotation files), reading
``evalQA[qid]`` (×100, 2 decimals) and ``accuracy["overall"]``.  The 2016 file is Python 2; the only
shim was turning its two ``print "..."`` statements into calls.

* official       GT-Vision-Lab/VQA@a013f0043c1e2cdc995922dfe257f7149aa9af06
                 PythonEvaluationTools/vqaEvaluation/vqaEval.py
* official_2016  GT-Vision-Lab/VQA@458a8b268b1a239dc388e0af4423f3fe7477b04f (same file; the Python 3
                 pull-request head c4e6a0e4e84b9702d99800d3393652d92b5df224 printed identical values, and so did
                 Qwen-VL's copy, QwenLM/Qwen-VL@aa00ed04091eea5fcdd32985e7915f1c53e7d599 eval_mm/vqa_eval.py with its
                 eval_mm/vqa.py, overall 63.03 on all CASES: preset qwen_vl_vqa)
* lever_lm       ForJadeForest/Lever-LM@11d61e44b3e9c0b0b972b37b2a1b6ec366530d5f
                 open_mmicl/metrics/vqa_metrics.py (OpenFlamingo's open_flamingo/eval/vqa_metric.py at
                 mlfoundations/open_flamingo@655f693fbfa04cd6e9a987d960654624d48917cf printed identical values)
"""

import pandas as pd
import pytest

from leverplus.metrics.signature import parse_signature
from leverplus.metrics.vqa import DEFAULT_VQA_EVAL, VQA_EVALS, score_vqa, vqa_accuracy

OFFICIAL = "GT-Vision-Lab/VQA@a013f0043c1e2cdc995922dfe257f7149aa9af06"
OFFICIAL_2016 = "GT-Vision-Lab/VQA@458a8b268b1a239dc388e0af4423f3fe7477b04f"
LEVER_LM = "ForJadeForest/Lever-LM@11d61e44b3e9c0b0b972b37b2a1b6ec366530d5f"

# (prediction, 10 answers, evalQA printed by official, by official_2016, by lever_lm)
CASES = [
    # the separating inputs
    ("Yes", ["yes"] * 10, 0.0, 100.0, 100.0),
    ("t-shirt", ["t-shirt"] * 10, 100.0, 0.0, 100.0),
    ("dog", ["the dog"] * 3 + ["cat"] * 7, 90.0, 0.0, 90.0),
    ("2", ["Two"] * 10, 0.0, 0.0, 100.0),
    # case, digits with commas, periods, contractions, whitespace, articles, number words, punctuation
    ("yes", ["Yes"] * 8 + ["yes"] * 2, 100.0, 60.0, 100.0),
    ("1,000", ["1000"] * 10, 0.0, 100.0, 100.0),
    ("1,000", ["1,000"] * 5 + ["1000"] * 5, 100.0, 100.0, 100.0),
    ("dogs.", ["dogs"] * 10, 0.0, 100.0, 100.0),
    ("Two dogs.", ["2 dogs"] * 6 + ["two dogs"] * 4, 100.0, 100.0, 100.0),
    ("dont know", ["don't know"] * 10, 0.0, 100.0, 100.0),
    ("it's red", ["it's red"] * 4 + ["red"] * 6, 100.0, 100.0, 100.0),
    ("yes", [" yes"] * 10, 100.0, 0.0, 100.0),
    ("yes", ["yes"] * 2 + ["yes "] * 8, 100.0, 60.0, 100.0),
    ("RED", ["Red"] * 10, 0.0, 0.0, 100.0),
    ("the dog", ["dog"] * 10, 0.0, 100.0, 100.0),
    ("none", ["0"] * 10, 0.0, 100.0, 100.0),
    ("T-Shirt", ["t-shirt"] * 4 + ["shirt"] * 6, 100.0, 100.0, 100.0),
    ("dog", ["Dog"] * 8 + ["dog"] * 2, 100.0, 60.0, 100.0),
    ("2.5", ["2.5"] * 10, 100.0, 100.0, 100.0),
    ("yes!", ["yes"] * 10, 0.0, 100.0, 100.0),
    ("red and white", ["red & white"] * 3 + ["red and white"] * 2 + ["white"] * 5, 60.0, 60.0, 60.0),
    ("on the left.", ["left"] * 3 + ["on left"] * 4 + ["left"] + ["right"] * 2, 100.0, 100.0, 100.0),
    ("time: 5", ["time: 5"] * 3 + ["5"] * 7, 90.0, 90.0, 90.0),
    ("2", ["2"] * 3 + ["3"] * 7, 90.0, 90.0, 90.0),
    ("dogs", ["dogs"] * 10, 100.0, 100.0, 100.0),
    ("dog", ["dogs"] * 10, 0.0, 0.0, 0.0),
    ("Dogs", ["dog"] * 5 + ["dogs"] * 5, 100.0, 100.0, 100.0),
    ("yes\n", ["yes"] * 10, 100.0, 100.0, 100.0),
    ("2", ["2"] + ["3"] * 9, 30.0, 30.0, 30.0),
    ("yes", ["Yes"] * 10, 0.0, 0.0, 100.0),
    ("the dog", ["the dog"] * 10, 100.0, 0.0, 100.0),
    ("dog", ["a dog"] + ["dog"] + ["cat"] * 8, 60.0, 30.0, 60.0),
    ("5 o'clock", ["5 oclock"] * 3 + ["5"] * 7, 90.0, 0.0, 90.0),
]
# accuracy["overall"] each reference printed for all CASES evaluated together
OVERALL = {"official": 60.91, "official_2016": 63.03, "lever_lm": 91.21}
COLUMN = {"official": 2, "official_2016": 3, "lever_lm": 4}
IDS = [f"{i}:{c[0]!r}" for i, c in enumerate(CASES)]


def _check(variant, case):
    pred, answers = case[0], case[1]
    assert round(100 * vqa_accuracy(pred, answers, vqa_eval=variant), 2) == case[COLUMN[variant]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_official_matches_vqa_master_a013f00(case):
    """GT-Vision-Lab/VQA@a013f0043c1e2cdc995922dfe257f7149aa9af06 vqaEval.py."""
    _check("official", case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_official_2016_matches_vqa_458a8b2(case):
    """GT-Vision-Lab/VQA@458a8b268b1a239dc388e0af4423f3fe7477b04f vqaEval.py (= c4e6a0e4e84b9702d99800d3393652d92b5df224)."""
    _check("official_2016", case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lever_lm_matches_open_mmicl_11d61e4(case):
    """ForJadeForest/Lever-LM@11d61e44b3e9c0b0b972b37b2a1b6ec366530d5f open_mmicl/metrics/vqa_metrics.py."""
    _check("lever_lm", case)


@pytest.mark.parametrize("variant", list(OVERALL))
def test_overall_score_matches_reference_overall(variant):
    preds = pd.DataFrame({"id": [f"q{i}" for i in range(len(CASES))], "prediction": [c[0] for c in CASES]})
    refs = pd.DataFrame({"id": preds["id"], "answers": [c[1] for c in CASES]})
    res = score_vqa(preds, refs, vqa_eval=variant, n_resamples=100)
    assert res["score"] == OVERALL[variant]


def test_default_is_official_master_and_named_in_signature():
    assert DEFAULT_VQA_EVAL == "official"
    preds = pd.DataFrame({"id": ["a"], "prediction": ["Yes"]})
    refs = pd.DataFrame({"id": ["a"], "answers": [["yes"] * 10]})
    res = score_vqa(preds, refs, n_resamples=100)
    assert res["score"] == 0.0  # master compares identical answers unnormalised
    _, sig = parse_signature(res["signature"])
    assert sig["eval"] == "official" and sig["eval_ref"] == OFFICIAL
    for variant, ref in [("official_2016", OFFICIAL_2016), ("lever_lm", LEVER_LM)]:
        res = score_vqa(preds, refs, vqa_eval=variant, n_resamples=100)
        assert res["settings"]["eval"] == variant and res["settings"]["eval_ref"] == ref
        assert f"eval:{variant}|eval_ref:{ref}" in res["signature"]


def test_stemming_is_orthogonal_to_the_variant():
    # "dogs" vs ["dog"]*10: stemming maps the prediction to "dog" before any variant's normalisation
    for variant in VQA_EVALS:
        assert vqa_accuracy("dogs", ["dog"] * 10, vqa_eval=variant) == 0.0
        assert vqa_accuracy("dogs", ["dog"] * 10, vqa_eval=variant, stem=True) == 1.0


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown VQA evaluation 'vqav3'.*official, official_2016, lever_lm"):
        vqa_accuracy("yes", ["yes"] * 10, vqa_eval="vqav3")


def test_qwen_vl_evaluation_overall_on_all_cases():
    """Qwen-VL's eval_mm/vqa_eval.py (QwenLM/Qwen-VL@aa00ed0; VQAEval(vqa, res, n=2)) printed overall 63.03 for
    CASES as one file; the qwen_vl_vqa preset's variant must give the same."""
    from leverplus.tracks.vqa.models.presets import get_preset

    ids = [str(i) for i in range(len(CASES))]
    res = score_vqa(pd.DataFrame({"id": ids, "prediction": [c[0] for c in CASES]}),
                    pd.DataFrame({"id": ids, "answers": [c[1] for c in CASES]}),
                    vqa_eval=get_preset("qwen_vl_vqa").vqa_eval, n_resamples=100)
    assert res["score"] == 63.03
