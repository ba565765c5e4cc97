"""One arms × metrics comparison for every track: scores with 95% CIs, paired differences with verdicts.

``compare_arms`` draws bootstrap item indices once (:func:`leverplus.metrics.stats.resample_indices`, so a given
``(n_items, n_resamples, seed)`` gives the same resamples as every other statistic in the project) and evaluates
every metric of every arm on those same indices: the resamples are *paired* across arms and metrics. Each
metric's ``score(arm, idx)`` recomputes the corpus-level value on the items ``idx`` (with repeats), so corpus
BLEU, CIDEr-D, AUC … are bootstrapped correctly, not averaged.

Efficiency. 1000 resamples × 6 metrics × 6 arms = 36 000 score calls. When a metric is a function of per-item
*sums* — a mean of per-item values, or sacrebleu-style sufficient statistics (BLEU's matches/totals per order and
lengths, chrF's n-gram counts, TER's edits/ref-words) — build it with

* :meth:`MetricSpec.from_per_item` (``values_by_arm[arm]`` = per-item values; score = mean), or
* :meth:`MetricSpec.from_stats` (``stats_by_arm[arm]`` = ``[n_items, k]`` per-item statistics; score =
  ``finalize(column sums)``, e.g. ``lambda s: BLEU.compute_bleu(s[:4], s[4:8], s[8], s[9]).score``),

which also provide a vectorised ``score_block(arm, idx_block)`` over a whole block of resamples (one numpy
gather-and-sum), so the full comparison takes well under a second on 300 items. Any other metric just gives
``score`` and is called once per resample.

Verdict of a pair ``(a, b)`` on a metric: the 95% percentile CI of ``a − b`` excludes 0 → ``"better"`` (a better
than b, oriented by ``higher_is_better``) or ``"worse"``; otherwise ``"inside the noise"``; ``"undefined"`` when the
CI cannot be computed (the metric is undefined on every resample, e.g. not applicable to an arm).
The p-value is the two-sided paired-bootstrap one of :func:`leverplus.metrics.stats.paired_bootstrap`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from leverplus.metrics.stats import format_with_ci, resample_indices

__all__ = ["MetricSpec", "compare_arms", "comparison_markdown", "verdict", "VERDICTS"]

VERDICTS = ("better", "worse", "inside the noise", "undefined")
METHOD = "paired-bootstrap-percentile"


@dataclass
class MetricSpec:
    name: str
    score: Callable[[str, np.ndarray], float]
    higher_is_better: bool = True
    label: str | None = None
    note: str | None = None
    digits: int = 2
    # optional vectorised form: score_block(arm, idx_block [k, n]) -> array [k] (must agree with score row by row)
    score_block: Callable[[str, np.ndarray], np.ndarray] | None = None

    @property
    def header(self) -> str:
        return self.label or self.name

    @classmethod
    def from_per_item(cls, name: str, values_by_arm: Mapping[str, Sequence[float]], *, scale: float = 1.0,
                      **kwargs) -> "MetricSpec":
        """A mean of per-item values (times ``scale``, e.g. 100 for accuracy in %). NaN items are not allowed:
        drop them (and say so) before building the spec, or use a custom ``score``."""
        vals = {a: np.asarray(v, dtype=float) for a, v in values_by_arm.items()}
        for a, v in vals.items():
            if v.ndim != 1:
                raise ValueError(f"{name}: per-item values of arm {a!r} must be 1-D, got shape {v.shape}")
            if np.isnan(v).any():
                raise ValueError(f"{name}: arm {a!r} has NaN per-item values")

        def score(arm: str, idx: np.ndarray) -> float:
            return scale * float(vals[arm][idx].mean())

        def score_block(arm: str, block: np.ndarray) -> np.ndarray:
            return scale * vals[arm][block].mean(axis=1)

        return cls(name=name, score=score, score_block=score_block, **kwargs)

    @classmethod
    def from_stats(cls, name: str, stats_by_arm: Mapping[str, np.ndarray], finalize: Callable[[np.ndarray], float],
                   **kwargs) -> "MetricSpec":
        """A corpus metric computed from summed per-item sufficient statistics: ``finalize(stats[idx].sum(0))``."""
        st = {a: np.asarray(s, dtype=float) for a, s in stats_by_arm.items()}
        for a, s in st.items():
            if s.ndim != 2:
                raise ValueError(f"{name}: statistics of arm {a!r} must be [n_items, k], got shape {s.shape}")

        def score(arm: str, idx: np.ndarray) -> float:
            return float(finalize(st[arm][idx].sum(axis=0)))

        def score_block(arm: str, block: np.ndarray) -> np.ndarray:
            sums = st[arm][block].sum(axis=1)  # [k, n_stats]
            return np.array([float(finalize(row)) for row in sums])

        return cls(name=name, score=score, score_block=score_block, **kwargs)


def verdict(ci95, higher_is_better: bool = True) -> str:
    """``"better"`` / ``"worse"`` when the CI of ``a − b`` excludes 0 (oriented), else ``"inside the noise"``."""
    lo, hi = float(ci95[0]), float(ci95[1])
    if math.isnan(lo) or math.isnan(hi):
        return "undefined"
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return "inside the noise"


def _percentile_ci(dist: np.ndarray, confidence: float) -> list[float]:
    finite = dist[~np.isnan(dist)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def _finite_or_none(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def compare_arms(arms: list[str], metrics: list[MetricSpec], n_items: int, *, pairs: list[tuple[str, str]],
                 n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Scores per arm × metric and paired differences per pair × metric on the same resampled items.

    Returns a JSON-able dict::

        {"arms": [...], "metrics": [{"name", "label", "higher_is_better", "note", "digits"}],
         "n_items", "n_resamples", "seed", "confidence", "method": "paired-bootstrap-percentile",
         "scores": {arm: {metric: {"score", "n", "ci95"}}},
         "pairs": [{"a", "b", "metrics": {metric: {"diff", "ci95", "p_value", "n", "verdict"}}}]}

    ``diff`` is ``a − b``. Undefined values (NaN) are written as ``null``.
    """
    arms = list(arms)
    if len(set(arms)) != len(arms) or not arms:
        raise ValueError(f"arms must be distinct and non-empty, got {arms}")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"metric names must be distinct and non-empty, got {names}")
    pairs = [tuple(p) for p in pairs]
    for a, b in pairs:
        if a not in arms or b not in arms or a == b:
            raise ValueError(f"pair ({a!r}, {b!r}) must name two different arms of {arms}")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    n_items = int(n_items)
    full = np.arange(n_items)
    point = {m.name: {a: float(m.score(a, full)) for a in arms} for m in metrics}
    dist = {m.name: {a: np.empty(n_resamples) for a in arms} for m in metrics}
    pos = 0
    for block in resample_indices(n_items, n_resamples, seed):
        k = len(block)
        for m in metrics:
            for a in arms:
                if m.score_block is not None:
                    dist[m.name][a][pos : pos + k] = np.asarray(m.score_block(a, block), dtype=float)
                else:
                    dist[m.name][a][pos : pos + k] = [float(m.score(a, row)) for row in block]
        pos += k
    scores = {a: {} for a in arms}
    for m in metrics:
        for a in arms:
            ci = _percentile_ci(dist[m.name][a], confidence)
            scores[a][m.name] = {"score": _finite_or_none(point[m.name][a]), "n": n_items,
                                 "ci95": [_finite_or_none(c) for c in ci]}
    pair_out = []
    for a, b in pairs:
        per = {}
        for m in metrics:
            diff = point[m.name][a] - point[m.name][b]
            d = dist[m.name][a] - dist[m.name][b]
            ci = _percentile_ci(d, confidence)
            if math.isnan(diff) or math.isnan(ci[0]):
                p = float("nan")
            else:
                extreme = int(np.sum(np.abs(d - diff) >= abs(diff) - 1e-12))
                p = float(min(1.0, (1 + extreme) / (1 + n_resamples)))
            per[m.name] = {"diff": _finite_or_none(diff), "ci95": [_finite_or_none(c) for c in ci],
                           "p_value": _finite_or_none(p), "n": n_items,
                           "verdict": verdict(ci, m.higher_is_better)}
        pair_out.append({"a": a, "b": b, "metrics": per})
    return {
        "arms": arms,
        "metrics": [{"name": m.name, "label": m.header, "higher_is_better": m.higher_is_better, "note": m.note,
                     "digits": m.digits} for m in metrics],
        "n_items": n_items,
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "method": METHOD,
        "scores": scores,
        "pairs": pair_out,
    }


