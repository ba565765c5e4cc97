"""The sentiment track's report: arms × metrics with paired verdicts, McNemar for every pair of arms, the verbalizer
sweep (label pairs × calibrations) with the AUC-invariance check, training records, and the PNG (ROC per arm, sweep).

Inputs are the files the arm rules write (``results/sentiment/<dataset>/arms/<arm>/``): ``predictions.parquet``
(``id, prediction, score`` with ``score`` = the positive-class margin, log-odds), ``scores.json`` (what
``leverplus score classification`` prints for those predictions), ``record.json`` (training record, trainable
parameters, frozen-weight digests) and, for the label-scoring arms, ``sweep.parquet`` (``id, label_pair, variant,
prediction, score``; variants of :data:`leverplus.tracks.sentiment.arms.VARIANTS`).

Calibration in the binary case. Contextual calibration (diagonal W) and PMI_DC both subtract a per-label constant from
the label log-scores, so the margin ``s_pos − s_neg`` of every item moves by the same constant: the ranking of the
items — hence AUC — cannot change; only the threshold, so accuracy, F1 and the share of positive predictions, move.
:func:`auc_invariance` checks it in the numbers. Every score is stored and compared as a MARGIN (log-odds), so AUC is
computed from the margins — never from ``sigmoid(margin)``, which in float64 ties items beyond ~30 nats and would let a
constant shift change AUC. When the largest |ΔAUC| exceeds the tolerance the report is still written: the check's
numbers (worst cell, its AUCs, the tolerance) go into ``comparison.json → auc_invariance``, the Markdown and a
:class:`SentimentCheckWarning`, instead of aborting the run.
"""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from leverplus.core.io import atomic_write, read_json, write_json
from leverplus.metrics import stats
from leverplus.metrics.classification import score_classification
from leverplus.metrics.io import read_table
from leverplus.tracks.sentiment.stages import LABEL_ARMS  # the track's arm registry

__all__ = [
    "ARM_NAMES",
    "LABEL_ARMS",
    "VARIANT_NAMES",
    "SentimentReportError",
    "SentimentCheckWarning",
    "score_predictions",
    "verbalizer_table",
    "auc_invariance",
    "aggregate_sentiment",
    "sentiment_markdown",
    "plot_sentiment",
]

ARM_NAMES = {  # display names of the registry's arms (tests/test_registries.py: the same keys as ARMS)
    "zero_shot": "A zero-shot label scoring",
    "head_last": "B head-only (last token)",
    "head_mean": "B′ head-only (mean-pooled)",
    "lora_head": "C LoRA + head",
    "lora_label": "D LoRA + label scoring",
}
VARIANT_NAMES = {
    "none": "sum of log-probs",
    "norm_tokens": "per label token",
    "norm_chars": "per label character",
    "contextual": "contextual calibration",
    "pmi_dc": "PMI_DC",
}
CALIBRATIONS = ("contextual", "pmi_dc")
PLOTTED_VARIANTS = ("none", "contextual", "pmi_dc")  # the length-normalised variants are in the tables
POS, NEG = "pos", "neg"

CALIBRATION_NOTE = (
    "In the binary case both calibrations subtract a per-label constant from the label log-scores (contextual "
    "calibration: log p_cf of the content-free inputs; PMI_DC: the label's log-prob after the domain premise), so every "
    "item's margin s_pos − s_neg moves by the same constant: the ranking of the items, hence AUC, cannot change; only "
    "the decision threshold moves, so accuracy, F1 and the share of positive predictions change."
)


class SentimentReportError(RuntimeError):
    """The arms' files do not fit together."""


class SentimentCheckWarning(UserWarning):
    """A check of the report failed (written into the report with its numbers; the run goes on)."""


# ---------------------------------------------------------------------------------------------------------------------
# scoring one arm
# ---------------------------------------------------------------------------------------------------------------------
def score_predictions(predictions: str | Path, references: str | Path, *, n_resamples: int = 1000,
                      seed: int = 0) -> dict:
    """Exactly what ``leverplus score classification --predictions P --references R --n-resamples N --seed S``
    computes (same reader, same function, same defaults), plus the command that reproduces it."""
    res = score_classification(read_table(predictions), read_table(references), n_resamples=n_resamples, seed=seed)
    res["reproduce"] = (f"leverplus score classification --predictions {predictions} --references {references} "
                        f"--n-resamples {n_resamples} --seed {seed}")
    return res


