"""Metric meta-evaluation: metric x metric (and metric x human) agreement with bootstrap CIs and PERM-BOTH tests.

Conventions follow the WMT metrics task / google-research mt-metrics-eval (this is the project's own code):

* Scores of one language pair are matrices ``(n_segments, n_systems)``; every metric is oriented higher = better
  (TER is negated) before any correlation.
* Coefficients: Pearson, Spearman, Kendall tau-b, and ``acc23`` = (concordant + pairs tied in both) / all pairs
  (Deutsch et al. 2023, "Ties Matter"); between two metrics epsilon = 0, against human scores tie-calibrated by
  :func:`acc23_tie_calibrated` (mt-metrics-eval's ``KendallWithTiesOpt``).
* Missing cells (NaN: a partial human score, an unparseable judge reply) are left out per cell, as mt-metrics-eval
  filters None gold scores.
* Grouping: ``none`` (segment level, all segment x system cells pooled), ``item`` (one correlation across the
  systems of each segment, averaged over segments; undefined ones (NaN) dropped, as mt-metrics-eval does by
  default), ``system`` (system-level scores, only with >= 3 systems; sacrebleu metrics recompute their *corpus*
  score from summed sufficient statistics, other metrics average their segment scores).
* CIs: percentile bootstrap over segments (all systems of a drawn segment move together), seeded.  For grouping
  ``none`` the resampled Kendall / acc23 / Spearman / Pearson are computed from segment-aggregated pair counts and
  ranks (quadratic forms in the resample counts), which equals recomputing them on the resampled vectors exactly
  (tests check this against scipy on explicit resamples).
* Differences between two correlations ``corr(a, b) - corr(c, d)`` on the same cells: PERM-BOTH (Deutsch et al.
  2021, as in mt-metrics-eval's ``PermutationSigDiff``): z-score each metric over the cells, then for each
  permutation swap the tuple ``(a_i, b_i)`` with ``(c_i, d_i)`` in each cell independently with probability 1/2.
  With a shared metric (``a == c``, e.g. the human scores) this is exactly mt-metrics-eval's test.  p-values:
  two-sided ``(1 + #{|d*| >= |d|}) / (1 + k)`` and one-sided ``#{d* >= d} / k`` (mt-metrics-eval's, used for the
  WMT-style significance clusters).  Without a shared metric PERM-BOTH is not exact; :func:`bootstrap_diff` is used.
* Min-max normalisation of a metric (``(x - min) / (max - min)``) is an increasing affine map: it changes no Pearson,
  Spearman or Kendall value (tests show it).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from leverplus.metrics.stats import resample_indices

COEFFICIENTS = ("pearson", "spearman", "kendall", "acc23")
GROUPINGS = ("none", "item", "system")


# ----------------------------------------------------------------------------------------------------------------
# plain coefficients (one pair of vectors)
# ----------------------------------------------------------------------------------------------------------------
def kendall_counts(x, y) -> dict:
    """Pair counts of two vectors: concordant, discordant, tied only in x, only in y, tied in both, total (O(n^2))."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    iu = np.triu_indices(len(x), 1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    prod = sx * sy
    return {"con": int(np.sum(prod > 0)), "dis": int(np.sum(prod < 0)),
            "xtie_only": int(np.sum((sx == 0) & (sy != 0))), "ytie_only": int(np.sum((sy == 0) & (sx != 0))),
            "tie_both": int(np.sum((sx == 0) & (sy == 0))), "pairs": int(len(prod))}


def tau_b(x, y) -> float:
    c = kendall_counts(x, y)
    xt = c["xtie_only"] + c["tie_both"]
    yt = c["ytie_only"] + c["tie_both"]
    den = math.sqrt(c["pairs"] - xt) * math.sqrt(c["pairs"] - yt)
    return float("nan") if den == 0 else (c["con"] - c["dis"]) / den


def acc23(x, y) -> float:
    c = kendall_counts(x, y)
    return float("nan") if c["pairs"] == 0 else (c["con"] + c["tie_both"]) / c["pairs"]


def _constant(v) -> bool:
    v = np.asarray(v)
    return v.size == 0 or bool(np.all(v == v.flat[0]))


