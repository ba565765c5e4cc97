"""Metric meta-evaluation: metric x metric (and metric x human) agreement with bootstrap CIs and PERM-BOTH tests.

Conventions follow the WMT metrics task / google-research mt-metrics-eval (this is the project's own code):

* Scores of one language pair are matrices ``(n_segments, n_systems)``; every metric is oriented higher = better
  (TER is negated) before any correlation.
* Coefficients: Pearson, Spearman, Kendall tau-b, and ``acc23`` = (concordant + pairs tied in both) / all pairs
  (Deutsch et al. 2023, "Ties Matter", without tie calibration: epsilon = 0).
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
  With a shared metric (``a == c``, e.g. the human scores) this is exactly mt-metrics-eval's test.  p-values are
  two-sided here: ``(1 + #{|d*| >= |d|}) / (1 + k)``; one-sided ``#{d* >= d} / k`` is also returned.
* Min-max normalisation of a metric (``(x - min) / (max - min)``) is an increasing affine map: it changes no Pearson,
  Spearman or Kendall value (tests show it).
"""

from __future__ import annotations

import itertools
import math
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


def rowwise(X, Y, coef: str) -> np.ndarray:
    """Coefficient per row of two (rows, k) matrices."""
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
    sy = np.sign(Y[:, :, None] - Y[:, None, :])[:, iu[0], iu[1]]
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
        return (counts @ self.M[metric]) / counts.sum(1, keepdims=True)


