"""Classification (scikit-learn documentation examples) and latency (hand-derived)."""

from pathlib import Path

import pytest

from leverplus.metrics.classification import classification_report, score_classification
from leverplus.metrics.io import read_table
from leverplus.metrics.latency import summarize_latency

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
FAST = {"n_resamples": 50}


def test_accuracy_sklearn_doc_example():
    # sklearn.metrics.accuracy_score docstring: y_pred [0,2,1,3], y_true [0,1,2,3] -> 0.5
    assert classification_report([0, 1, 2, 3], [0, 2, 1, 3], **FAST)["accuracy"]["score"] == 0.5


def test_f1_sklearn_doc_example():
    # sklearn.metrics.f1_score docstring: y_true [0,1,2,0,1,2], y_pred [0,2,1,0,0,1]
    # -> macro 0.2666..., per class [0.8, 0, 0]
    r = classification_report([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1], **FAST)
    assert r["macro_f1"]["score"] == pytest.approx(0.26666666, abs=1e-6)
    assert [r["per_class"][k]["f1"] for k in ("0", "1", "2")] == pytest.approx([0.8, 0.0, 0.0])


def test_precision_recall_sklearn_doc_example():
    # sklearn.metrics.precision_recall_fscore_support docstring (cat/dog/pig): macro P 0.22, R 0.33, F 0.26
    r = classification_report(["cat", "dog", "pig", "cat", "dog", "pig"], ["cat", "pig", "dog", "cat", "cat", "dog"], **FAST)
    pc = r["per_class"]
    assert sum(pc[k]["precision"] for k in pc) / 3 == pytest.approx(0.2222, abs=1e-4)
    assert sum(pc[k]["recall"] for k in pc) / 3 == pytest.approx(0.3333, abs=1e-4)
    assert r["macro_f1"]["score"] == pytest.approx(0.2667, abs=1e-4)


def test_confusion_matrix_sklearn_doc_example():
    # sklearn.metrics.confusion_matrix docstring: [[2,0,0],[0,0,1],[1,0,2]]
    r = classification_report([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2], **FAST)
    assert r["confusion_matrix"]["matrix"] == [[2, 0, 0], [0, 0, 1], [1, 0, 2]]


def test_auc_from_file_sklearn_roc_curve_example():
    # sklearn.metrics.roc_curve / auc docstrings: y [1,1,2,2], scores [0.1,0.4,0.35,0.8], pos_label 2 -> AUC 0.75
    r = score_classification(read_table(FIX / "classification_predictions.jsonl"),
                             read_table(FIX / "classification_references.jsonl"), pos_label=2, **FAST)
    assert r["auc_roc"]["score"] == pytest.approx(0.75)
    assert r["accuracy"]["score"] == 0.5  # predictions 1,2,1,2 vs labels 1,1,2,2
    assert "auc:binary-pos=2" in r["signature"]


def test_auc_needs_a_positive_class():
    with pytest.raises(ValueError, match="positive class"):
        classification_report(["a", "b"], ["a", "b"], [0.2, 0.9], **FAST)


def test_latency_hand_values():
    # r1: TTFT 0.5, T 2.5, N 21 -> decode 20/2 = 10, e2e 21/2.5 = 8.4
    # r2: TTFT 0.25, T 1.25, N 11 -> decode 10/1 = 10, e2e 8.8
    # r3: TTFT 1, T 1, N 1 -> decode undefined, e2e 1
    m = summarize_latency(read_table(FIX / "latency_predictions.jsonl"), **FAST)["metrics"]
    assert m["ttft_s"]["mean"] == pytest.approx(1.75 / 3) and m["ttft_s"]["median"] == 0.5
    assert m["ttft_s"]["p90"] == pytest.approx(0.9)  # linear percentile of [0.25, 0.5, 1]
    assert m["total_s"]["p90"] == pytest.approx(2.25)
    assert m["decode_rate_tok_s"]["mean"] == pytest.approx(10.0)
    assert (m["decode_rate_tok_s"]["n"], m["decode_rate_tok_s"]["n_undefined"]) == (2, 1)
    assert m["e2e_rate_tok_s"]["mean"] == pytest.approx((8.4 + 8.8 + 1.0) / 3)
    assert m["e2e_rate_tok_s"]["median"] == pytest.approx(8.4)
