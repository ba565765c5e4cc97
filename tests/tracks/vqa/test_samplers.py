"""Candidate samplers: the anchor is never in its own pool (also when a duplicate of the anchor's feature row comes
first in the similarity search), no id twice, exactly cand_num ids, deterministic from the seed; mix de-duplicates
overlapping text and image rankings."""
from __future__ import annotations

import numpy as np
import pytest

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.retrieval import SimilarityIndex
from leverplus.tracks.vqa.icd.samplers import SAMPLERS, build_pools, choose_anchors

SAMPLER_NAMES = ["rand", "text_sim", "img_sim", "mix"]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_features(n: int = 40, dim: int = 8, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    return Features(
        ids=[f"t{i:03d}" for i in range(n)],
        image=_unit(rng.normal(size=(n, dim))),
        text=_unit(rng.normal(size=(n, dim))),
    )


DUPLICATE_GROUPS = [(3, 7), (10, 11, 12)]


def features_with_duplicates() -> Features:
    """Rows 3 and 7 are identical in both modalities, and so are rows 10, 11 and 12. An exact search returns a tie
    group in one order for every member, so for all members but one, column 0 of the result is another row."""
    f = make_features()
    for vec in (f.image, f.text):
        for first, *others in DUPLICATE_GROUPS:
            for o in others:
                vec[o] = vec[first]
    return f


def test_duplicates_really_put_another_row_first():
    """Guard for the fixture: for some anchors faiss' column 0 is not the anchor (the original samplers' bug)."""
    f = features_with_duplicates()
    for vec in (f.image, f.text):
        for group in DUPLICATE_GROUPS:
            hits = SimilarityIndex(vec).search(vec[list(group)], len(group) + 1)
            assert all(set(h[: len(group)]) == set(group) for h in hits)
            assert sum(int(h[0] != g) for g, h in zip(group, hits)) == len(group) - 1


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("cand_num", [5, 39])  # 39: every other train example
def test_pool_invariants(sampler, cand_num):
    feats = features_with_duplicates()
    anchors = ["t003", "t007", "t010", "t011", "t012", "t000", "t039"]
    pools = SAMPLERS[sampler](feats, anchors, cand_num, 0)
    assert len(pools) == len(anchors)
    for a, pool in zip(anchors, pools):
        assert a not in pool, (sampler, a)
        assert len(pool) == cand_num
        assert len(set(pool)) == cand_num
        assert set(pool) <= set(feats.ids)


@pytest.mark.parametrize("sampler", ["text_sim", "img_sim"])
@pytest.mark.parametrize("anchor_row, twin_row", [(3, 7), (7, 3)])
def test_similarity_pool_is_the_ranking_without_the_anchor(sampler, anchor_row, twin_row):
    feats = features_with_duplicates()
    vec = feats.text if sampler == "text_sim" else feats.image
    [pool] = SAMPLERS[sampler](feats, [feats.ids[anchor_row]], 6, 0)
    sims = vec @ vec[anchor_row]
    order = sorted((i for i in range(len(feats.ids)) if i != anchor_row), key=lambda i: -sims[i])
    assert pool[0] == feats.ids[twin_row]  # the anchor's duplicate is the most similar *other* example
    assert pool == [feats.ids[i] for i in order[:6]]


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_deterministic_from_the_seed(sampler):
    feats = make_features()
    anchors = choose_anchors(feats.ids, 10, seed=3)
    a = SAMPLERS[sampler](feats, anchors, 8, 3)
    b = SAMPLERS[sampler](feats, anchors, 8, 3)
    assert a == b
    assert build_pools(sampler, feats, 10, 8, 3).equals(build_pools(sampler, feats, 10, 8, 3))


def test_rand_seed_changes_the_pools():
    feats = make_features()
    anchors = feats.ids[:10]
    assert SAMPLERS["rand"](feats, anchors, 8, 0) != SAMPLERS["rand"](feats, anchors, 8, 1)


def test_rand_covers_every_non_anchor_row():
    """The anchor-skipping shift must not make any other example unreachable (e.g. the last row)."""
    feats = make_features(n=12)
    seen = set()
    for seed in range(40):
        for pool in SAMPLERS["rand"](feats, ["t005", "t011"], 4, seed):
            seen.update(pool)
    assert seen == set(feats.ids)


def test_choose_anchors_deterministic_distinct_and_bounded():
    ids = [f"t{i}" for i in range(30)]
    a = choose_anchors(ids, 12, seed=5)
    assert a == choose_anchors(ids, 12, seed=5)
    assert len(set(a)) == 12 and set(a) <= set(ids)
    assert a != choose_anchors(ids, 12, seed=6)
    with pytest.raises(ValueError, match="sample_num"):
        choose_anchors(ids, 31, seed=0)


def _interleave_unique(t: list[str], i: list[str]) -> list[str]:
    out: list[str] = []
    for pair in zip(t, i):
        for c in pair:
            if c not in out:
                out.append(c)
    return out


def test_mix_deduplicates_identical_rankings():
    """Text and image features identical → both rankings identical: mix must not repeat any id."""
    f = make_features()
    f.image = f.text.copy()
    anchors = ["t000", "t005", "t020"]
    mix = SAMPLERS["mix"](f, anchors, 8, 0)
    text = SAMPLERS["text_sim"](f, anchors, 8, 0)
    for m, t in zip(mix, text):
        assert len(set(m)) == len(m) == 8
        assert m == t  # the interleaving of a ranking with itself is that ranking


def test_mix_interleaves_partially_overlapping_rankings():
    f = make_features(seed=1)
    f.image[: len(f.ids) // 2] = f.text[: len(f.ids) // 2]  # half of the rows agree across modalities
    anchors = ["t002", "t030"]
    text = SAMPLERS["text_sim"](f, anchors, 10, 0)
    image = SAMPLERS["img_sim"](f, anchors, 10, 0)
    mix = SAMPLERS["mix"](f, anchors, 10, 0)
    overlapped = False
    for m, t, i, a in zip(mix, text, image, anchors):
        overlapped |= bool(set(t) & set(i))
        assert a not in m and len(set(m)) == len(m) == 10
        assert m == _interleave_unique(t, i)[:10]
    assert overlapped


def test_build_pools_table_and_errors():
    feats = features_with_duplicates()
    table = build_pools("img_sim", feats, 6, 5, seed=0)
    assert list(table.columns) == ["anchor", "candidates"]
    assert list(table["anchor"]) == choose_anchors(feats.ids, 6, 0)
    for a, pool in zip(table["anchor"], table["candidates"]):
        assert a not in list(pool) and len(set(pool)) == 5
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        build_pools("nope", feats, 6, 5, seed=0)
    with pytest.raises(ValueError, match="cand_num"):
        build_pools("rand", feats, 6, len(feats.ids), seed=0)
