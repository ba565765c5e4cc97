"""Same config, same decisions on another CPU (issue 9, item 9; issue 20, item 1).

Another CPU computes the same P̄ / selector logits / similarities up to a few ulps. Ranking decisions group the
sorted scores where consecutive gaps are at most a tolerance and order inside a group by a stable key
(`leverplus.tracks.vqa.icd.ranking`), so moving every score by a few float32 ulps with random signs must change no beam, no
selection and no retrieved row — wherever the tied values lie: at the centre of a 1e-5 cell, on a cell boundary
(where the previous grid ranking split a tied cluster by its last bits) or anywhere at random. Each test also shows
its inputs have teeth: the plain float ranking, and the previous fixed-grid ranking on boundary clusters, do change
under the same perturbations.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from leverplus.tracks.vqa.icd import infoscore
from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.infoscore import beam_search_anchor, rank_step
from leverplus.tracks.vqa.icd.ranking import INFOSCORE_NOISE, INFOSCORE_TOL, RETRIEVAL_TOL, SELECTOR_TOL, is_fragile
from leverplus.tracks.vqa.icd.retrieval import SimilarityIndex
from leverplus.tracks.vqa.icd.selectors import load_selector, train_selector
from leverplus.tracks.vqa.icd.selectors import common as selector_common
from leverplus.tracks.vqa.models.base import load_icl_model

MAX_ULPS = 4


def ulp_noise(x, rng, max_ulps: int = MAX_ULPS) -> np.ndarray:
    """Every value moved by 1…max_ulps float32 ulps, each with a random sign (what another CPU's kernels do)."""
    x = np.asarray(x, dtype=np.float32)
    out = x.copy()
    steps = rng.integers(1, max_ulps + 1, size=x.shape)
    towards = np.where(rng.random(x.shape) < 0.5, np.float32(-np.inf), np.float32(np.inf)).astype(np.float32)
    for k in range(1, max_ulps + 1):
        move = (steps >= k) & np.isfinite(out)
        out[move] = np.nextafter(out[move], towards[move])
    return out.astype(np.float64)


def plain_rank(p_new, p_beam, beam_idx, pos, keep, **_):
    """The ranking before any tie handling: raw float InfoScore, ties → beam index, pool position."""
    info = np.asarray(p_new, np.float64) - np.asarray(p_beam, np.float64)
    return np.lexsort((pos, beam_idx, -info))[:keep], False


def grid_rank(p_new, p_beam, beam_idx, pos, keep, grid=1e-5):
    """The previous ranking (before issue 20): InfoScore in whole units of a fixed 1e-5 grid, round(p_new/grid) −
    round(p_beam/grid), ties → beam index, pool position. Kept here only to show the boundary test has teeth."""
    units = np.floor(np.asarray(p_new, np.float64) / grid + 0.5) - np.floor(np.asarray(p_beam, np.float64) / grid + 0.5)
    return np.lexsort((pos, beam_idx, -units))[:keep]


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


def test_ties_go_to_the_lower_beam_then_pool_position():
    p_new = np.array([0.5 + 1e-7, 0.5, 0.5 + 2e-7, 0.5 - 1e-7])  # within the tolerance: a four-way tie
    top, _ = rank_step(p_new, np.full(4, 0.2), np.array([1, 0, 0, 0]), np.array([0, 3, 2, 1]), 4)
    assert top.tolist() == [3, 2, 1, 0]  # beam 0 first (by pool position), then beam 1
    # Real differences above the tolerance still decide, and the stored scores are not rounded by anyone.
    top, _ = rank_step(np.array([0.5, 0.5 + 3 * INFOSCORE_TOL]), np.full(2, 0.2), np.zeros(2, int), np.arange(2), 1)
    assert top.tolist() == [1]
    # Chained: each gap within the tolerance, the whole run one group (ordered by pool position).
    chain = 0.5 + np.arange(5) * 0.8 * INFOSCORE_TOL
    assert rank_step(chain, np.full(5, 0.2), np.zeros(5, int), np.arange(5), 5)[0].tolist() == [0, 1, 2, 3, 4]


def test_decisions_within_noise_of_the_tolerance_are_reported():
    """The residual risk: two genuinely different scores whose gap is within 2·noise of the tolerance may group
    either way; rank_step says so. A tied cluster on a former grid boundary is not at risk."""
    pos, beams, p_beam = np.arange(2), np.zeros(2, int), np.full(2, 0.1)
    edge = np.array([0.4, 0.4 + INFOSCORE_TOL + 1e-7])  # a gap within the P̄s' noise (≤ 1e-6 of each) of the tolerance
    top, near = rank_step(edge, p_beam, beams, pos, 1)
    assert top.tolist() == [1] and near
    boundary = (40_000 + 0.5) * 1e-5
    tied = np.array([boundary - 2.5e-7, boundary + 2.5e-7])
    top, near = rank_step(tied, p_beam, beams, pos, 1)
    assert top.tolist() == [0] and not near
    assert not is_fragile(np.array([1.0, 0.5]), 1, INFOSCORE_TOL, INFOSCORE_NOISE)


def cluster_positions(rng, grid: float, lo: float, hi: float, n_random: int = 8) -> list[tuple[str, float]]:
    """Where a tied cluster is placed: at cell centres and on half-cell boundaries of a `grid` (what a fixed grid
    ranking gets right and wrong), and at random."""
    ks = rng.integers(int(lo / grid), int(hi / grid), size=8)
    return ([("centre", k * grid) for k in ks] + [("boundary", (k + 0.5) * grid) for k in ks]
            + [("random", float(x)) for x in rng.uniform(lo, hi, n_random)])


def boundary_step(rng, centre: float):
    """A 3-beam step over 20 candidates: 9 proposals of beams 0 and 1 (whose P̄ tie) give the answer the same P̄ at
    `centre` to float32 precision (content duplicates), the others score clearly lower."""
    n_beams, n_cand = 3, 20
    p_beam = np.repeat(np.float32([0.2, 0.2, 0.1]).astype(np.float64), n_cand)
    beam_idx = np.repeat(np.arange(n_beams), n_cand)
    pos = np.tile(np.arange(n_cand), n_beams)
    tied = np.zeros(n_beams * n_cand, bool)
    tied[rng.choice(2 * n_cand, size=9, replace=False)] = True
    p_new = np.where(tied, centre, p_beam + rng.uniform(-0.09, centre - 0.21, n_beams * n_cand))
    return ulp_noise(p_new, rng, 2), ulp_noise(p_beam, rng, 1), beam_idx, pos


def test_tied_clusters_anywhere_survive_ulp_noise():
    """Issue 20, item 1: tied clusters at cell centres, on 1e-5 grid boundaries and at random positions; every P̄
    moved by up to 4 float32 ulps, 20 times each: no kept beam and no order changes. On boundary clusters the
    previous grid ranking changes its beams (teeth)."""
    rng = np.random.default_rng(2020)
    grid_changed = {"centre": 0, "boundary": 0, "random": 0}
    trials = {"centre": 0, "boundary": 0, "random": 0}
    for where, centre in cluster_positions(rng, 1e-5, 0.35, 0.95):
        p_new, p_beam, beam_idx, pos = boundary_step(rng, centre)
        want, near = rank_step(p_new, p_beam, beam_idx, pos, 5)
        assert not near, (where, centre)
        want_grid = grid_rank(p_new, p_beam, beam_idx, pos, 5).tolist()
        for _ in range(20):
            a, b = ulp_noise(p_new, rng), ulp_noise(p_beam, rng)
            assert rank_step(a, b, beam_idx, pos, 5)[0].tolist() == want.tolist(), (where, centre)
            grid_changed[where] += grid_rank(a, b, beam_idx, pos, 5).tolist() != want_grid
            trials[where] += 1
    assert grid_changed["boundary"] >= trials["boundary"] // 4, grid_changed  # the old grid follows the last bits
    assert grid_changed["centre"] == 0


def test_tied_selector_logits_anywhere_survive_ulp_noise():
    """The selector's greedy pick: a tied top cluster of logits at centres / boundaries of the old 1e-3 grid / at
    random, every logit moved by up to 4 ulps: the pick never changes (the old grid argmax does, at boundaries)."""
    rng = np.random.default_rng(7)
    old_changed = trials = 0
    for where, centre in cluster_positions(rng, SELECTOR_TOL, -3.0, 8.0):
        logits = np.where(rng.random(30) < 0.3, centre, centre - rng.uniform(0.01, 4.0, 30))
        logits[rng.integers(30)] = -np.inf  # an unavailable candidate
        logits = ulp_noise(logits, rng, 2)
        want, near = selector_common.tied_argmax(torch.tensor(logits[None]), SELECTOR_TOL)
        assert not near.item()
        old_want = np.lexsort((np.arange(30), -np.floor(logits / 1e-3 + 0.5)))[0]
        for _ in range(20):
            noisy = ulp_noise(logits, rng)
            assert selector_common.tied_argmax(torch.tensor(noisy[None]), SELECTOR_TOL)[0].item() == want.item()
            old = np.lexsort((np.arange(30), -np.floor(noisy / 1e-3 + 0.5)))[0]
            if where == "boundary":
                old_changed += old != old_want
                trials += 1
    assert old_changed >= trials // 4


def test_tied_similarities_anywhere_survive_ulp_noise():
    """Retrieval: rows whose cosine similarity to the query ties (to float32 precision) at a centre / a boundary
    of the old 1e-5 grid / at random, every stored vector moved by a few ulps: the same top-k rows."""
    rng = np.random.default_rng(3)
    changed_old = trials = 0
    for where, c in cluster_positions(rng, RETRIEVAL_TOL, 0.2, 0.9, n_random=4):
        n = 60
        cos = np.where(rng.random(n) < 0.4, c, rng.uniform(-0.5, c - 0.05, n))
        other = rng.normal(size=(n, 15))
        other /= np.linalg.norm(other, axis=1, keepdims=True)
        rows = np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None] ** 2) * other], axis=1).astype(np.float32)
        query = np.eye(16, dtype=np.float32)[:1]
        want = SimilarityIndex(rows).search(query, 8)
        old_units = np.floor((rows @ query[0]).astype(np.float64) / 1e-5 + 0.5)
        old_want = np.lexsort((np.arange(n), -old_units))[:8]
        for _ in range(10):
            noisy = ulp_noise(rows, rng).astype(np.float32)
            assert (SimilarityIndex(noisy).search(query, 8) == want).all(), (where, c)
            units = np.floor((noisy @ query[0]).astype(np.float64) / 1e-5 + 0.5)
            if where == "boundary":
                changed_old += np.lexsort((np.arange(n), -units))[:8].tolist() != old_want.tolist()
                trials += 1
    assert changed_old >= trials // 4


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
    from test_selectors import FAST_CFG, feature_task

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

    monkeypatch.setattr(selector_common, "tied_argmax", plain_argmax)
    want = sel.select(val, pools, train, shot=2)
    changed = 0
    for seed in range(4):
        with monkeypatch.context() as m:
            _perturbed_logits(sel, m, seed)
            changed += sel.select(val, pools, train, shot=2) != want
    assert changed >= 2


def test_selector_tolerance_is_configurable_and_recorded(duplicated_task, tmp_path):
    sel, *_ = duplicated_task
    assert sel.cfg["tie_tolerance"] == 1e-3 and sel.tie_tolerance == 1e-3
    x = torch.tensor([[1.0, 1.0004, float("-inf"), 0.2]])
    assert selector_common.tied_argmax(x, 1e-3)[0].tolist() == [0]  # within the tolerance: tie → lowest position
    assert selector_common.tied_argmax(x, 1e-4)[0].tolist() == [1]
