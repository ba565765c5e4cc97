"""Classification metrics through scikit-learn, with bootstrap CIs.

Labels are compared as strings (a JSONL ``1`` and a parquet ``"1"`` are the same
label).  Class order everywhere (per-class table, confusion matrix rows/columns,
multi-class score vectors) is the sorted list of labels seen in references and
predictions, unless ``labels`` is given.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from leverplus.metrics import stats
from leverplus.metrics.io import MetricsInputError, align
from leverplus.metrics.signature import ci_settings, make_signature, package_version

_POSITIVE_GUESSES = (("0", "1"), ("false", "true"), ("neg", "pos"), ("negative", "positive"), ("no", "yes"))


def _default_pos_label(labels: Sequence[str]) -> str | None:
    low = tuple(sorted(str(x).lower() for x in labels))
    for pair in _POSITIVE_GUESSES:
        if low == tuple(sorted(pair)):
            target = pair[1]
            return next(x for x in labels if str(x).lower() == target)
    return None


def _macro_f1(labels):
    def stat(rows):
        rows = np.asarray(rows)
        return skm.f1_score(rows[:, 0], rows[:, 1], labels=labels, average="macro", zero_division=0)

    return stat


def auc_roc(y_true: Sequence[str], scores, *, labels: Sequence[str], pos_label: str | None = None) -> dict:
    """AUC-ROC: binary from one score per item (score of ``pos_label``), or one-vs-rest
    macro average from one score vector per item (columns in ``labels`` order)."""
    y_true = np.asarray(y_true, dtype=object)
    first = scores[0]
    if np.ndim(first) == 0:
        if len(labels) != 2:
            raise MetricsInputError(
                f"a scalar 'score' needs exactly 2 classes for AUC-ROC, found {len(labels)}: {list(labels)}; "
                "give a list of per-class scores instead"
            )
        pos = pos_label if pos_label is not None else _default_pos_label(labels)
        if pos is None:
            raise MetricsInputError(f"cannot tell the positive class among {list(labels)}: pass pos_label / --pos-label")
        if pos not in labels:
            raise MetricsInputError(f"pos_label {pos!r} is not one of the labels {list(labels)}")
        s = np.asarray(scores, dtype=float)
        y = (y_true == pos).astype(int)
        value = float(skm.roc_auc_score(y, s))

        def stat(rows):
            rows = np.asarray(rows, dtype=float)
            if rows[:, 0].min() == rows[:, 0].max():
                return float("nan")
            return skm.roc_auc_score(rows[:, 0], rows[:, 1])

        items = np.column_stack([y, s])
        return {"value": value, "mode": "binary", "pos_label": pos, "stat": stat, "items": items}
    mat = np.asarray([np.asarray(v, dtype=float) for v in scores])
    if mat.ndim != 2 or mat.shape[1] != len(labels):
        raise MetricsInputError(f"per-class scores must have {len(labels)} entries (labels {list(labels)})")
    codes = np.asarray([list(labels).index(t) for t in y_true])
    value = float(skm.roc_auc_score(codes, mat, multi_class="ovr", average="macro", labels=list(range(len(labels)))))

    def stat(rows):
        rows = np.asarray(rows, dtype=float)
        c = rows[:, 0].astype(int)
        if len(np.unique(c)) != len(labels):
            return float("nan")
        return skm.roc_auc_score(c, rows[:, 1:], multi_class="ovr", average="macro", labels=list(range(len(labels))))

    return {"value": value, "mode": "ovr-macro", "pos_label": None, "stat": stat,
            "items": np.column_stack([codes, mat])}


def classification_report(
    y_true: Sequence,
    y_pred: Sequence,
    scores=None,
    *,
    labels: Sequence | None = None,
    pos_label=None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Accuracy, per-class P/R/F1, macro-F1, AUC-ROC (if scores), confusion matrix."""
    y_true = [str(x) for x in y_true]
    y_pred = [str(x) for x in y_pred]
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise MetricsInputError(f"need equal, non-zero numbers of labels and predictions ({len(y_true)} vs {len(y_pred)})")
    labels = [str(x) for x in labels] if labels is not None else sorted(set(y_true) | set(y_pred))
    pos_label = None if pos_label is None else str(pos_label)
    n = len(y_true)
    correct = np.asarray([t == p for t, p in zip(y_true, y_pred)], dtype=float)
    acc = float(skm.accuracy_score(y_true, y_pred))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    pairs = np.column_stack([np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)])
    macro_ci = stats.bootstrap_ci(pairs, statistic=_macro_f1(labels), n_resamples=n_resamples, seed=seed)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    settings = {"impl": "scikit-learn", "version": package_version("scikit-learn"), "zero_division": 0,
                "labels": ",".join(labels), **ci_settings(n_resamples, seed)}
    out = {
        "task": "classification",
        "n": n,
        "labels": labels,
        "accuracy": {"score": acc, "ci95": list(stats.bootstrap_ci(correct, n_resamples=n_resamples, seed=seed))},
        "macro_f1": {"score": macro, "ci95": list(macro_ci)},
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "rows": "true", "columns": "predicted", "matrix": cm.tolist()},
    }
    if scores is not None:
        auc = auc_roc(y_true, list(scores), labels=labels, pos_label=pos_label)
        auc_ci = stats.bootstrap_ci(auc["items"], statistic=auc["stat"], n_resamples=n_resamples, seed=seed)
        out["auc_roc"] = {"score": auc["value"], "ci95": list(auc_ci), "mode": auc["mode"], "pos_label": auc["pos_label"]}
        settings["auc"] = auc["mode"] + (f"-pos={auc['pos_label']}" if auc["pos_label"] is not None else "")
    out["settings"] = settings
    out["signature"] = make_signature("classification", settings)
    return out


def score_classification(
    predictions: pd.DataFrame,
    references: pd.DataFrame,
    *,
    pos_label=None,
    labels: Sequence | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Predictions ``id, prediction[, score]`` against references ``id, label``."""
    cols = ["prediction"] + (["score"] if "score" in predictions.columns else [])
    merged = align(predictions, references, cols, ["label"])
    if merged["prediction"].isna().any() or merged["label"].isna().any():
        raise MetricsInputError("missing values in 'prediction' or 'label'")
    scores = merged["score"].tolist() if "score" in cols else None
    return classification_report(merged["label"].tolist(), merged["prediction"].tolist(), scores,
                                  labels=labels, pos_label=pos_label, n_resamples=n_resamples, seed=seed)