# ---------------------------------------------------------------------------------------------------------------------
# verbalizer sweep
# ---------------------------------------------------------------------------------------------------------------------
def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(skm.roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def verbalizer_table(sweep: pd.DataFrame, refs: pd.DataFrame, *, pair_meta: Mapping[str, dict], arm: str,
                     n_resamples: int, seed: int) -> list[dict]:
    """One row per (label pair, variant): label token counts, accuracy [CI], macro-F1, AUC, share of positive
    predictions vs the true positive rate. ``pair_meta``: the arm record's per-pair entries by pair name."""
    truth = refs.set_index("id")["label"]
    rows = []
    for (pair, variant), g in sweep.groupby(["label_pair", "variant"], sort=False):
        g = g.set_index("id").loc[truth.index]  # test order; every item present or KeyError
        y_true = truth.to_numpy()
        y_pred = g["prediction"].to_numpy()
        correct = (y_true == y_pred).astype(float)
        y = (y_true == POS).astype(int)
        meta = pair_meta.get(pair, {})
        toks = meta.get("label_tokens") or {}
        scores = g["score"].to_numpy(dtype=float)
        rows.append({
            "arm": arm, "pair": pair, "variant": variant, "labels": meta.get("labels"),
            # keyed by role (pos/neg), never read by position: JSON writers sort keys
            "label_tokens": ({"pos": toks["pos"], "neg": toks["neg"]} if {"pos", "neg"} <= set(toks) else None),
            "n": int(len(g)),
            "median_abs_margin": float(np.median(np.abs(scores))),
            "share_abs_margin_over_30": float(np.mean(np.abs(scores) > 30)),
            "accuracy": float(correct.mean()),
            "accuracy_ci95": list(stats.bootstrap_ci(correct, n_resamples=n_resamples, seed=seed)),
            "macro_f1": float(skm.f1_score(y_true, y_pred, labels=[NEG, POS], average="macro", zero_division=0)),
            "f1_pos": float(skm.f1_score(y_true, y_pred, pos_label=POS, average="binary", zero_division=0)),
            "auc_roc": _auc(y, scores),  # from the margins
            "positive_share": float((y_pred == POS).mean()),
            "true_positive_rate": float(y.mean()),
        })
    return rows


def spread(rows: Sequence[dict]) -> list[dict]:
    """Across label pairs, per (arm, variant): min, max and max − min of accuracy, macro-F1, AUC, positive share."""
    out = []
    df = pd.DataFrame(rows)
    for (arm, variant), g in df.groupby(["arm", "variant"], sort=False):
        rec = {"arm": arm, "variant": variant, "n_pairs": int(len(g))}
        for m in ("accuracy", "macro_f1", "auc_roc", "positive_share"):
            rec[m] = {"min": float(g[m].min()), "max": float(g[m].max()), "spread": float(g[m].max() - g[m].min()),
                      "argmin": str(g.loc[g[m].idxmin(), "pair"]), "argmax": str(g.loc[g[m].idxmax(), "pair"])}
        out.append(rec)
    return out


def auc_invariance(rows: Sequence[dict], *, tol: float) -> dict:
    """max |AUC(calibrated) − AUC(uncalibrated)| per (arm, pair) and overall, AUC from the stored margins;
    ``passed`` when ≤ ``tol``; ``worst`` names the cell and its numbers."""
    df = pd.DataFrame(rows)
    checks = []
    for (arm, pair), g in df.groupby(["arm", "pair"], sort=False):
        auc = dict(zip(g["variant"], g["auc_roc"]))
        if "none" not in auc:
            continue
        deltas = {c: abs(auc[c] - auc["none"]) for c in CALIBRATIONS if c in auc}
        if deltas:
            checks.append({"arm": arm, "pair": pair, "auc_none": auc["none"],
                           **{f"auc_{c}": auc[c] for c in deltas}, "max_abs_delta": max(deltas.values())})
    worst = max(checks, key=lambda c: c["max_abs_delta"], default=None)
    worst_delta = worst["max_abs_delta"] if worst else 0.0
    return {"statement": CALIBRATION_NOTE, "auc_from": "the stored margins s_pos − s_neg (log-odds)",
            "tolerance": tol, "max_abs_delta": worst_delta, "passed": bool(worst_delta <= tol), "worst": worst,
            "checks": checks}


def invariance_message(inv: dict) -> str:
    w = inv["worst"] or {}
    cells = ", ".join(f"{c} {w[f'auc_{c}']:.6f}" for c in CALIBRATIONS if f"auc_{c}" in w)
    return (f"calibration changed AUC by {inv['max_abs_delta']:.3g} > tolerance {inv['tolerance']:g} in "
            f"{w.get('arm')} / {w.get('pair')} (AUC uncalibrated {w.get('auc_none', float('nan')):.6f}, {cells}); "
            "both calibrations shift a binary margin by a constant, so this points at the stored scores "
            "(ties, or scores that are not margins) — the report is written with the check's numbers")


# ---------------------------------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------------------------------
def _aligned(pred_path: str | Path, truth: pd.Series) -> pd.DataFrame:
    df = read_table(pred_path).set_index("id")
    missing = truth.index.difference(df.index)
    if len(missing) or len(df) != len(truth):
        raise SentimentReportError(f"{pred_path}: predictions are not for the test items "
                                   f"({len(missing)} of {len(truth)} missing, {len(df)} rows)")
    return df.loc[truth.index]


def _group_sums(w: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.add.reduceat(w, bounds, axis=-1)


def auc_block(y: np.ndarray, s: np.ndarray, block: np.ndarray) -> np.ndarray:
    """AUC-ROC (Mann-Whitney, ties count ½ — what ``sklearn.metrics.roc_auc_score`` computes) of every resample in
    ``block`` ([k, n] item indices, repeats allowed), vectorised; NaN where a resample has one class only."""
    block = np.atleast_2d(block)
    n = len(y)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    bounds = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # first index of every tie group, ascending score
    w = np.stack([np.bincount(row, minlength=n) for row in block]).astype(float)[:, order]  # [k, n] multiplicities
    yo = y[order].astype(bool)
    pos = _group_sums(w * yo, bounds)
    neg = _group_sums(w * ~yo, bounds)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _macro_f1_from_counts(c: np.ndarray) -> float:
    """c = summed (tp_pos, fp_pos, fn_pos, tp_neg, fp_neg, fn_neg); zero_division = 0 as in sklearn."""
    f = []
    for tp, fp, fn in (c[0:3], c[3:6]):
        d = 2 * tp + fp + fn
        f.append(2 * tp / d if d > 0 else 0.0)
    return float(np.mean(f))


def _metric_specs(pred: dict[str, pd.DataFrame], truth: pd.Series):
    """accuracy (mean of per-item correctness), macro-F1 (from per-item confusion counts) and AUC-ROC (rank-based):
    each with a vectorised ``score_block``, equal to the scikit-learn values (tests/tracks/sentiment/test_sentiment_workflow.py)."""
    from leverplus.report.comparison import MetricSpec

    y_true = truth.to_numpy()
    y = (y_true == POS).astype(int)
    correct = {a: (df["prediction"].to_numpy() == y_true).astype(float) for a, df in pred.items()}
    counts = {}
    for a, df in pred.items():
        p = df["prediction"].to_numpy()
        tp_p, fp_p, fn_p = (p == POS) & (y_true == POS), (p == POS) & (y_true != POS), (p != POS) & (y_true == POS)
        tp_n, fp_n, fn_n = (p == NEG) & (y_true == NEG), (p == NEG) & (y_true != NEG), (p != NEG) & (y_true == NEG)
        counts[a] = np.column_stack([tp_p, fp_p, fn_p, tp_n, fp_n, fn_n]).astype(float)
    score = {a: df["score"].to_numpy(dtype=float) for a, df in pred.items()}
    auc = MetricSpec("auc_roc", lambda arm, idx: float(auc_block(y, score[arm], np.asarray(idx)[None, :])[0]),
                     label="AUC-ROC", digits=3,
                     score_block=lambda arm, block: auc_block(y, score[arm], block))
    return [
        MetricSpec.from_per_item("accuracy", correct, label="accuracy", digits=3),
        MetricSpec.from_stats("macro_f1", counts, _macro_f1_from_counts, label="macro-F1", digits=3),
        auc,
    ], correct


def seed_summary(pred_runs: Mapping[str, Sequence[pd.DataFrame]], truth: pd.Series, seeds: Mapping[str, Sequence],
                 *, pairs: Sequence[tuple[str, str]], n_resamples: int, seed: int) -> dict:
    """Accuracy over every training seed of every arm: per seed accuracy / macro-F1 / AUC, the mean over seeds with a
    95% CI from the two-way bootstrap over items and seeds (:func:`leverplus.metrics.stats.seed_bootstrap`), and for
    every pair of arms the paired seed-aware difference (same resampled items, seeds drawn per arm) with its p-value.
    An arm with one run (A has no training seed) contributes its one row."""
    y_true = truth.to_numpy()
    y = (y_true == POS).astype(int)
    correct = {a: np.stack([(df["prediction"].to_numpy() == y_true).astype(float) for df in dfs])
               for a, dfs in pred_runs.items()}
    arms_out = {}
    for a, dfs in pred_runs.items():
        per_seed = []
        for s_, df in zip(seeds[a], dfs):
            yp = df["prediction"].to_numpy()
            per_seed.append({"seed": s_, "accuracy": float((yp == y_true).mean()),
                             "macro_f1": float(skm.f1_score(y_true, yp, labels=[NEG, POS], average="macro",
                                                            zero_division=0)),
                             "auc_roc": _auc(y, df["score"].to_numpy(dtype=float))})
        sb = stats.seed_bootstrap(correct[a], n_resamples=n_resamples, seed=seed)
        arms_out[a] = {"seeds": list(seeds[a]), "n_seeds": len(dfs), "per_seed": per_seed,
                       "accuracy": {"mean": sb["mean"], "ci95": sb["ci95"], "n": sb["n"], "method": sb["method"]},
                       **{f"{m}_range": [min(r[m] for r in per_seed), max(r[m] for r in per_seed)]
                          for m in ("accuracy", "macro_f1", "auc_roc")}}
    pair_out = []
    for a, b in pairs:
        r = stats.seed_bootstrap(correct[a], correct[b], n_resamples=n_resamples, seed=seed)
        pair_out.append({"a": a, "b": b, "metric": "accuracy", "diff": r["diff"], "ci95": r["ci95"],
                         "p_value": r["p_value"], "seeds": r["seeds"], "n": r["n"], "method": r["method"]})
    return {"metric": "accuracy (per-item correctness)", "n_resamples": n_resamples, "seed": seed,
            "statement": ("accuracy averaged over the training seeds; 95% CI from a bootstrap over the test items and, "
                          "independently per arm, over its seeds (leverplus.metrics.stats.seed_bootstrap); with one "
                          "seed per arm this is the paired item bootstrap"),
            "arms": arms_out, "pairs": pair_out}


def holm_families(comparison: dict, mcnemar: Sequence[dict], seed_res: dict | None, *, alpha: float = 0.05) -> dict:
    """Holm's step-down correction (:func:`leverplus.metrics.stats.holm`) on each family of pairwise tests:
    the arms table's paired-bootstrap tests (every pair × metric), McNemar (every pair) and the seed-aware accuracy
    tests (every pair). Adds ``p_holm`` next to every ``p_value`` in place and returns the families' summaries."""
    fams = {}
    cells = [(pr, m) for pr in comparison["pairs"] for m in pr["metrics"]]
    adj = stats.holm([pr["metrics"][m]["p_value"] for pr, m in cells])
    for (pr, m), q in zip(cells, adj):
        pr["metrics"][m]["p_holm"] = q
    fams["paired_bootstrap"] = {"tests": len(cells), "what": "pairs of arms × metrics of the arms table",
                                "rejected": int(sum(q is not None and q <= alpha for q in adj))}
    adj = stats.holm([m["p_value"] for m in mcnemar])
    for m, q in zip(mcnemar, adj):
        m["p_holm"] = q
    fams["mcnemar"] = {"tests": len(mcnemar), "what": "pairs of arms (accuracy)",
                       "rejected": int(sum(q is not None and q <= alpha for q in adj))}
    if seed_res is not None:
        adj = stats.holm([p["p_value"] for p in seed_res["pairs"]])
        for p, q in zip(seed_res["pairs"], adj):
            p["p_holm"] = q
        fams["seed_aware"] = {"tests": len(adj), "what": "pairs of arms, accuracy over items and seeds",
                              "rejected": int(sum(q is not None and q <= alpha for q in adj))}
    return {"method": "Holm step-down (family-wise error rate)", "alpha": alpha, "families": fams,
            "statement": (f"p_holm: Holm-adjusted p-values within each family; a difference is significant at the "
                          f"family-wise level {alpha} when p_holm <= {alpha}. The verdicts of the arms table are the "
                          "unadjusted 95% CIs.")}


def aggregate_sentiment(
    *,
    dataset: str,
    arms: Sequence[str],
    predictions: Mapping[str, str | Sequence[str]],
    scores: Mapping[str, str | Sequence[str]],
    records: Mapping[str, str | Sequence[str]],
    sweeps: Mapping[str, str],
    references: str,
    manifest: str,
    settings: Mapping,
    out_json: str,
    out_md: str,
    out_png: str,
    seeds: Mapping[str, Sequence] | None = None,
) -> dict:
    """Build ``comparison.json`` / ``.md`` / ``.png`` of one dataset (see module doc). A failed calibration AUC
    check is reported (JSON, Markdown, :class:`SentimentCheckWarning`) with its numbers; the files are written.

    ``predictions`` / ``scores`` / ``records``: per arm one file, or one per training seed (``seeds[arm]`` names
    them; the first is the primary run). The arms × metrics table, McNemar and the sweep use the primary runs;
    :func:`seed_summary` adds accuracy over every seed with seed-aware CIs and paired tests. Holm's correction is
    applied to each family of pairwise tests (:func:`holm_families`)."""
    from leverplus.report.comparison import compare_arms

    def runs(m):
        return {a: ([v] if isinstance(v, (str, Path)) else list(v)) for a, v in m.items()}

    all_pred, all_scores, all_records = runs(predictions), runs(scores), runs(records)
    seeds = {a: list((seeds or {}).get(a) or [None] * len(all_pred[a])) for a in arms}
    predictions = {a: all_pred[a][0] for a in arms}
    scores = {a: all_scores[a][0] for a in arms}
    records = {a: all_records[a][0] for a in arms}

    metrics_cfg = settings.get("metrics", {})
    n_resamples, seed = int(metrics_cfg.get("n_resamples", 1000)), int(metrics_cfg.get("seed", 0))
    tol = float(metrics_cfg.get("auc_invariance_tol", 1e-9))
    refs = read_table(references)
    truth = refs.set_index("id")["label"].astype(str)
    pred = {a: _aligned(predictions[a], truth) for a in arms}
    specs, correct = _metric_specs(pred, truth)
    pairs = list(itertools.combinations(arms, 2))
    comparison = compare_arms(list(arms), specs, len(truth), pairs=pairs, n_resamples=n_resamples, seed=seed)
    mcnemar = [{"a": a, "b": b, **stats.mcnemar(correct[a], correct[b])} for a, b in pairs]
    arm_scores = {a: read_json(scores[a]) for a in arms}
    arm_records = {a: read_json(records[a]) for a in arms}

    sweep_rows: list[dict] = []
    for a in arms:
        if a in sweeps:
            sw = read_table(sweeps[a])
            meta = {p["label_pair"]: p for p in arm_records[a].get("pairs", [])}
            sweep_rows += verbalizer_table(sw, refs, pair_meta=meta, arm=a, n_resamples=n_resamples, seed=seed)
    invariance = auc_invariance(sweep_rows, tol=tol) if sweep_rows else None
    seed_res = seed_summary({a: [_aligned(f, truth) for f in all_pred[a]] for a in arms}, truth, seeds,
                            pairs=pairs, n_resamples=n_resamples, seed=seed)
    multiple = holm_families(comparison, mcnemar, seed_res)
    result = {
        "dataset": dataset,
        "n_test": int(len(truth)),
        "true_positive_rate": float((truth == POS).mean()),
        "arms": [{"arm": a, "name": ARM_NAMES.get(a, a)} for a in arms],
        "data": read_json(manifest),
        "settings": dict(settings),
        "scores": {a: {k: v for k, v in arm_scores[a].items() if k not in ("settings",)} for a in arms},
        "comparison": comparison,
        "mcnemar": mcnemar,
        "verbalizer": {"rows": sweep_rows, "spread": spread(sweep_rows) if sweep_rows else [],
                       "main_pair": settings.get("labels", {}).get("main")},
        "auc_invariance": invariance,
        "seeds": seed_res,
        "multiple_comparisons": multiple,
        "training": {a: arm_records[a] for a in arms},
        "training_other_seeds": {a: [read_json(f) for f in all_records[a][1:]] for a in arms if len(all_records[a]) > 1},
        "signature": next(iter(arm_scores.values()))["signature"] if arm_scores else None,
    }
    if invariance is not None and not invariance["passed"]:
        msg = invariance_message(invariance)
        invariance["warning"] = msg
        warnings.warn(msg, SentimentCheckWarning, stacklevel=2)
        print(f"WARNING: {msg}")
    md = sentiment_markdown(result)
    write_json(out_json, result)
    with atomic_write(out_md) as f:
        f.write(md)
    plot_sentiment(result, pred, truth, sweep_rows, out_png)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------------------------------
def _f(x, d=3):
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def _g(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3g}"


def _tokens(meta) -> str:
    if not meta:
        return "–"
    def one(v):
        return str(v[0]) if isinstance(v, (list, tuple)) and v[0] == v[-1] else (f"{v[0]}–{v[-1]}" if isinstance(v, (list, tuple)) else str(v))
    return f"{one(meta['pos'])}/{one(meta['neg'])}"


def sentiment_markdown(result: dict) -> str:
    from leverplus.report.comparison import comparison_markdown

    arms = [a["arm"] for a in result["arms"]]
    lines = [f"# Sentiment: {result['dataset']} — arms A–D, n = {result['n_test']} test items "
             f"(true positive rate {result['true_positive_rate']:.3f})", ""]
    lines.append("Arms: " + "; ".join(f"`{a}` = {ARM_NAMES.get(a, a)}" for a in arms) + ". Token embedding and LM "
                 "head frozen in every arm (digests below).")
    lines.append("")
    table = comparison_markdown(result["comparison"], title="Arms × metrics (95% paired-bootstrap CIs)",
                                signature=result.get("signature"))
    lines.append(table.replace("# ", "## ", 1) if table.startswith("# ") else table)
    mc = result.get("multiple_comparisons") or {}
    if mc:
        fam = mc["families"]
        lines += ["", "## Multiple comparisons", "", mc["statement"], "",
                  "| family | tests | significant after Holm (α = " + f"{mc['alpha']}) |", "|---|---|---|"]
        for name, f_ in fam.items():
            lines.append(f"| {name} ({f_['what']}) | {f_['tests']} | {f_['rejected']} |")
        lines += ["", "| a | b | metric | a − b [95% CI] | p | p (Holm) |", "|---|---|---|---|---|---|"]
        for pr in result["comparison"]["pairs"]:
            for m, c in pr["metrics"].items():
                ci = c.get("ci95") or [None, None]
                lines.append(f"| {pr['a']} | {pr['b']} | {m} | {_f(c.get('diff'))} [{_f(ci[0])}, {_f(ci[1])}] | "
                             f"{_g(c.get('p_value'))} | {_g(c.get('p_holm'))} |")
    lines += ["", "## McNemar (exact binomial when fewer than 25 discordant items)", "",
              "| a | b | a wrong, b right | a right, b wrong | p | p (Holm) |", "|---|---|---|---|---|---|"]
    for m in result["mcnemar"]:
        lines.append(f"| {m['a']} | {m['b']} | {m['b01']} | {m['b10']} | {m['p_value']:.3g} | {_g(m.get('p_holm'))} |")
    sd = result.get("seeds")
    if sd:
        lines += ["", "## Training seeds (accuracy over items and seeds)", "", sd["statement"] + ".", "",
                  "| arm | seeds | accuracy, mean over seeds [95% CI] | per seed |", "|---|---|---|---|"]
        for a, r in sd["arms"].items():
            per = ", ".join(f"{x['accuracy']:.3f}" for x in r["per_seed"])
            seeds_txt = "–" if r["seeds"] == [None] else ", ".join(str(x) for x in r["seeds"])
            lines.append(f"| {a} | {seeds_txt} | {_f(r['accuracy']['mean'])} [{_f(r['accuracy']['ci95'][0])}, "
                         f"{_f(r['accuracy']['ci95'][1])}] | {per} |")
        lines += ["", "| a | b | accuracy a − b [95% CI] | p | p (Holm) |", "|---|---|---|---|---|"]
        for pr in sd["pairs"]:
            lines.append(f"| {pr['a']} | {pr['b']} | {_f(pr['diff'])} [{_f(pr['ci95'][0])}, {_f(pr['ci95'][1])}] | "
                         f"{_g(pr['p_value'])} | {_g(pr.get('p_holm'))} |")
    lines += ["", "## Per class", "", "| arm | P(pos) | R(pos) | F1(pos) | P(neg) | R(neg) | F1(neg) |",
              "|---|---|---|---|---|---|---|"]
    for a in arms:
        pc = result["scores"][a]["per_class"]
        lines.append(f"| {a} | " + " | ".join(_f(pc[c][k]) for c in (POS, NEG) for k in ("precision", "recall", "f1"))
                     + " |")
    v = result["verbalizer"]
    if v["rows"]:
        lines += ["", f"## Verbalizer sweep (arms {', '.join(dict.fromkeys(r['arm'] for r in v['rows']))}; main pair "
                  f"{v['main_pair']})", "",
                  "| arm | pair | tokens pos/neg | scoring | accuracy [95% CI] | macro-F1 | AUC | positive share (true) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in v["rows"]:
            ci = r["accuracy_ci95"]
            lines.append(f"| {r['arm']} | {r['pair']} | {_tokens(r['label_tokens'])} | {VARIANT_NAMES.get(r['variant'], r['variant'])} "
                         f"| {_f(r['accuracy'])} [{_f(ci[0])}, {_f(ci[1])}] | {_f(r['macro_f1'])} | {_f(r['auc_roc'])} "
                         f"| {_f(r['positive_share'])} ({_f(r['true_positive_rate'])}) |")
        lines += ["", "Spread across label pairs (max − min):", "",
                  "| arm | scoring | accuracy | macro-F1 | AUC | positive share |", "|---|---|---|---|---|---|"]
        for s in v["spread"]:
            lines.append(f"| {s['arm']} | {VARIANT_NAMES.get(s['variant'], s['variant'])} | "
                         + " | ".join(f"{_f(s[m]['spread'])} ({s[m]['argmin']} → {s[m]['argmax']})"
                                      for m in ("accuracy", "macro_f1", "auc_roc", "positive_share")) + " |")
    inv = result.get("auc_invariance")
    if inv:
        lines += ["", "## Calibration leaves AUC unchanged", "", inv["statement"], "",
                  f"Checked: max |AUC(calibrated) − AUC(uncalibrated)| over {len(inv['checks'])} (arm, pair) cells = "
                  f"{inv['max_abs_delta']:.3g} (tolerance {inv['tolerance']:g}): "
                  f"{'holds' if inv['passed'] else 'FAILS'} (AUC from the stored margins)."]
        if not inv["passed"]:
            lines += ["", f"**Warning:** {inv.get('warning') or invariance_message(inv)}."]
    lines += ["", "## Training", "", "| arm | trainable parameters | epochs run (best) | frozen embed/lm_head unchanged |",
              "|---|---|---|---|"]
    for a in arms:
        rec = result["training"][a]
        names = rec.get("trainable_parameters") or []
        n_par = rec.get("n_trainable")
        ep = rec.get("epochs_run")
        best = rec.get("best_epoch")
        fr = rec.get("frozen_unchanged")
        lines.append(f"| {a} | {len(names)} tensors{f', {n_par:,} values' if n_par is not None else ''} | "
                     f"{ep if ep is not None else '–'} ({best if best is not None else '–'}) | "
                     f"{'yes' if fr else ('–' if fr is None else 'NO')} |")
    bench = next((result["training"][a].get("benchmark") for a in arms if result["training"][a].get("benchmark")), None)
    if bench:
        lim = bench.get("analytic_limit")
        lines += ["", f"Label scoring with prefix KV reuse vs one full forward per (item, label), same batching: "
                  f"{bench['ratio']}× faster on {bench['n_items']} items × {bench['n_labels']} labels"
                  + (f" (analytic limit {lim}× from the token positions each path runs)" if lim else "")
                  + f"; max |Δ score| {bench['max_abs_diff']:.2g}."]
    lines += ["", "Rescore any arm: `" + result["scores"][arms[0]].get("reproduce", "") + "` (same table cell).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------------------------------------------------
def plot_sentiment(result: dict, pred: Mapping[str, pd.DataFrame], truth: pd.Series, sweep_rows: Sequence[dict],
                   out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = (truth.to_numpy() == POS).astype(int)
    has_sweep = bool(sweep_rows)
    fig, axes = plt.subplots(1, 3 if has_sweep else 1, figsize=(18 if has_sweep else 6, 5), squeeze=False)
    ax = axes[0][0]
    for a, df in pred.items():
        fpr, tpr, _ = skm.roc_curve(y, df["score"].to_numpy(dtype=float))
        auc = result["comparison"]["scores"][a]["auc_roc"]["score"]
        ax.plot(fpr, tpr, label=f"{ARM_NAMES.get(a, a)} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, n = {len(y)}")
    ax.legend(fontsize=8, loc="lower right")
    if has_sweep:
        df = pd.DataFrame(sweep_rows)
        pairs = list(dict.fromkeys(df["pair"]))
        df = df[df["variant"].isin(PLOTTED_VARIANTS)]
        groups = list(dict.fromkeys(zip(df["arm"], df["variant"])))
        width = 0.8 / max(1, len(groups))
        x = np.arange(len(pairs))
        for k, (arm, var) in enumerate(groups):
            g = df[(df.arm == arm) & (df.variant == var)].set_index("pair").reindex(pairs)
            lo = g["accuracy"] - [c[0] for c in g["accuracy_ci95"]]
            hi = [c[1] for c in g["accuracy_ci95"]] - g["accuracy"]
            axes[0][1].bar(x + k * width, g["accuracy"], width, yerr=[lo, hi], capsize=2,
                           label=f"{arm} / {VARIANT_NAMES.get(var, var)}")
            axes[0][2].bar(x + k * width, g["positive_share"], width, label=f"{arm} / {VARIANT_NAMES.get(var, var)}")
        axes[0][2].axhline(result["true_positive_rate"], color="black", lw=1, ls="--", label="true positive rate")
        for a_, title, yl in ((axes[0][1], "verbalizer sweep: accuracy (95% CI)", "accuracy"),
                              (axes[0][2], "verbalizer sweep: share predicted positive", "share positive")):
            a_.set_xticks(x + 0.4 - width / 2)
            a_.set_xticklabels(_tick_labels(pairs), fontsize=8)
            a_.set(title=title, ylabel=yl, ylim=(0, 1))
        axes[0][2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


_ASCII_PAIRS = {"正面/负面": "zhengmian/fumian", "积极/消极": "jiji/xiaoji", "好评/差评": "haoping/chaping",
                "好/坏": "hao/huai"}


def _tick_labels(pairs: Sequence[str]) -> list[str]:
    """Pair names drawable without a CJK font (none is assumed installed): pinyin for the default pairs, else
    ``pair k``; the Markdown table carries the characters."""
    return [p if p.isascii() else _ASCII_PAIRS.get(p, f"pair {k + 1}") for k, p in enumerate(pairs)]
