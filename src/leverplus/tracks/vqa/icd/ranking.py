"""Ranking decisions that a perturbation below a stated tolerance cannot change, wherever the values lie.

Scores computed on another CPU (AVX2 vs AVX-512 kernels, another BLAS blocking, batch size or thread count) differ
in their last bits. Where many candidates score the same to float precision (InfoScore pools of near-duplicates,
selector logits of similar candidates, templated questions in retrieval), a plain ``sort`` / ``argmax`` lets those
bits pick the winner.

Rounding to a fixed grid (what this module did before) does not remove that dependence, it moves it to the grid
lines: a tied cluster that happens to straddle a half-unit is split by a few ulps. Every ranking decision therefore
**groups** the sorted scores instead: walking down the scores in descending order, a new group starts only where the
gap to the previous score exceeds the tolerance τ (single linkage in one dimension). Groups are ranked by score;
inside a group the order is a stable key (beam index, pool position, row index) — never the float residue. A tied
cluster forms one group wherever it lies on the number line, so its order cannot depend on the last bits.

What is guaranteed: if every score moves by at most δ, the groups — hence the decision — can change only if some
gap that matters lies within 2δ of τ (a gap ≤ τ − 2δ stays ≤ τ, a gap > τ + 2δ stays > τ; see :func:`is_fragile`,
which takes one noise bound per score).
Such gaps are counted and recorded (``near_tolerance`` / ``near_boundary_steps``), so the residual risk is measured,
not assumed. It is small because it needs two *genuinely different* scores whose difference happens to be within
2δ of τ, not merely a score near a grid line.

Tolerances, from the measured noise between code paths:

* InfoScore (P̄ differences, float32 forward passes): the fast path vs the reference path moves P̄ by ≤ 4.8e-7
  (README benchmark, P̄ up to ~0.85: 5.6e-7 of P̄); batch size 1 vs 16, 1 vs 2 threads, fast vs reference and the
  AVX2 vs AVX-512 kernel sets give ≤ 4.1e-8 on the tiny test model (P̄ ≤ 0.03). The noise of a P̄ is bounded by
  ``INFOSCORE_NOISE`` = 1e-6 of its value; an InfoScore p_new − p_beam by the sum of both, ≤ 2e-6 in all.
  ``INFOSCORE_TOL = 1e-5`` is 5× that worst case, and an answer-probability difference below 1e-5 carries no signal
  worth ranking on.
* Selector logits (float32, |logit| ≲ 15): batch 64 vs 1 and 1 vs 2 threads move a logit by ≤ 3.8e-6.
  ``SELECTOR_TOL = 1e-3`` is 250× that; logits closer than 1e-3 differ in softmax probability by < 0.1 %.
* Retrieval cosine similarities of unit float32 vectors: noise ~1e-7; ``RETRIEVAL_TOL = 1e-5``.

Stored scores stay unrounded; only decisions use the grouping.
"""
from __future__ import annotations

import numpy as np

INFOSCORE_TOL = 1e-5  # InfoScore gaps at or below this are ties (beam search)
INFOSCORE_NOISE = 1e-6  # float32 P̄ noise bound between code paths, relative to P̄ (measured ≤ 4.8e-7 at P̄ 0.85)
SELECTOR_TOL = 1e-3  # selector-logit gaps at or below this are ties (greedy selection)
SELECTOR_NOISE = 1e-5  # float32 logit noise bound (measured ≤ 3.8e-6)
RETRIEVAL_TOL = 1e-5  # cosine-similarity gaps at or below this are ties (similarity retrieval)
RETRIEVAL_NOISE = 1e-6  # float32 unit-vector dot-product noise bound (~1e-7)


def check_tol(tol: float, what: str = "tie_tolerance") -> float:
    tol = float(tol)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"{what} must be a positive finite number, got {tol!r}")
    return tol


def tie_groups(desc: np.ndarray, tol: float) -> np.ndarray:
    """Group number (0, 1, …) of each value of ``desc`` (sorted descending): a new group starts where the gap to the
    previous value exceeds ``tol``. −inf values (masked) form the last group; NaN is refused."""
    desc = np.asarray(desc, dtype=np.float64)
    if np.isnan(desc).any():
        raise ValueError("cannot rank NaN scores")
    if len(desc) == 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        gaps = desc[:-1] - desc[1:]  # −inf − −inf = nan: not a new group
    return np.concatenate([[0], np.cumsum(gaps > tol)]).astype(np.int64)


def rank(scores, tol: float, *keys) -> np.ndarray:
    """Indices of ``scores`` best first: by tie group (scores descending, :func:`tie_groups`), then by ``keys``
    ascending (the first key is the primary one), then by index. Independent of the input's float residue inside a
    group and of the order the values were given in (for keys that identify the items)."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    # Sorting descending; equal values by index (only to make the grouping walk deterministic: groups do not
    # depend on which of two equal values comes first).
    first = np.lexsort((np.arange(n), -s))
    groups = np.empty(n, dtype=np.int64)
    groups[first] = tie_groups(s[first], tol)
    return np.lexsort((np.arange(n), *[np.asarray(k) for k in reversed(keys)], groups))


def is_fragile(scores, keep: int, tol: float, noise) -> bool:
    """Whether moving every score by up to ±``noise`` (a number, or one bound per score) could change the first
    ``keep`` places of :func:`rank` (which items, or their order): some gap between consecutive sorted scores, from
    the top down to the boundary after the group holding place ``keep``, lies within the two scores' noise of
    ``tol``."""
    s = np.asarray(scores, dtype=np.float64)
    n = np.broadcast_to(np.asarray(noise, dtype=np.float64), s.shape)
    order = np.argsort(-s, kind="stable")
    s, n = s[order], n[order]
    finite = np.isfinite(s)
    s, n = s[finite], n[finite]
    if len(s) < 2 or keep < 1:
        return False
    groups = tie_groups(s, tol)
    last = int(np.flatnonzero(groups == groups[min(keep, len(s)) - 1])[-1])  # end of the group holding place keep
    gaps = s[:-1] - s[1:]
    band = n[:-1] + n[1:]
    relevant = slice(0, last + 1)  # every gap inside and above that group, and the one right after it
    return bool(np.any(np.abs(gaps[relevant] - tol) <= band[relevant]))
