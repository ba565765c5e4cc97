"""Same config, same numbers on another CPU (issue 9, item 9).

Another CPU computes the same P̄ / selector logits up to a few ulps. Ranking decisions compare scores on a grid
(`leverplus.icd.ranking`), so moving every score by a few float32 ulps with random signs must change no beam and
no selection. Each test also shows its inputs have teeth: the plain float ranking (what the code did before) does
change under the same perturbation.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from leverplus.icd import infoscore
from leverplus.icd.features import Features
from leverplus.icd.infoscore import beam_search_anchor, rank_step
from leverplus.icd.ranking import INFOSCORE_GRID, INFOSCORE_NOISE
from leverplus.icd.selectors import load_selector, train_selector
from leverplus.icd.selectors import common as selector_common
from leverplus.models.base import load_icl_model

MAX_ULPS = 4


def ulp_noise(x, rng, max_ulps: int = MAX_ULPS) -> np.ndarray:
    """Every value moved by 1…max_ulps float32 ulps, each with a random sign (what another CPU's kernels do)."""
    x = np.asarray(x, dtype=np.float32)
    out = x.copy()
    steps = rng.integers(1, max_ulps + 1, size=x.shape)
    towards = np.where(rng.random(x.shape) < 0.5, np.float32(-np.inf), np.float32(np.inf)).astype(np.float32)
    for k in range(1, max_ulps + 1):
        move = steps >= k
        out[move] = np.nextafter(out[move], towards[move])
    return out.astype(np.float64)


def plain_rank(p_new, p_beam, beam_idx, pos, keep, **_):
    """The ranking before the grid: raw float InfoScore, ties → beam index, pool position."""
    info = np.asarray(p_new, np.float64) - np.asarray(p_beam, np.float64)
    return np.lexsort((pos, beam_idx, -info))[:keep], False


# ---- the ranking function on realistic tied P̄ ---------------------------------------------------------------------
def tied_step(rng):
    """One step of a 5-beam search over a 40-candidate pool like the demo's img_sim pools: most candidates give
    the answer the same P̄ to float precision (0.845, within a few float32 ulps), the others are spread out."""
    n_beams, n_cand = 5, 40
    p_beam = np.repeat(np.float32([0.80, 0.80, 0.79, 0.78, 0.70]).astype(np.float64), n_cand)
    p_new = np.where(rng.random(n_beams * n_cand) < 0.7, 0.845, rng.uniform(0.5, 0.84, n_beams * n_cand))
    p_new = ulp_noise(p_new, rng, 2)  # as one CPU computed them
    beam_idx = np.repeat(np.arange(n_beams), n_cand)
    pos = np.tile(np.arange(n_cand), n_beams)
    return p_new, p_beam, beam_idx, pos


@pytest.mark.parametrize("seed", range(5))
def test_ulp_noise_changes_no_ranking_decision(seed):
    rng = np.random.default_rng(seed)
    p_new, p_beam, beam_idx, pos = tied_step(rng)
    want, near = rank_step(p_new, p_beam, beam_idx, pos, 5)
    assert not near  # no decision within noise of a grid boundary here
    plain_changed = 0
    for _ in range(20):
        a, b = ulp_noise(p_new, rng), ulp_noise(p_beam, rng)
        assert rank_step(a, b, beam_idx, pos, 5)[0].tolist() == want.tolist()
        plain_changed += plain_rank(a, b, beam_idx, pos, 5)[0].tolist() != plain_rank(
            p_new, p_beam, beam_idx, pos, 5)[0].tolist()
    assert plain_changed >= 10  # the old float ranking follows the last bits


def test_ties_on_the_grid_go_to_the_lower_beam_then_pool_position():
    p_new = np.array([0.5 + 1e-7, 0.5, 0.5 + 2e-7, 0.5 - 1e-7])  # one grid unit: a four-way tie
    top, _ = rank_step(p_new, np.full(4, 0.2), np.array([1, 0, 0, 0]), np.array([0, 3, 2, 1]), 4)
    assert top.tolist() == [3, 2, 1, 0]  # beam 0 first (by pool position), then beam 1
    # Real differences above the grid still decide, and the stored scores are not rounded by anyone.
    top, _ = rank_step(np.array([0.5, 0.5 + 3 * INFOSCORE_GRID]), np.full(2, 0.2), np.zeros(2, int), np.arange(2), 1)
    assert top.tolist() == [1]


def test_decisions_within_noise_of_a_grid_boundary_are_reported():
    """The residual risk: a value within noise of a half-unit may round either way; rank_step says so."""
    boundary = (40_000 + 0.5) * INFOSCORE_GRID
    tied = np.array([boundary - INFOSCORE_NOISE / 2, boundary + INFOSCORE_NOISE / 2])  # straddle: 1 unit apart
    pos, beams, p_beam = np.arange(2), np.zeros(2, int), np.full(2, 0.1)
    top, near = rank_step(tied, p_beam, beams, pos, 1)
    assert top.tolist() == [1] and near
    far = tied - 3 * INFOSCORE_NOISE  # same gap, both inside one cell: a tie, and robust
    top, near = rank_step(far, p_beam, beams, pos, 1)
    assert top.tolist() == [0] and not near


# ---- beam search on the real tiny Qwen2.5-VL --------------------------------------------------------------------
class PerturbedScores:
    """The real adapter, with every P̄ it returns moved by a few float32 ulps (another CPU's last bits)."""

    def __init__(self, model, seed):
        self.model, self.rng = model, np.random.default_rng(seed)

    def score(self, icd_seqs, queries):
        return ulp_noise(self.model.score(icd_seqs, queries), self.rng)

    def score_step(self, beams, candidates, query, order):
        return [ulp_noise(p, self.rng) for p in self.model.score_step(beams, candidates, query, order)]


def _beams(model, anchor, pool, stats=None):
    beams, _, _ = beam_search_anchor(model, anchor, pool, beam_size=3, shot_num=2, order="right", stats=stats)
    return [b.picked for b in beams]


def test_ulp_noise_changes_no_beam_on_qwen(tiny_qwen_dir, vqa_examples, monkeypatch):
    """Pools with content duplicates (same image, question and answer under another id) have exactly tied P̄ in
    exact arithmetic: the demo's situation, where the last bits used to pick the beam."""
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    anchor = vqa_examples[0]
    distinct = vqa_examples[1:4]
    pool = [*distinct, *(replace(e, id=e.id + "_copy") for e in distinct)]
    stats: dict = {}
    want = _beams(model, anchor, pool, stats)
    assert stats["near_boundary_steps"] == 0
    for seed in range(6):
        assert _beams(PerturbedScores(model, seed), anchor, pool) == want
    # Teeth: with the plain float ranking, the same perturbations pick other beams.
    monkeypatch.setattr(infoscore, "rank_step", plain_rank)
    plain = _beams(model, anchor, pool)
    assert sum(_beams(PerturbedScores(model, seed), anchor, pool) != plain for seed in range(6)) >= 2


# ---- selector inference -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def duplicated_task(tmp_path_factory):
    """A trained v1 and val pools in which every candidate also appears as a content copy under another id."""
    from tests.test_selectors import FAST_CFG, feature_task

    data = feature_task(n_clusters=30, members=4, n_val=80, seed=5)
    out = tmp_path_factory.mktemp("v1_noise")
    train_selector("v1", beam=data["beam"], pools=data["pools"], train_features=data["train"], cfg=FAST_CFG,
                   out_dir=out, seed=0)
    tr = data["train"]
    train = Features([*tr.ids, *(i + "_copy" for i in tr.ids)], np.concatenate([tr.image, tr.image]),
                     np.concatenate([tr.text, tr.text]))
    pools = [[c for i in p for c in (i, i + "_copy")] for p in data["val_pools"]]
    return load_selector(out), data["val"], pools, train


def _perturbed_logits(sel, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    step_logits = type(sel).step_logits

    def noisy(self, state, prefix):
        out = step_logits(self, state, prefix)
        return torch.as_tensor(ulp_noise(out.detach().numpy(), rng), dtype=torch.float32)

    monkeypatch.setattr(type(sel), "step_logits", noisy)


def test_ulp_noise_changes_no_selection(duplicated_task, monkeypatch):
    sel, val, pools, train = duplicated_task
    want = sel.select(val, pools, train, shot=2)
    near = list(sel.near_boundary)
    for seed in range(4):
        with monkeypatch.context() as m:
            _perturbed_logits(sel, m, seed)
            got = sel.select(val, pools, train, shot=2)
        changed = [q for q, (a, b) in enumerate(zip(got, want)) if a != b]
        assert all(near[q] for q in changed), changed  # only a pick reported as near a boundary may move
        assert not changed
    assert sum(near) <= 0.05 * len(near)


def test_plain_argmax_follows_the_last_bits(duplicated_task, monkeypatch):
    """Teeth for the test above: with the pre-grid argmax the same perturbations change selections."""
    sel, val, pools, train = duplicated_task

    def plain_argmax(scores, grid, noise=0.0):
        return scores.argmax(dim=-1), torch.zeros(scores.shape[0], dtype=torch.bool)

    monkeypatch.setattr(selector_common, "grid_argmax", plain_argmax)
    want = sel.select(val, pools, train, shot=2)
    changed = 0
    for seed in range(4):
        with monkeypatch.context() as m:
            _perturbed_logits(sel, m, seed)
            changed += sel.select(val, pools, train, shot=2) != want
    assert changed >= 2


def test_selector_grid_is_configurable_and_recorded(duplicated_task, tmp_path):
    sel, *_ = duplicated_task
    assert sel.cfg["score_grid"] == 1e-3 and sel.score_grid == 1e-3
    x = torch.tensor([[1.0, 1.0004, float("-inf"), 0.2]])
    assert selector_common.grid_argmax(x, 1e-3)[0].tolist() == [0]  # one unit: tie → lowest position
    assert selector_common.grid_argmax(x, 1e-4)[0].tolist() == [1]