def _counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) how often each segment is drawn in each bootstrap resample (stats.resample_indices' draws)."""
    out = []
    for block in resample_indices(n, n_resamples, seed):
        c = np.zeros((len(block), n))
        np.add.at(c, (np.repeat(np.arange(len(block)), n), block.ravel()), 1)
        out.append(c)
    return np.vstack(out)


class _NoneLevel:
    """Exact resampled coefficients at grouping ``none`` from segment-aggregated statistics."""

    def __init__(self, ps: PairScores, counts: np.ndarray):
        self.ps, self.W = ps, counts
        self.seg_of = np.repeat(np.arange(ps.n_seg), ps.n_sys)
        self.Wp = counts[:, self.seg_of]  # (R, N) weight of each cell
        self.N = self.Wp.sum(1)  # cells per resample
        self._ranks: dict[str, np.ndarray] = {}
        self._sign: dict[str, np.ndarray] = {}
        self._mom: dict = {}

    def _flat(self, m):
        return self.ps.M[m].reshape(-1)

    def ranks(self, m):
        """(R, N) midrank of every cell within each resample."""
        if m not in self._ranks:
            x = self._flat(m)
            less = (x[None, :] < x[:, None]).astype(float)  # less[i, j] = x_j < x_i
            eq = (x[None, :] == x[:, None]).astype(float)
            S, k = self.ps.n_seg, self.ps.n_sys
            L = less.T.reshape(S, k, -1).sum(1)  # (S, N): cells of segment s below cell i
            E = eq.T.reshape(S, k, -1).sum(1)
            self._ranks[m] = self.W @ L + (self.W @ E + 1) / 2
        return self._ranks[m]

    def sign(self, m):
        if m not in self._sign:
            x = self._flat(m)
            self._sign[m] = np.sign(x[:, None] - x[None, :])
        return self._sign[m]

    def _agg(self, P):
        """Segment x segment sums of a cell x cell matrix."""
        S, k = self.ps.n_seg, self.ps.n_sys
        return P.reshape(S, k, S, k).sum(axis=(1, 3), dtype=float)

    def _quad(self, A):
        return ((self.W @ A) * self.W).sum(1)

    def _moments(self, key, X):
        """(sum w x, sum w x^2) per resample of a (R, N) or (N,) cell matrix, cached."""
        if key not in self._mom:
            if X.ndim == 1:  # fixed values: aggregate per segment first
                S, k = self.ps.n_seg, self.ps.n_sys
                self._mom[key] = (self.W @ X.reshape(S, k).sum(1), self.W @ (X**2).reshape(S, k).sum(1))
            else:
                self._mom[key] = ((self.Wp * X).sum(1), (self.Wp * X**2).sum(1))
        return self._mom[key]

    def _wpearson(self, ka, X, kb, Y):
        sx, sxx = self._moments(ka, X)
        sy, syy = self._moments(kb, Y)
        S, k = self.ps.n_seg, self.ps.n_sys
        if X.ndim == 1:
            sxy = self.W @ (X * Y).reshape(S, k).sum(1)
        else:
            sxy = np.einsum("rn,rn,rn->r", self.Wp, X, Y)
        n = self.N
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (sxy - sx * sy / n) / np.sqrt((sxx - sx**2 / n) * (syy - sy**2 / n))
        return np.clip(r, -1, 1)

    def coef(self, a, b, coef):
        if coef == "pearson":
            return self._wpearson(("v", a), self._flat(a), ("v", b), self._flat(b))
        if coef == "spearman":
            return self._wpearson(("r", a), self.ranks(a), ("r", b), self.ranks(b))
        sa, sb = self.sign(a), self.sign(b)
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
        return correlation(A.ravel(), B.ravel(), coef)
    if grouping == "item":
        return _nanmean(rowwise(A, B, coef))
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
    none_level = _NoneLevel(ps, counts) if "none" in groupings else None
    item_vals: dict = {}
    sys_scores = {}
    for g in groupings:
        if g == "system" and ps.n_sys < 3:
            out["levels"][g] = {"status": "not applicable", "reason": f"{ps.n_sys} systems (< 3)"}
            continue
        if g == "system":
            sys_scores = {m: ps.system_scores(m, counts) for m in names}
        out["levels"][g] = {}
        for coef in coefficients:
            k = len(names)
            val = np.full((k, k), np.nan)
            ci = np.full((k, k, 2), np.nan)
            for i, j in itertools.combinations_with_replacement(range(k), 2):
                a, b = names[i], names[j]
                if i == j:  # a metric with itself
                    const = bool(np.ptp(ps.M[a]) == 0)
                    val[i, i] = float("nan") if const and coef != "acc23" else 1.0
                    ci[i, i] = [val[i, i], val[i, i]]
                    continue
                if g == "none":
                    dist = none_level.coef(a, b, coef)
                elif g == "item":
                    key = (a, b, coef)
                    if key not in item_vals:
                        item_vals[key] = rowwise(ps.M[a], ps.M[b], coef)
                    per = item_vals[key]
                    ok = ~np.isnan(per)
                    dist = (counts[:, ok] @ per[ok]) / counts[:, ok].sum(1)
                else:
                    dist = rowwise(sys_scores[a], sys_scores[b], coef)
                v, dist = float(dist[0]), dist[1:]
                lohi = _percentile(dist, confidence)
                val[i, j] = val[j, i] = v
                ci[i, j] = ci[j, i] = lohi
            out["levels"][g][coef] = {"value": val.tolist(), "ci95": ci.tolist()}
    return out


# ----------------------------------------------------------------------------------------------------------------
# PERM-BOTH
# ----------------------------------------------------------------------------------------------------------------
def _z(v):
    v = np.asarray(v, float)
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def _corr_rows(X, Y, coef, grouping, n_sys):
    """Coefficient for each row of (R, N) matrices of flattened cells (segment-major, n_sys per segment)."""
    if grouping == "none":
        if coef == "pearson":
            return _rowwise_pearson(X, Y)
        if coef == "spearman":
            return _rowwise_pearson(sps.rankdata(X, axis=1), sps.rankdata(Y, axis=1))
        return np.array([correlation(x, y, coef) for x, y in zip(X, Y)])
    if grouping == "item":
        R, N = X.shape
        per = rowwise(X.reshape(-1, n_sys), Y.reshape(-1, n_sys), coef).reshape(R, -1)
        with np.errstate(invalid="ignore"):
            return np.nanmean(per, axis=1)
    if grouping == "system":
        R, N = X.shape
        return rowwise(X.reshape(R, -1, n_sys).mean(1), Y.reshape(R, -1, n_sys).mean(1), coef)
    raise ValueError(grouping)


def perm_both(ps: PairScores, pair1: tuple[str, str], pair2: tuple[str, str], *, coef: str = "pearson",
              grouping: str = "none", n_permutations: int = 1000, seed: int = 0, block: int = 250) -> dict:
    """PERM-BOTH test of ``corr(pair1) - corr(pair2)`` (module docstring).  System level uses mean segment scores of
    the z-scored metrics (as mt-metrics-eval's test does on its vectors)."""
    a, b = (_z(ps.M[m].ravel()) for m in pair1)
    c, d = (_z(ps.M[m].ravel()) for m in pair2)
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
    one = int(np.sum(dist >= obs - 1e-12)) / n_permutations
    return {"pair1": list(pair1), "pair2": list(pair2), "diff": obs, "p_value": float(min(1.0, two)),
            "p_one_sided": float(one),  # share of permutations with diff >= observed (mt-metrics-eval's p)
            "n_permutations": n_permutations, "seed": seed, "coef": coef, "grouping": grouping,
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
    segments (NaN: not scored, or unparseable).  A metric's *complete* segments are those where every system has a
    score; every coefficient between two metrics uses the segments complete for both (pairwise deletion), and says
    how many (``n_segments_cell``).  ``system_scorers`` as in :class:`PairScores`, over all segments."""

    def __init__(self, matrices: dict[str, np.ndarray], *, systems: Sequence[str] = (),
                 system_scorers: dict[str, Callable] | None = None):
        _init_scores(self, matrices, systems, system_scorers)
        self.complete = {k: ~np.isnan(v).any(axis=1) for k, v in self.M.items()}

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
                 "coverage": {m: int(ss.complete[m].sum()) for m in names}}
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
        const = (not ss.complete[m].any()) or bool(np.ptp(ss.M[m][ss.complete[m]]) == 0)
        for (g, c), (V, C) in vals.items():
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