def _cell(value, ci, digits: int) -> str:
    if value is None:
        return "n/a"
    if ci is None or ci[0] is None or ci[1] is None:
        return f"{value:.{digits}f}"
    return format_with_ci(value, ci, digits=digits)


def comparison_markdown(result: dict, *, title: str, signature: str | None = None) -> str:
    """Markdown: arms × metrics (``score [lo, hi]``, n), then paired differences ``a − b`` with p and verdict."""
    metrics = result["metrics"]
    conf = int(round(100 * result["confidence"]))
    lines = [f"# {title}", ""]
    lines.append(f"n = {result['n_items']} items per arm; {conf}% percentile CIs and paired differences by "
                 f"bootstrap over items ({result['method']}, {result['n_resamples']} resamples, seed "
                 f"{result['seed']}; the same resampled items for every arm and metric).")
    lines.append("")
    arrows = {True: "↑", False: "↓"}
    lines.append("| arm | " + " | ".join(f"{m['label']} {arrows[m['higher_is_better']]}" for m in metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for arm in result["arms"]:
        cells = [_cell(result["scores"][arm][m["name"]]["score"], result["scores"][arm][m["name"]]["ci95"],
                       m["digits"]) for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines.append("")
    if result["pairs"]:
        lines.append(f"Paired differences (a − b, {conf}% CI, two-sided bootstrap p); verdict from the CI, "
                     "oriented so that \"better\" means a is better than b:")
        lines.append("")
        lines.append("| a − b | metric | diff [CI] | p | verdict |")
        lines.append("|---|---|---|---|---|")
        for pair in result["pairs"]:
            for m in metrics:
                r = pair["metrics"][m["name"]]
                p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
                lines.append(f"| {pair['a']} − {pair['b']} | {m['label']} | {_cell(r['diff'], r['ci95'], m['digits'])}"
                             f" | {p} | {r['verdict']} |")
        lines.append("")
    notes = [m for m in metrics if m.get("note")]
    if notes:
        lines.append("Notes:")
        lines.extend(f"- {m['label']}: {m['note']}" for m in notes)
        lines.append("")
    if signature:
        lines.append(f"Signature: `{signature}`")
        lines.append("")
    return "\n".join(lines)
