"""Ranking decisions that depend on the config and the data, not on the last bits of a float.

Scores computed on another CPU, with another BLAS kernel, batch size or thread count differ in their last bits.
Where many candidates score the same to float precision (InfoScore pools of near-duplicates, selector logits of
similar candidates), a plain ``sort`` / ``argmax`` lets those bits pick the winner. Every ranking decision in the
library therefore compares scores on a fixed *grid*: a score counts as ``round(score / grid)`` whole grid units
(computed in float64, so the units are exact integers), and equal units are broken by a stable key (pool
position, beam index) — never by the float residue. Stored scores stay unquantised; only decisions use the grid.

Grids, from the measured noise:

* InfoScore P̄ (float32 forward passes): the fast path vs the reference path moves P̄ by ≤ 4.8e-7 (README
  benchmark, P̄ up to ~0.85); batch size 1 vs 16, 1 vs 2 threads and fast vs reference give ≤ 4.1e-8 on the tiny
  test model (P̄ ≤ 0.03). ``INFOSCORE_GRID = 1e-5`` is 20× the worst measured noise, and an answer-probability
  difference below 1e-5 carries no signal worth ranking on.
* Selector logits (float32, |logit| ≲ 15): batch 64 vs 1 and 1 vs 2 threads move a logit by ≤ 3.8e-6.
  ``SELECTOR_GRID = 1e-3`` is 250× that; logits closer than 1e-3 differ in softmax probability by < 0.1 %.

Residual risk, stated plainly: a score that lies within noise of a grid boundary (a half-unit) can still be
rounded to either neighbour. With noise ε and grid g a given score is that close with probability ≈ 2ε/g
(≤ 10 % for the worst InfoScore noise, ≤ 1 % for the typical one). :func:`unit_bounds` makes this measurable:
the callers count the decisions whose outcome a perturbation of every score by ±``noise`` could change, and log
and record that count.
"""
from __future__ import annotations

import numpy as np

INFOSCORE_GRID = 1e-5  # P̄ / InfoScore grid for beam-search decisions
INFOSCORE_NOISE = 5e-7  # float32 P̄ noise bound used to count decisions near a grid boundary (measured ≤ 4.8e-7)
SELECTOR_GRID = 1e-3  # selector-logit grid for greedy selection
SELECTOR_NOISE = 1e-5  # float32 logit noise bound used to count picks near a grid boundary (measured ≤ 3.8e-6)


def check_grid(grid: float, what: str = "score_grid") -> float:
    grid = float(grid)
    if not (np.isfinite(grid) and grid > 0):
        raise ValueError(f"{what} must be a positive finite number, got {grid!r}")
    return grid


def grid_units(x, grid: float) -> np.ndarray:
    """``round(x / grid)`` (half up) as float64 whole numbers; ±inf stays ±inf (masked scores)."""
    return np.floor(np.asarray(x, dtype=np.float64) / grid + 0.5)


def unit_bounds(x, grid: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest grid units a score could take if it moved by up to ±``noise``."""
    x = np.asarray(x, dtype=np.float64)
    return grid_units(x - noise, grid), grid_units(x + noise, grid)