def correlation(x, y, coef: str) -> float:
    """One coefficient of two vectors; Pearson/Spearman of a constant vector is NaN (as mt-metrics-eval keeps it)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if coef in ("pearson", "spearman") and (_constant(x) or _constant(y)):
        return float("nan")
    if coef == "pearson":
        return float(sps.pearsonr(x, y)[0])
    if coef == "spearman":
        return float(sps.spearmanr(x, y)[0])
    if coef == "kendall":
        if len(x) > 200:
            return float(sps.kendalltau(x, y, variant="b")[0])
        return tau_b(x, y)
    if coef == "acc23":
        return acc23(x, y)
    raise ValueError(f"unknown coefficient {coef!r}; choose from {COEFFICIENTS}")


# ----------------------------------------------------------------------------------------------------------------
# row-wise coefficients (many small vectors at once: items, or bootstrap resamples of system scores)
# ----------------------------------------------------------------------------------------------------------------
def _rowwise_pearson(X, Y):
    Xc = X - X.mean(axis=1, keepdims=True)
    Yc = Y - Y.mean(axis=1, keepdims=True)
    den = np.sqrt((Xc**2).sum(1) * (Yc**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc * Yc).sum(1) / den
    const = (np.ptp(X, axis=1) == 0) | (np.ptp(Y, axis=1) == 0)
    r[const] = np.nan
    return np.clip(r, -1, 1)


def rowwise_nan(X, Y, coef: str, eps: float = 0.0) -> np.ndarray:
    """:func:`rowwise` where cells may be NaN: each row uses the cells finite in both (per-cell filtering, as
    mt-metrics-eval filters None human scores); a row with fewer than 2 such cells is NaN."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    ok = np.isfinite(X) & np.isfinite(Y)
    full = ok.all(axis=1)
    out = np.full(X.shape[0], np.nan)
    if full.any():
        out[full] = rowwise(X[full], Y[full], coef, eps)
    for r in np.flatnonzero(~full):
        if ok[r].sum() >= 2:
            out[r] = rowwise(X[r, ok[r]][None], Y[r, ok[r]][None], coef, eps)[0]
    return out


def rowwise(X, Y, coef: str, eps: float = 0.0) -> np.ndarray:
    """Coefficient per row of two (rows, k) matrices.  ``eps`` (acc23 only): pairs whose Y values differ by at most
    eps count as tied in Y (tie calibration, Deutsch et al. 2023)."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    if coef == "pearson":
        return _rowwise_pearson(X, Y)
    if coef == "spearman":
        r = _rowwise_pearson(sps.rankdata(X, axis=1), sps.rankdata(Y, axis=1))
        const = (np.ptp(X, axis=1) == 0) | (np.ptp(Y, axis=1) == 0)
        r[const] = np.nan
        return r
    iu = np.triu_indices(X.shape[1], 1)
    sx = np.sign(X[:, :, None] - X[:, None, :])[:, iu[0], iu[1]]
    dy = (Y[:, :, None] - Y[:, None, :])[:, iu[0], iu[1]]
    sy = np.sign(dy) * (np.abs(dy) > eps) if eps > 0 else np.sign(dy)
    prod = sx * sy
    pairs = sx.shape[1]
    con, dis = (prod > 0).sum(1), (prod < 0).sum(1)
    tb = ((sx == 0) & (sy == 0)).sum(1)
    if coef == "acc23":
        return (con + tb) / pairs
    if coef == "kendall":
        xt, yt = (sx == 0).sum(1), (sy == 0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            den = np.sqrt((pairs - xt).astype(float)) * np.sqrt((pairs - yt).astype(float))
            r = (con - dis) / den
        r[den == 0] = np.nan
        return r
    raise ValueError(f"unknown coefficient {coef!r}")


def _nanmean(v) -> float:
    v = np.asarray(v, float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# the score matrices of one language pair
# ----------------------------------------------------------------------------------------------------------------
def _init_scores(obj, matrices: dict, systems: Sequence[str], system_scorers: dict | None) -> None:
    """The score matrices (one shape for all metrics), system names and system-level scorers of a pair's scores."""
    shapes = {np.shape(m) for m in matrices.values()}
    if len(shapes) != 1:
        raise ValueError(f"score matrices differ in shape: {shapes}")
    obj.M = {k: np.asarray(v, float) for k, v in matrices.items()}
    obj.n_seg, obj.n_sys = next(iter(shapes))
    obj.systems = list(systems) or [f"sys{i}" for i in range(obj.n_sys)]
    obj.scorers = system_scorers or {}


