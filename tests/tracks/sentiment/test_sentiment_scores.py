"""Issue 27: scores stored as margins (log-odds) so confident models keep their ranking, the report warns with numbers
instead of aborting, label token counts keep pair order through record.json, and contextual calibration is Zhao et
al.'s (known answers from running their code).

No model is replaced by a stand-in: the 30–60-nat margins (which the shipped tiny LM does not produce) are given as
label scores to the model-free half of label scoring (arms.variants_from_scores); the token counts come from running
the shipped tiny LM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leverplus.core.io import read_json, write_json
from leverplus.tracks.sentiment import label_scoring as ls
from leverplus.tracks.sentiment.arms import arm_settings, label_variants, variants_from_scores
from leverplus.tracks.sentiment.report import (SentimentCheckWarning, _tokens, aggregate_sentiment, auc_invariance,
                                        verbalizer_table)


def _items(n: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    y = rng.integers(0, 2, n)
    return (pd.DataFrame({"id": [f"t{i:04d}" for i in range(n)], "text": [f"评论{i}" for i in range(n)],
                          "label": np.where(y == 1, "pos", "neg")}), y)


# ---------------------------------------------------------------------------------------------------------------------
# 1. margins of 30–60 nats: stored as margins, AUC from them, calibration leaves it exactly unchanged
# ---------------------------------------------------------------------------------------------------------------------
def test_confident_margins_keep_ranking_and_auc_invariance():
    rng = np.random.default_rng(27)
    items, y = _items(400, rng)
    m = 30.0 + 30.0 * rng.random(400) + 4.0 * y  # 30–64 nats, positives a little higher, the classes overlap
    ll_pos = -1e-3 * rng.random(400)
    ll = np.column_stack([ll_pos, ll_pos - m])
    sc = ls.LabelScores(loglik=ll, n_tokens=np.tile([2, 3], (400, 1)), n_chars=np.tile([2, 2], (400, 1)),
                        labels=["正面", "负面"])
    # content-free and domain scores that shift the margin by +2.3 and −5 nats
    sweep, rec = variants_from_scores(items["id"], ["正面", "负面"], sc, cf_ll=[[-4.0, -1.7], [-3.0, -0.7]],
                                      domain_ll=[-1.0, -6.0])
    assert rec["margin_shift"] == pytest.approx({"contextual": 2.3, "pmi_dc": -5.0})
    none = sweep[sweep.variant == "none"].set_index("id").loc[items["id"]]
    np.testing.assert_array_equal(none["score"].to_numpy(), m)  # the stored score IS the margin
    assert (none["prediction"] == "pos").all()
    rows = verbalizer_table(sweep, items, pair_meta={rec["label_pair"]: rec}, arm="zero_shot", n_resamples=100,
                            seed=0)
    by = {r["variant"]: r for r in rows}
    assert by["none"]["auc_roc"] == roc_auc_score(y, m)  # AUC from the margins, no ties from saturation
    assert by["none"]["auc_roc"] != roc_auc_score(y, ls.auc_score(ll))  # what sigmoid-stored scores would give
    inv = auc_invariance(rows, tol=1e-9)
    assert inv["passed"] and inv["max_abs_delta"] == 0.0
    assert by["none"]["share_abs_margin_over_30"] == 1.0 and by["none"]["median_abs_margin"] > 30
    assert rec["margin_abs"]["share_over_30_nats"] == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# 3. token counts in pair order, through the record.json round trip
# ---------------------------------------------------------------------------------------------------------------------
def test_label_token_counts_survive_record_json_round_trip(tmp_path):
    from leverplus.tracks.sentiment.assets import TINY_LM_DIR
    from leverplus.tracks.sentiment.causal_lm import load_causal_lm

    model, tok = load_causal_lm(TINY_LM_DIR)  # the shipped tiny LM and its tokenizer
    items = pd.DataFrame({"id": ["a", "b", "c"], "text": ["质量很好，物流也快", "太差了，不推荐", "一般般"],
                          "label": ["pos", "neg", "neg"]})
    sweep, rec = label_variants(model, tok, items, arm_settings(), ["好", "坏"])
    # after the prompt 好 is one token and 坏 two: the order write_json's sorted keys would swap (坏 U+574F sorts
    # before 好 U+597D), so a record keyed by label and read by position shows "2/1"
    assert rec["label_tokens"] == {"pos": [1], "neg": [2]}
    path = tmp_path / "record.json"
    write_json(path, {"pairs": [rec]})
    back = read_json(path)
    meta = {p["label_pair"]: p for p in back["pairs"]}
    rows = verbalizer_table(sweep, items, pair_meta=meta, arm="zero_shot", n_resamples=50, seed=0)
    assert all(r["label_tokens"] == {"pos": [1], "neg": [2]} for r in rows)
    assert rows[0]["labels"] == {"pos": "好", "neg": "坏"}
    assert _tokens(rows[0]["label_tokens"]) == "1/2"


# ---------------------------------------------------------------------------------------------------------------------
# 1. a failed invariance check is a warning with numbers; the report is written
# ---------------------------------------------------------------------------------------------------------------------
def _write_inputs(tmp_path, n: int = 60):
    from leverplus.tracks.sentiment.report import score_predictions

    rng = np.random.default_rng(5)
    ids = [f"t{i:03d}" for i in range(n)]
    y = rng.integers(0, 2, n)
    labels = np.where(y == 1, "pos", "neg")
    refs = tmp_path / "test.parquet"
    pd.DataFrame({"id": ids, "text": ids, "label": labels}).to_parquet(refs)
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {}}))
    files = {"predictions": {}, "scores": {}, "records": {}, "sweeps": {}}
    for arm in ("zero_shot", "head_last"):
        m = rng.normal(0, 2, n) + 1.5 * (2 * y - 1)
        pred = pd.DataFrame({"id": ids, "prediction": np.where(m > 0, "pos", "neg"), "score": m})
        pp = tmp_path / f"{arm}_pred.parquet"
        pred.to_parquet(pp)
        sp = tmp_path / f"{arm}_scores.json"
        write_json(sp, score_predictions(pp, refs, n_resamples=100, seed=0))
        rp = tmp_path / f"{arm}_record.json"
        write_json(rp, {"arm": arm, "pairs": [{"label_pair": "好/坏", "labels": {"pos": "好", "neg": "坏"},
                                               "label_tokens": {"pos": [1], "neg": [2]}}]})
        files["predictions"][arm], files["scores"][arm], files["records"][arm] = str(pp), str(sp), str(rp)
        if arm == "zero_shot":
            frames = []
            for v in ("none", "contextual", "pmi_dc"):
                sc = m + (0.7 if v == "contextual" else 0.0)
                if v == "pmi_dc":  # NOT a constant shift: a bug in a producer, which the check must report
                    sc = np.where(np.arange(n) % 3 == 0, -sc, sc)
                frames.append(pd.DataFrame({"id": ids, "label_pair": "好/坏", "variant": v,
                                            "prediction": np.where(sc > 0, "pos", "neg"), "score": sc}))
            sw = tmp_path / "sweep.parquet"
            pd.concat(frames).to_parquet(sw)
            files["sweeps"][arm] = str(sw)
    return files, str(refs), str(tmp_path / "manifest.json")


def test_failed_auc_check_warns_with_numbers_and_writes_report(tmp_path):
    files, refs, manifest = _write_inputs(tmp_path)
    out = {k: str(tmp_path / f"comparison.{k}") for k in ("json", "md", "png")}
    with pytest.warns(SentimentCheckWarning, match=r"changed AUC by [0-9.e-]+ > tolerance 1e-09 in zero_shot / 好/坏"):
        res = aggregate_sentiment(dataset="t", arms=["zero_shot", "head_last"], references=refs, manifest=manifest,
                                  settings={"metrics": {"n_resamples": 100, "seed": 0}},
                                  out_json=out["json"], out_md=out["md"], out_png=out["png"], **files)
    inv = res["auc_invariance"]
    assert not inv["passed"] and inv["max_abs_delta"] > 0.01
    assert inv["worst"]["arm"] == "zero_shot" and inv["worst"]["auc_contextual"] == inv["worst"]["auc_none"]
    stored = read_json(out["json"])
    assert stored["auc_invariance"]["warning"] == inv["warning"]
    md = Path(out["md"]).read_text(encoding="utf-8")
    assert "FAILS" in md and "**Warning:**" in md and f"{inv['max_abs_delta']:.3g}" in md
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------------------
# 2. contextual calibration = Zhao et al.'s code (known answers from running it)
# ---------------------------------------------------------------------------------------------------------------------
# Produced by running tonyzhaozh/few-shot-learning at commit e04d8643be91c2cce63f33e07760ff75d5aa3ad0
# (run_classification.py / utils.py last changed in 9d35e2628f6705b753a7c721fb74bcf1b7b7e6df):
# get_p_content_free(params, [], [], content_free_inputs=["N/A", "", "[MASK]"]) with `complete` returning the label
# log-probs below (label_dict {0: ["neg"], 1: ["pos"]}), and eval_accuracy(..., mode="diagonal_W", p_cf=p_cf) item by
# item on exp(ITEMS) (their get_label_probs returns unnormalised exp(log-prob)) to read each decision.
ZHAO_CF = [[-3.0, -1.0], [-2.5, -6.0], [-9.0, -0.2]]  # rows: "N/A", "", "[MASK]"; columns: neg, pos
ZHAO_P_CF = [0.09991449030481407, 0.900085509695186]
ZHAO_ITEMS = [[-0.7, -0.9], [-2.0, -0.3], [-0.05, -3.2], [-40.0, -0.1], [-0.2, -1.4], [-1.1, -1.0], [-0.6, -0.65],
              [-55.0, -1e-6]]
ZHAO_DECISIONS_CALIBRATED = [0, 0, 0, 1, 0, 0, 0, 1]  # class index: 0 neg, 1 pos
ZHAO_DECISIONS_RAW = [0, 1, 0, 1, 0, 1, 0, 1]
ZHAO_W_PROBS = [[5.503045610652391, 0.5001369290346324], [1.5459746090111646, 0.9393937862668245],
                [9.597293834699501, 0.04565263828586749], [4.6991758235541616e-17, 1.1110055536152894],
                [7.691825091179879, 0.2571702510568929], [4.754273489980188, 0.5832547928215446],
                [5.129360064998672, 0.5416180999079548], [1.300694944872237e-23, 1.1110055536152894]]


def test_contextual_calibration_equals_zhao_et_al_code():
    cf = np.array(ZHAO_CF)
    np.testing.assert_allclose(ls.content_free_prior(cf), ZHAO_P_CF, rtol=1e-14)
    items = np.array(ZHAO_ITEMS)
    cal = ls.contextual_calibration(items, cf)
    np.testing.assert_allclose(np.exp(cal), ZHAO_W_PROBS, rtol=1e-12)  # W·normalise(p) = exp(calibrated log-score)
    assert cal.argmax(axis=1).tolist() == ZHAO_DECISIONS_CALIBRATED
    assert items.argmax(axis=1).tolist() == ZHAO_DECISIONS_RAW
    # the margin shift (pos = column 1 here) is the one constant every item's margin moves by
    shift = ls.margin_shift(cf_ll=cf, pos=1, neg=0)
    np.testing.assert_allclose((cal[:, 1] - cal[:, 0]) - (items[:, 1] - items[:, 0]), shift, atol=1e-12)
    # the old prior (normalise per content-free input, then average) is a different number on these inputs
    old = (np.exp(cf) / np.exp(cf).sum(1, keepdims=True)).mean(0)
    assert abs(old[1] - ZHAO_P_CF[1]) > 0.2


def test_content_free_prior_does_not_underflow():
    cf = np.array([[-800.0, -805.0], [-900.0, -801.0]])  # exp() of every entry is 0.0 in float64
    p = ls.content_free_prior(cf)
    # log-space: mean_k exp(ll_k) per label ∝ [e^-800 (1 + e^-100), e^-801 (e^-4 + 1)]
    want = np.array([1.0 + np.exp(-100.0), np.exp(-1.0) * (np.exp(-4.0) + 1.0)])
    np.testing.assert_allclose(p, want / want.sum(), rtol=1e-12)
