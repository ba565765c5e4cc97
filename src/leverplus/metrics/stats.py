"""Uncertainty: seeded bootstrap CIs, paired bootstrap and McNemar between two systems.

All resampling draws item indices from ``numpy.random.default_rng(seed)`` in
blocks of :data:`_BLOCK` resamples, so a given ``(n, n_resamples, seed)`` always
yields the same resamples whatever the statistic.  Percentiles use numpy's default
(linear) interpolation.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterator, Sequence

import numpy as np

_BLOCK = 256


def _as_items(values) -> tuple[Any, int, bool]:
    """Return (data, n, is_numeric_array)."""
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise ValueError("values must be an array of items, got a scalar")
        # 1-D numeric: per-item values; N-D: rows are items (e.g. sufficient statistics)
        return values, len(values), values.ndim == 1 and values.dtype.kind in "biuf"
    values = list(values)
    if values and all(isinstance(v, (numbers.Real, np.bool_)) for v in values):
        return np.asarray(values, dtype=float), len(values), True
    return values, len(values), False


def _take(data, idx: np.ndarray, numeric: bool):
    if numeric or isinstance(data, np.ndarray):
        return data[idx]
    return [data[i] for i in idx]


def resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks (k, n) of bootstrap item indices; seeded and deterministic."""
    if n <= 0:
        raise ValueError("cannot bootstrap zero items")
    if n_resamples <= 0:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        k = min(_BLOCK, n_resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _bootstrap_distribution(data, n: int, numeric: bool, statistic: Callable, n_resamples: int, seed: int):
    out = np.empty(n_resamples, dtype=float)
    pos = 0
    for block in resample_indices(n, n_resamples, seed):
        if numeric and statistic is np.mean:
            out[pos : pos + len(block)] = data[block].mean(axis=1)
        else:
            for j, row in enumerate(block):
                out[pos + j] = float(statistic(_take(data, row, numeric)))
        pos += len(block)
    return out


def _percentile_interval(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    alpha = (1 - confidence) / 2
    finite = dist[~np.isnan(dist)]  # resamples where the statistic is undefined are dropped
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(
    values,
    *,
    statistic: Callable = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval over items.

    ``values`` is a 1-D array of per-item values (``statistic`` defaults to the
    mean), or any sequence of items (e.g. ``(hypothesis, references)`` tuples)
    with a ``statistic`` that takes a resampled list of items and recomputes a
    corpus-level score (e.g. corpus BLEU).
    """
    data, n, numeric = _as_items(values)
    dist = _bootstrap_distribution(data, n, numeric, statistic, n_resamples, seed)
    return _percentile_interval(dist, confidence)


def paired_bootstrap(
    a,
    b,
    *,
    statistic: Callable = np.mean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap of ``statistic(a) - statistic(b)`` over the same items.

    Both systems are resampled with the same item indices.  ``ci95`` is the
    percentile interval of the resampled differences.  ``p_value`` is two-sided,
    for H0 "no difference", computed by centring the bootstrap distribution on
    the observed difference (Berg-Kirkpatrick et al., 2012 / Koehn, 2004 style):
    ``(1 + #{|d* - d| >= |d|}) / (1 + n_resamples)``.
    """
    da, na, numa = _as_items(a)
    db, nb, numb = _as_items(b)
    if na != nb:
        raise ValueError(f"paired test needs the same items: len(a)={na} != len(b)={nb}")
    diff = float(statistic(da)) - float(statistic(db))
    dists = np.empty(n_resamples, dtype=float)
    pos = 0
    for block in resample_indices(na, n_resamples, seed):
        if numa and numb and statistic is np.mean:
            dists[pos : pos + len(block)] = da[block].mean(axis=1) - db[block].mean(axis=1)
        else:
            for j, row in enumerate(block):
                dists[pos + j] = float(statistic(_take(da, row, numa))) - float(statistic(_take(db, row, numb)))
        pos += len(block)
    lo, hi = _percentile_interval(dists, confidence)
    extreme = int(np.sum(np.abs(dists - diff) >= abs(diff) - 1e-12))
    p_value = (1 + extreme) / (1 + n_resamples)
    return {
        "diff": diff,
        "ci95": [lo, hi],
        "p_value": float(min(1.0, p_value)),
        "n": na,
        "n_resamples": n_resamples,
        "seed": seed,
        "method": "paired-bootstrap-percentile",
    }


def _seed_rows(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError("expected a (seeds, items) array with at least one seed and one item")
    return arr


def _seed_means(rows: np.ndarray, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per resample (rows of ``block``): the mean over a with-replacement draw of the seeds of the per-seed means
    over the resampled items."""
    per_seed = rows[:, block].mean(axis=-1)  # (S, k)
    s = rows.shape[0]
    if s == 1:
        return per_seed[0]
    draw = rng.integers(0, s, size=(block.shape[0], s))
    return np.take_along_axis(per_seed.T, draw, axis=1).mean(axis=1)


def _paired_seed_means(ra: np.ndarray, rb: np.ndarray, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per resample: mean over ONE with-replacement draw of the seed indices, used for both sides, of
    (per-seed mean of a − per-seed mean of b) over the resampled items (row i of a and of b: the same seed)."""
    per = (ra[:, block].mean(axis=-1) - rb[:, block].mean(axis=-1))  # (S, k)
    s = ra.shape[0]
    if s == 1:
        return per[0]
    draw = rng.integers(0, s, size=(block.shape[0], s))
    return np.take_along_axis(per.T, draw, axis=1).mean(axis=1)


def seed_bootstrap(a, b=None, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                   paired_seeds: bool = False) -> dict:
    """Two-way bootstrap over items and training seeds.

    ``a`` is (S_a, n): per-item values of S_a runs (training seeds) on the same n items; the statistic is the mean
    over seeds and items.  With ``b`` (S_b, n) on the same items, the statistic is mean(a) − mean(b), items paired.
    Each resample draws n item indices (shared by a and b) from :func:`resample_indices` — the draws of
    :func:`bootstrap_ci` / :func:`paired_bootstrap` — and, independently for a and b, S seeds with replacement, so
    the interval holds both sources of noise.  With one seed per side it equals ``bootstrap_ci`` (no b) /
    ``paired_bootstrap`` (with b).  ``p_value`` (with b): as in :func:`paired_bootstrap`.

    ``paired_seeds=True`` (needs b with as many seeds as a; row i of both is training seed i): one draw of seed
    indices per resample serves both sides, so runs that share their seed's initialisation (and whatever else the
    seed fixes) stay paired, as the questions do; the seed-to-seed variation they share cancels in the difference.
    """
    ra = _seed_rows(a)
    rb = None if b is None else _seed_rows(b)
    if rb is not None and rb.shape[1] != ra.shape[1]:
        raise ValueError(f"paired test needs the same items: {ra.shape[1]} != {rb.shape[1]}")
    n = ra.shape[1]
    if paired_seeds and (rb is None or rb.shape[0] != ra.shape[0]):
        raise ValueError("paired_seeds needs b with the same number of seeds as a (row i of both = seed i), got "
                         f"{ra.shape[0]} and {None if rb is None else rb.shape[0]}")
    if rb is not None and ra.shape[0] == 1 and rb.shape[0] == 1:
        return {**paired_bootstrap(ra[0], rb[0], n_resamples=n_resamples, seed=seed, confidence=confidence),
                "seeds": [1, 1], "method": "paired-bootstrap-items-and-seeds"}
    rng_a, rng_b = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    dist = np.empty(n_resamples, dtype=float)
    pos = 0
    for block in resample_indices(n, n_resamples, seed):
        if paired_seeds:
            dist[pos : pos + len(block)] = _paired_seed_means(ra, rb, block, rng_a)
            pos += len(block)
            continue
        val = _seed_means(ra, block, rng_a)
        if rb is not None:
            val = val - _seed_means(rb, block, rng_b)
        dist[pos : pos + len(block)] = val
        pos += len(block)
    lo, hi = _percentile_interval(dist, confidence)
    stat = float(ra.mean(axis=1).mean()) - (float(rb.mean(axis=1).mean()) if rb is not None else 0.0)
    out = {"n": n, "seeds": [ra.shape[0]] + ([rb.shape[0]] if rb is not None else []), "ci95": [lo, hi],
           "n_resamples": n_resamples, "seed": seed}
    if rb is None:
        return {**out, "mean": stat, "method": "bootstrap-items-and-seeds"}
    extreme = int(np.sum(np.abs(dist - stat) >= abs(stat) - 1e-12))
    return {**out, "diff": stat, "p_value": float(min(1.0, (1 + extreme) / (1 + n_resamples))),
            "method": "paired-bootstrap-items-and-paired-seeds" if paired_seeds else "paired-bootstrap-items-and-seeds"}


def minimum_detectable_difference(ci95: Sequence[float], *, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference that a two-sided test at level ``1 − confidence`` detects with probability
    ``power``, given the (bootstrap) interval ``ci95`` of the observed difference: normal approximation with the
    standard error read off the interval's width, ``SE = (hi − lo) / (2 z_{(1+confidence)/2})`` and
    ``MDD = (z_{(1+confidence)/2} + z_{power}) · SE`` (≈ 0.71 × the width of a 95% interval at 80% power).
    A difference smaller than this may exist and go undetected: "inside the noise" is not "equal"."""
    if not 0 < confidence < 1 or not 0 < power < 1:
        raise ValueError("confidence and power must be in (0, 1)")
    lo, hi = float(ci95[0]), float(ci95[1])
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"not an interval: {ci95!r}")
    from scipy import stats as _sps  # here, not at import: scipy.stats costs ~1 s in every job that scores

    z = float(_sps.norm.ppf((1 + confidence) / 2))
    return (z + float(_sps.norm.ppf(power))) * (hi - lo) / (2 * z)


def mcnemar(a_correct: Sequence, b_correct: Sequence, *, exact: bool | None = None, correction: bool = True) -> dict:
    """McNemar's test on per-item correct/incorrect of two systems on the same items.

    ``b01`` = items system A got wrong and system B got right; ``b10`` = items A got
    right and B got wrong.  ``exact=None`` chooses the exact binomial (sign) test
    when ``b01 + b10 < 25`` and the chi-square test otherwise.  Exact: statistic is
    ``min(b01, b10)``, two-sided p = ``min(1, 2 * BinomCDF(min; b01+b10, 1/2))``.
    Chi-square (1 d.o.f.): ``(|b01 - b10| - 1)^2 / (b01 + b10)`` with Edwards'
    continuity correction (``correction=False``: without the ``- 1``).
    """
    a = np.asarray(a_correct).astype(bool)
    b = np.asarray(b_correct).astype(bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("a_correct and b_correct must be 1-D and of equal length")
    b01 = int(np.sum(~a & b))
    b10 = int(np.sum(a & ~b))
    n_disc = b01 + b10
    if exact is None:
        exact = n_disc < 25
    if n_disc == 0:
        return {"b01": 0, "b10": 0, "statistic": 0.0, "p_value": 1.0, "exact": bool(exact), "n": int(a.size)}
    from scipy import stats as _sps  # imported where used (see mdd)

    if exact:
        k = min(b01, b10)
        stat = float(k)
        p = min(1.0, 2.0 * float(_sps.binom.cdf(k, n_disc, 0.5)))
    else:
        num = abs(b01 - b10) - (1 if correction else 0)
        stat = float(max(num, 0) ** 2 / n_disc)
        p = float(_sps.chi2.sf(stat, 1))
    return {"b01": b01, "b10": b10, "statistic": stat, "p_value": p, "exact": bool(exact), "n": int(a.size)}


def summarize(values, *, n_resamples: int = 1000, seed: int = 0, scale: float = 1.0, digits: int | None = 2) -> dict:
    """``{"mean", "n", "ci95"}`` of per-item values (times ``scale``, rounded) for aggregation tables."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("cannot summarize zero items")
    mean = scale * float(sum(arr.tolist())) / arr.size
    lo, hi = bootstrap_ci(arr, n_resamples=n_resamples, seed=seed)
    lo, hi = scale * lo, scale * hi
    if digits is not None:
        mean, lo, hi = round(mean, digits), round(lo, digits), round(hi, digits)
    return {"mean": mean, "n": int(arr.size), "ci95": [lo, hi]}


def format_with_ci(mean: float, ci95: Sequence[float], n: int | None = None, digits: int = 2) -> str:
    """``'57.30 [55.10, 59.40] (n=1000)'`` for tables."""
    s = f"{mean:.{digits}f} [{ci95[0]:.{digits}f}, {ci95[1]:.{digits}f}]"
    if n is not None:
        s += f" (n={n})"
    return s


def holm(p_values: Sequence) -> list:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate).

    With the m finite p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j) * p(j))`` (0-based ``j``);
    entries that are None or NaN are left out of the family and returned as None. Reject at level α where
    ``p_adj <= α``. Same numbers as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``.
    """
    vals = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in p_values]
    idx = [i for i, v in enumerate(vals) if v is not None]
    m = len(idx)
    out: list = [None] * len(vals)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: vals[k])):
        running = max(running, min(1.0, (m - rank) * vals[i]))
        out[i] = running
    return out


__all__ = [
    "bootstrap_ci",
    "paired_bootstrap",
    "mcnemar",
    "resample_indices",
    "summarize",
    "format_with_ci",
    "holm",
    "seed_bootstrap",
    "minimum_detectable_difference",
]