class PairScores:
    """Oriented score matrices ``{metric: (n_seg, n_sys)}`` of one language pair, plus optional system-level scorers
    ``{metric: f(counts (R, n_seg)) -> (R, n_sys)}`` (weighted by how often each segment is drawn)."""

    def __init__(self, matrices: dict[str, np.ndarray], *, systems: Sequence[str] = (),
                 system_scorers: dict[str, Callable] | None = None):
        _init_scores(self, matrices, systems, system_scorers)

    @property
    def metrics(self) -> list[str]:
        return list(self.M)

    def system_scores(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """(R, n_sys) system-level scores for resample counts (R, n_seg)."""
        if metric in self.scorers:
            return self.scorers[metric](counts)
        M = self.M[metric]
        ok = np.isfinite(M)
        if ok.all():
            return (counts @ M) / counts.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # per system: the mean over its scored segments
            return (counts @ np.where(ok, M, 0.0)) / (counts @ ok.astype(float))


def _counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) how often each segment is drawn in each bootstrap resample (stats.resample_indices' draws)."""
    out = []
    for block in resample_indices(n, n_resamples, seed):
        c = np.zeros((len(block), n))
        np.add.at(c, (np.repeat(np.arange(len(block)), n), block.ravel()), 1)
        out.append(c)
    return np.vstack(out)


class _NoneLevel:
    """Exact resampled coefficients at grouping ``none`` from segment-aggregated statistics, over the cells in
    ``valid`` (S, K) (default: all; a pair with missing cells, e.g. partial human scores, uses the cells both
    metrics have).  ``G`` (S, cells) says which segment each cell belongs to."""

    def __init__(self, ps: PairScores, counts: np.ndarray, valid: np.ndarray | None = None):
        self.ps, self.W = ps, counts
        S, k = ps.n_seg, ps.n_sys
        valid = np.ones((S, k), bool) if valid is None else np.asarray(valid, bool)
        self.idx = np.flatnonzero(valid.ravel())
        self.seg_of = self.idx // k
        self.G = np.zeros((S, self.idx.size))
        self.G[self.seg_of, np.arange(self.idx.size)] = 1.0
        self.Wp = counts[:, self.seg_of]  # (R, N) weight of each cell
        self.N = self.Wp.sum(1)  # cells per resample
        self._ranks: dict[str, np.ndarray] = {}
        self._sign: dict = {}
        self._mom: dict = {}

    def _flat(self, m):
        return self.ps.M[m].reshape(-1)[self.idx]

    def ranks(self, m):
        """(R, N) midrank of every cell within each resample."""
        if m not in self._ranks:
            x = self._flat(m)
            less = (x[None, :] < x[:, None]).astype(float)  # less[i, j] = x_j < x_i
            eq = (x[None, :] == x[:, None]).astype(float)
            L = self.G @ less.T  # (S, N): cells of segment s below cell i
            E = self.G @ eq.T
            self._ranks[m] = self.W @ L + (self.W @ E + 1) / 2
        return self._ranks[m]

    def sign(self, m, eps: float = 0.0):
        if (m, eps) not in self._sign:
            x = self._flat(m)
            d = x[:, None] - x[None, :]
            self._sign[(m, eps)] = np.sign(d) * (np.abs(d) > eps) if eps > 0 else np.sign(d)
        return self._sign[(m, eps)]

    def _agg(self, P):
        """Segment x segment sums of a cell x cell matrix."""
        return self.G @ np.asarray(P, float) @ self.G.T

    def _quad(self, A):
        return ((self.W @ A) * self.W).sum(1)

    def _moments(self, key, X):
        """(sum w x, sum w x^2) per resample of a (R, N) or (N,) cell matrix, cached."""
        if key not in self._mom:
            if X.ndim == 1:  # fixed values: aggregate per segment first
                self._mom[key] = (self.W @ (self.G @ X), self.W @ (self.G @ X**2))
            else:
                self._mom[key] = ((self.Wp * X).sum(1), (self.Wp * X**2).sum(1))
        return self._mom[key]

    def _wpearson(self, ka, X, kb, Y):
        sx, sxx = self._moments(ka, X)
        sy, syy = self._moments(kb, Y)
        if X.ndim == 1:
            sxy = self.W @ (self.G @ (X * Y))
        else:
            sxy = np.einsum("rn,rn,rn->r", self.Wp, X, Y)
        n = self.N
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (sxy - sx * sy / n) / np.sqrt((sxx - sx**2 / n) * (syy - sy**2 / n))
        return np.clip(r, -1, 1)

    def coef(self, a, b, coef, eps: float = 0.0):
        if coef == "pearson":
            return self._wpearson(("v", a), self._flat(a), ("v", b), self._flat(b))
        if coef == "spearman":
            return self._wpearson(("r", a), self.ranks(a), ("r", b), self.ranks(b))
        sa, sb = self.sign(a), self.sign(b, eps if coef == "acc23" else 0.0)
        n0 = self.N * (self.N - 1) / 2
        self_pairs = self.N  # each drawn cell paired with itself is not a pair
        if coef == "acc23":
            good = self._agg(((sa * sb) > 0) | ((sa == 0) & (sb == 0)))
            # ordered pairs over all drawn copies, minus each copy with itself (tied in both), halved
            return ((self._quad(good) - self_pairs) / 2) / n0
        if coef == "kendall":
            cd = self._quad(self._agg(sa * sb)) / 2
            ta = (self._quad(self._agg(sa == 0)) - self_pairs) / 2
            tb = (self._quad(self._agg(sb == 0)) - self_pairs) / 2
            with np.errstate(invalid="ignore", divide="ignore"):
                return cd / np.sqrt(n0 - ta) / np.sqrt(n0 - tb)
        raise ValueError(coef)


def point(ps: PairScores, a: str, b: str, coef: str, grouping: str) -> float:
    """The coefficient between metrics a and b (a may be 'human' if it is one of the matrices)."""
    A, B = ps.M[a], ps.M[b]
    if grouping == "none":
        ok = np.isfinite(A.ravel()) & np.isfinite(B.ravel())
        return correlation(A.ravel()[ok], B.ravel()[ok], coef)
    if grouping == "item":
        return _nanmean(rowwise_nan(A, B, coef))
    if grouping == "system":
        ones = np.ones((1, ps.n_seg))
        return float(rowwise(ps.system_scores(a, ones), ps.system_scores(b, ones), coef)[0])
    raise ValueError(f"unknown grouping {grouping!r}")


def _percentile(dist, confidence=0.95):
    d = np.asarray(dist, float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return [float("nan"), float("nan")]
    a = (1 - confidence) / 2
    lo, hi = np.percentile(d, [100 * a, 100 * (1 - a)])
    return [float(lo), float(hi)]


def matrices(ps: PairScores, *, coefficients=COEFFICIENTS, groupings=GROUPINGS, n_resamples: int = 1000,
             seed: int = 0, confidence: float = 0.95, metrics: Sequence[str] | None = None) -> dict:
    """``{grouping: {coef: {"metrics", "value" [m][m], "ci95" [m][m][2]}}}`` plus the bootstrap settings."""
    names = list(metrics or ps.metrics)
    counts = _counts(ps.n_seg, n_resamples, seed)
    # row 0: the observed data (every segment once); the point estimate comes out of the same computation
    counts = np.vstack([np.ones((1, ps.n_seg)), counts])
    out: dict = {"n_segments": ps.n_seg, "n_systems": ps.n_sys, "systems": ps.systems, "metrics": names,
                 "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": confidence,
                               "unit": "segment", "method": "percentile"}, "levels": {}}
    dist_of = _Distributions(ps, counts)
    for g in groupings:
        if g == "system" and ps.n_sys < 3:
            out["levels"][g] = {"status": "not applicable", "reason": f"{ps.n_sys} systems (< 3)"}
            continue
        out["levels"][g] = {}
        for coef in coefficients:
            k = len(names)
            val = np.full((k, k), np.nan)
            ci = np.full((k, k, 2), np.nan)
            for i, j in itertools.combinations_with_replacement(range(k), 2):
                a, b = names[i], names[j]
                if i == j:  # a metric with itself
                    x = ps.M[a][np.isfinite(ps.M[a])]
                    const = x.size == 0 or bool(np.ptp(x) == 0)
                    val[i, i] = float("nan") if const and coef != "acc23" else 1.0
                    ci[i, i] = [val[i, i], val[i, i]]
                    continue
                dist = dist_of(a, b, coef, g)
                v, dist = float(dist[0]), dist[1:]
                lohi = _percentile(dist, confidence)
                val[i, j] = val[j, i] = v
                ci[i, j] = ci[j, i] = lohi
            out["levels"][g][coef] = {"value": val.tolist(), "ci95": ci.tolist()}
    return out


class _Distributions:
    """``(a, b, coef, grouping) -> (R + 1,)``: the coefficient on the observed data (row 0 of ``counts``, all ones)
    and on every bootstrap resample of segments, the same draws for every metric pair.  Cells missing in a or b
    (NaN) are left out per cell."""

    def __init__(self, ps: PairScores, counts: np.ndarray):
        self.ps, self.counts = ps, counts
        self._none: dict[bytes, _NoneLevel] = {}
        self._item: dict = {}
        self._sys: dict = {}

    def none_level(self, a, b) -> _NoneLevel:
        valid = np.isfinite(self.ps.M[a]) & np.isfinite(self.ps.M[b])
        key = valid.tobytes()
        if key not in self._none:
            self._none[key] = _NoneLevel(self.ps, self.counts, valid)
        return self._none[key]

    def sys_scores(self, m):
        if m not in self._sys:
            self._sys[m] = self.ps.system_scores(m, self.counts)
        return self._sys[m]

    def __call__(self, a, b, coef, grouping, eps: float = 0.0):
        if grouping == "none":
            return self.none_level(a, b).coef(a, b, coef, eps)
        if grouping == "item":
            key = (a, b, coef, eps)
            if key not in self._item:
                self._item[key] = rowwise_nan(self.ps.M[a], self.ps.M[b], coef, eps)
            per = self._item[key]
            ok = ~np.isnan(per)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (self.counts[:, ok] @ per[ok]) / self.counts[:, ok].sum(1)
        if grouping == "system":
            return rowwise_nan(self.sys_scores(a), self.sys_scores(b), coef, eps)
        raise ValueError(f"unknown grouping {grouping!r}")


# ----------------------------------------------------------------------------------------------------------------
# tie-calibrated acc23 (mt-metrics-eval's KendallWithTiesOpt, sample_rate 1: every pair)
# ----------------------------------------------------------------------------------------------------------------
def _rows(H, M, grouping):
    """The (human, metric) vectors that are correlated: one row of all cells (none), one per segment (item)."""
    H, M = np.asarray(H, float), np.asarray(M, float)
    if grouping == "none":
        H, M = H.reshape(1, -1), M.reshape(1, -1)
    out = []
    for h, m in zip(H, M):
        ok = np.isfinite(h) & np.isfinite(m)
        if ok.sum() >= 2:
            out.append((h[ok], m[ok]))
    return out


def acc23_tie_calibrated(H, M, grouping: str = "none") -> tuple[float, float]:
    """(acc23, epsilon): the tie threshold on the *metric* that maximises acc23 against the human scores, and that
    acc23 -- mt-metrics-eval's ``KendallWithTiesOpt(variant='acc23', sample_rate=1.0)`` (Deutsch et al. 2023):
    a metric pair counts as tied when its scores differ by at most epsilon; candidates are 0 and every pairwise
    metric difference; the first (smallest) maximiser wins; rows (items) with a pair each count once in the mean.
    ``H``, ``M``: (rows, k) matrices (NaN = missing, filtered per cell); grouping 'none' pools every cell,
    'item' (or the rows of a system-level (1, n_sys) matrix) averages over rows."""
    rows = _rows(H, M, grouping)
    if not rows:
        return float("nan"), float("nan")
    diffs, deltas, base = [], [], 0.0
    for h, m in rows:
        iu = np.triu_indices(len(h), 1)
        dh = np.sign(h[iu[0]] - h[iu[1]])
        dm = m[iu[0]] - m[iu[1]]
        sm = np.sign(dm)
        good = ((dh * sm) > 0) | ((dh == 0) & (sm == 0))
        w = 1.0 / (len(dh) * len(rows))
        base += good.sum() * w
        diffs.append(np.abs(dm))
        deltas.append(((dh == 0).astype(float) - good) * w)  # a pair turned into a metric tie
    d = np.concatenate(diffs)
    delta = np.concatenate(deltas)
    order = np.argsort(d, kind="stable")
    d, cum = d[order], base + np.cumsum(delta[order])
    last = np.r_[d[1:] != d[:-1], True]  # the last pair of each distinct difference
    thresholds = np.r_[0.0, d[last]]
    taus = np.r_[base, cum[last]]
    if d[0] == 0:  # threshold 0 already holds the pairs tied in the metric
        thresholds, taus = thresholds[1:], taus[1:]
    best = int(np.nanargmax(taus))
    return float(taus[best]), float(thresholds[best])


def acc23_calibrated_ci(ps: PairScores, human: str, metric: str, grouping: str, *, n_resamples: int = 1000,
                        seed: int = 0, confidence: float = 0.95) -> dict:
    """Tie-calibrated acc23 of ``metric`` against ``human`` (epsilon optimised on the observed data, as
    mt-metrics-eval reports it) with a percentile bootstrap CI over segments in which epsilon is held fixed (the
    CI leaves out the epsilon search's own variability)."""
    if grouping == "system":
        ones = np.ones((1, ps.n_seg))
        H, M = ps.system_scores(human, ones), ps.system_scores(metric, ones)
    else:
        H, M = ps.M[human], ps.M[metric]
    val, eps = acc23_tie_calibrated(H, M, grouping)
    counts = np.vstack([np.ones((1, ps.n_seg)), _counts(ps.n_seg, n_resamples, seed)])
    dist = _Distributions(ps, counts)(human, metric, "acc23", grouping, eps=eps)
    return {"value": val, "epsilon": eps, "ci95": _percentile(dist[1:], confidence),
            "check": float(dist[0]), "method": "KendallWithTiesOpt (acc23, sample_rate 1); CI: epsilon fixed"}


# ----------------------------------------------------------------------------------------------------------------
# PERM-BOTH
# ----------------------------------------------------------------------------------------------------------------
def _z(v):
    v = np.asarray(v, float)
    ok = np.isfinite(v)
    sd = v[ok].std() if ok.any() else 0.0
    return (v - (v[ok].mean() if ok.any() else 0.0)) / (sd if sd > 0 else 1.0)


def _corr_rows(X, Y, coef, grouping, n_sys):
    """Coefficient for each row of (R, N) matrices of flattened cells (segment-major, n_sys per segment)."""
    if grouping == "none":
        keep = np.isfinite(X).all(0) & np.isfinite(Y).all(0)
        X, Y = X[:, keep], Y[:, keep]
        if coef == "pearson":
            return _rowwise_pearson(X, Y)
        if coef == "spearman":
            return _rowwise_pearson(sps.rankdata(X, axis=1), sps.rankdata(Y, axis=1))
        return np.array([correlation(x, y, coef) for x, y in zip(X, Y)])
    if grouping == "item":
        R, N = X.shape
        per = rowwise_nan(X.reshape(-1, n_sys), Y.reshape(-1, n_sys), coef).reshape(R, -1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(per, axis=1)
    if grouping == "system":
        R, N = X.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return rowwise(np.nanmean(X.reshape(R, -1, n_sys), 1), np.nanmean(Y.reshape(R, -1, n_sys), 1), coef)
    raise ValueError(grouping)


def perm_both(ps: PairScores, pair1: tuple[str, str], pair2: tuple[str, str], *, coef: str = "pearson",
              grouping: str = "none", n_permutations: int = 1000, seed: int = 0, block: int = 250) -> dict:
    """PERM-BOTH test of ``corr(pair1) - corr(pair2)`` (module docstring).  System level uses mean segment scores of
    the z-scored metrics (as mt-metrics-eval's test does on its vectors)."""
    if not set(pair1) & set(pair2):
        raise ValueError(f"PERM-BOTH needs a metric shared by both pairs ({pair1} vs {pair2}); without one it is "
                         f"not exact: use bootstrap_diff")
    common = np.ones(ps.M[pair1[0]].size, bool)
    for m in (*pair1, *pair2):  # per cell: the cells every metric of both pairs has
        common &= np.isfinite(ps.M[m].ravel())
    a, b, c, d = (np.where(common, _z(np.where(common, ps.M[m].ravel(), np.nan)), np.nan) for m in (*pair1, *pair2))
    n = a.size
    obs = float(_corr_rows(a[None], b[None], coef, grouping, ps.n_sys)[0]
                - _corr_rows(c[None], d[None], coef, grouping, ps.n_sys)[0])
    rng = np.random.default_rng(seed)
    diffs = []
    done = 0
    while done < n_permutations:
        k = min(block, n_permutations - done)
        swap = rng.random((k, n)) < 0.5
        A, B = np.where(swap, c, a), np.where(swap, d, b)
        C, D = np.where(swap, a, c), np.where(swap, b, d)
        diffs.append(_corr_rows(A, B, coef, grouping, ps.n_sys) - _corr_rows(C, D, coef, grouping, ps.n_sys))
        done += k
    dist = np.concatenate(diffs)
    two = (1 + int(np.sum(np.abs(dist) >= abs(obs) - 1e-12))) / (1 + n_permutations)
    one = int(np.sum(dist >= obs - 1e-12)) / n_permutations  # mt-metrics-eval's PermutationSigDiff p
    return {"pair1": list(pair1), "pair2": list(pair2), "diff": obs, "p_value": float(min(1.0, two)),
            "p_one_sided": float(one),  # share of permutations with diff >= observed (mt-metrics-eval's p)
            "n_cells": int(common.sum()), "n_permutations": n_permutations, "seed": seed, "coef": coef, "grouping": grouping,
            "method": "PERM-BOTH (z-scored metrics, per-cell swap)"}


def perm_both_exact(x1, y1, x2, y2, coef: str = "pearson") -> dict:
    """Exact PERM-BOTH over all 2^n swap patterns (small n only; known-answer tests)."""
    a, b, c, d = (_z(v) for v in (x1, y1, x2, y2))
    n = a.size
    if n > 16:
        raise ValueError("exact enumeration only for n <= 16")
    obs = correlation(a, b, coef) - correlation(c, d, coef)
    diffs = []
    for bits in itertools.product([False, True], repeat=n):
        s = np.array(bits)
        diffs.append(correlation(np.where(s, c, a), np.where(s, d, b), coef)
                     - correlation(np.where(s, a, c), np.where(s, b, d), coef))
    diffs = np.asarray(diffs)
    return {"diff": float(obs), "p_value": float(np.mean(np.abs(diffs) >= abs(obs) - 1e-12)),
            "p_one_sided": float(np.mean(diffs >= obs - 1e-12))}


def minmax(v):
    v = np.asarray(v, float)
    return (v - v.min()) / (v.max() - v.min())


# ----------------------------------------------------------------------------------------------------------------
# metrics scored on different segments (a judge or BERTScore on a subset): pairwise-complete cells
# ----------------------------------------------------------------------------------------------------------------
class ScoreSet:
    """Oriented score matrices ``{metric: (n_seg, n_sys)}`` of one language pair in which a metric may lack some
    segments (NaN: not scored, unparseable, or a missing human score).  A metric *covers* a segment when at least one
    system has a score there; every coefficient between two metrics uses the segments both cover (pairwise
    deletion, ``n_segments_cell``) and, inside them, the cells both have (per-cell filtering, as mt-metrics-eval
    drops None human scores cell by cell: one missing cell costs that cell, not the segment or the metric).
    ``system_scorers`` as in :class:`PairScores`, over all segments."""

    def __init__(self, matrices: dict[str, np.ndarray], *, systems: Sequence[str] = (),
                 system_scorers: dict[str, Callable] | None = None):
        _init_scores(self, matrices, systems, system_scorers)
        self.complete = {k: np.isfinite(v).any(axis=1) for k, v in self.M.items()}  # segments covered
        self.cells = {k: int(np.isfinite(v).sum()) for k, v in self.M.items()}

    @property
    def metrics(self) -> list[str]:
        return list(self.M)

    def mask(self, metrics: Sequence[str]) -> np.ndarray:
        out = np.ones(self.n_seg, bool)
        for m in metrics:
            out &= self.complete[m]
        return out

    def restrict(self, metrics: Sequence[str], mask: np.ndarray | None = None) -> PairScores:
        """:class:`PairScores` of ``metrics`` on the segments in ``mask`` (default: complete for all of them)."""
        mask = self.mask(metrics) if mask is None else np.asarray(mask, bool)
        scorers = {}
        for m in metrics:
            if m in self.scorers:
                f = self.scorers[m]
                scorers[m] = f if mask.all() else (lambda c, f=f: f(_expand(c, mask)))
        return PairScores({m: self.M[m][mask] for m in metrics}, systems=self.systems, system_scorers=scorers)


def _expand(counts: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Resample counts over the kept segments -> counts over all segments (0 for the others)."""
    out = np.zeros((counts.shape[0], mask.size))
    out[:, mask] = counts
    return out


MIN_SEGMENTS = 3


def matrices_pairwise(ss: ScoreSet, *, coefficients=COEFFICIENTS, groupings=GROUPINGS, n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95, metrics: Sequence[str] | None = None) -> dict:
    """:func:`matrices` with pairwise-complete cells: metrics are grouped by the segments their cells share, each
    group computed by :func:`matrices` on its segments (bootstrap over those segments).  Adds
    ``n_segments_cell`` [m][m] (segments behind each cell) and ``coverage`` {metric: complete segments}; a cell
    with fewer than ``MIN_SEGMENTS`` segments is NaN.  When every metric is complete this equals :func:`matrices`."""
    names = list(metrics or ss.metrics)
    k = len(names)
    groups: dict[bytes, tuple[np.ndarray, list[tuple[int, int]]]] = {}
    for i, j in itertools.combinations(range(k), 2):
        mask = ss.mask([names[i], names[j]])
        groups.setdefault(mask.tobytes(), (mask, []))[1].append((i, j))
    out: dict = {"n_segments": ss.n_seg, "n_systems": ss.n_sys, "systems": ss.systems, "metrics": names,
                 "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": confidence,
                               "unit": "segment", "method": "percentile"}, "levels": {},
                 "coverage": {m: int(ss.complete[m].sum()) for m in names},
                 "coverage_cells": {m: ss.cells[m] for m in names}}
    ncell = np.zeros((k, k), int)
    for i in range(k):
        ncell[i, i] = int(ss.complete[names[i]].sum())
    vals = {(g, c): (np.full((k, k), np.nan), np.full((k, k, 2), np.nan)) for g in groupings for c in coefficients}
    status: dict = {}
    for mask, cells in groups.values():
        for i, j in cells:
            ncell[i, j] = ncell[j, i] = int(mask.sum())
        if mask.sum() < MIN_SEGMENTS:
            continue
        involved = sorted({x for c in cells for x in c})
        sub = ss.restrict([names[x] for x in involved], mask)
        r = matrices(sub, coefficients=coefficients, groupings=groupings, n_resamples=n_resamples, seed=seed,
                     confidence=confidence, metrics=[names[x] for x in involved])
        pos = {x: n for n, x in enumerate(involved)}
        for g in groupings:
            if r["levels"][g].get("status"):
                status[g] = r["levels"][g]
                continue
            for c in coefficients:
                V, C = vals[(g, c)]
                rv, rc = r["levels"][g][c]["value"], r["levels"][g][c]["ci95"]
                for i, j in cells:
                    V[i, j] = V[j, i] = rv[pos[i]][pos[j]]
                    C[i, j] = C[j, i] = rc[pos[i]][pos[j]]
    for i, m in enumerate(names):  # a metric with itself, on its complete segments
        x = ss.M[m][np.isfinite(ss.M[m])]
        const = x.size == 0 or bool(np.ptp(x) == 0)
        for (_g, c), (V, C) in vals.items():
            V[i, i] = float("nan") if const and c != "acc23" else 1.0
            C[i, i] = [V[i, i], V[i, i]]
    for g in groupings:
        if g in status:
            out["levels"][g] = status[g]
            continue
        out["levels"][g] = {c: {"value": vals[(g, c)][0].tolist(), "ci95": vals[(g, c)][1].tolist()}
                            for c in coefficients}
    out["n_segments_cell"] = ncell.tolist()
    return out


def perm_both_pairwise(ss: ScoreSet, pair1: tuple[str, str], pair2: tuple[str, str], **kw) -> dict:
    """:func:`perm_both` on the segments complete for all metrics of both pairs (``n_segments`` in the result)."""
    ms = list(dict.fromkeys([*pair1, *pair2]))
    mask = ss.mask(ms)
    if mask.sum() < MIN_SEGMENTS:
        return {"pair1": list(pair1), "pair2": list(pair2), "diff": float("nan"), "p_value": float("nan"),
                "p_one_sided": float("nan"), "n_segments": int(mask.sum()), "status": "too few shared segments"}
    t = perm_both(ss.restrict(ms, mask), pair1, pair2, **kw)
    t["n_segments"] = int(mask.sum())
    return t


# ----------------------------------------------------------------------------------------------------------------
# metric pairs with no metric in common: paired bootstrap on the difference of the two correlations
# ----------------------------------------------------------------------------------------------------------------
def bootstrap_diff(ps: PairScores, pair1: tuple[str, str], pair2: tuple[str, str], *, coef: str = "pearson",
                   grouping: str = "none", n_resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> dict:
    """``corr(pair1) - corr(pair2)`` with both correlations recomputed on the same bootstrap resamples of segments
    (all systems of a drawn segment move together).  For pairs with no metric in common PERM-BOTH is not exact
    (swapping (a, b) with (c, d) breaks both pairings; simulated rejection above alpha), so this is the test used
    there.  ``p_value`` two-sided, from the distribution centred on the observed difference:
    ``(1 + #{|d* - d| >= |d|}) / (1 + R)`` (the convention of ``leverplus.metrics.stats.paired_bootstrap``);
    ``p_one_sided`` = ``(1 + #{d* - d >= d}) / (1 + R)`` for H1 corr(pair1) > corr(pair2)."""
    counts = np.vstack([np.ones((1, ps.n_seg)), _counts(ps.n_seg, n_resamples, seed)])
    dist = _Distributions(ps, counts)
    d = dist(*pair1, coef, grouping) - dist(*pair2, coef, grouping)
    obs, star = float(d[0]), d[1:]
    star = star[np.isfinite(star)]
    cen = star - obs
    R = star.size
    two = (1 + int(np.sum(np.abs(cen) >= abs(obs) - 1e-12))) / (1 + R) if R else float("nan")
    one = (1 + int(np.sum(cen >= obs - 1e-12))) / (1 + R) if R else float("nan")
    return {"pair1": list(pair1), "pair2": list(pair2), "diff": obs, "p_value": float(min(1.0, two)),
            "p_one_sided": float(min(1.0, one)), "ci95": _percentile(star, confidence), "n_resamples": n_resamples,
            "seed": seed, "coef": coef, "grouping": grouping,
            "method": "paired bootstrap over segments of the correlation difference"}


def compare_pairs_pairwise(ss: "ScoreSet", pair1, pair2, *, n_permutations: int = 1000, n_resamples: int = 1000,
                           **kw) -> dict:
    """PERM-BOTH where the two pairs share a metric (exact there), otherwise :func:`bootstrap_diff`; on the segments
    complete for all metrics of both pairs (``n_segments``)."""
    ms = list(dict.fromkeys([*pair1, *pair2]))
    mask = ss.mask(ms)
    if mask.sum() < MIN_SEGMENTS:
        return {"pair1": list(pair1), "pair2": list(pair2), "diff": float("nan"), "p_value": float("nan"),
                "p_one_sided": float("nan"), "n_segments": int(mask.sum()), "status": "too few shared segments"}
    sub = ss.restrict(ms, mask)
    if set(pair1) & set(pair2):
        t = perm_both(sub, pair1, pair2, n_permutations=n_permutations, **kw)
    else:
        t = bootstrap_diff(sub, pair1, pair2, n_resamples=n_resamples, **kw)
    t["n_segments"] = int(mask.sum())
    return t
