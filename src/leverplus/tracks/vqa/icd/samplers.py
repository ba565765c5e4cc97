"""Anchor sets and candidate pools for beam-search data generation.

For every anchor (a train example whose demonstrations we search for) a sampler proposes `cand_num` distinct
train examples. The anchor is never in its own pool, whatever position a similarity search returns it at, and a
pool never holds the same id twice.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.retrieval import SimilarityIndex

SAMPLERS: dict[str, Callable[..., list[list[str]]]] = {}


def register_sampler(name: str):
    def deco(fn):
        SAMPLERS[name] = fn
        return fn

    return deco


def choose_anchors(ids: list[str], sample_num: int, seed: int) -> list[str]:
    if sample_num > len(ids):
        raise ValueError(f"sample_num={sample_num} exceeds the {len(ids)} train examples")
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), size=sample_num, replace=False))]


@register_sampler("rand")
def rand_pools(feats: Features, anchors: list[str], cand_num: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    index = feats.index_of()
    pools = []
    for a in anchors:
        draw = rng.choice(len(feats.ids) - 1, size=cand_num, replace=False)
        skip = index[a]
        pools.append([feats.ids[i + (i >= skip)] for i in draw])  # shift past the anchor's own row
    return pools


def _similar_pools(feats: Features, vectors: np.ndarray, anchors: list[str], cand_num: int) -> list[list[str]]:
    index = SimilarityIndex(vectors)
    rows = [feats.index_of()[a] for a in anchors]
    hits = index.search(vectors[rows], cand_num + 1)
    pools = []
    for a_row, found in zip(rows, hits):
        pool = [feats.ids[j] for j in found if j != a_row][:cand_num]
        pools.append(pool)
    return pools


@register_sampler("text_sim")
def text_sim_pools(feats: Features, anchors: list[str], cand_num: int, seed: int) -> list[list[str]]:
    return _similar_pools(feats, feats.text, anchors, cand_num)


@register_sampler("img_sim")
def img_sim_pools(feats: Features, anchors: list[str], cand_num: int, seed: int) -> list[list[str]]:
    return _similar_pools(feats, feats.image, anchors, cand_num)


@register_sampler("mix")
def mix_pools(feats: Features, anchors: list[str], cand_num: int, seed: int) -> list[list[str]]:
    """Interleave the text- and image-similarity rankings, de-duplicated, until cand_num ids are collected."""
    by_text = _similar_pools(feats, feats.text, anchors, cand_num)
    by_img = _similar_pools(feats, feats.image, anchors, cand_num)
    fill = rand_pools(feats, anchors, cand_num, seed)
    pools = []
    for t, i, r in zip(by_text, by_img, fill):
        seen: dict[str, None] = {}
        for pair in zip(t, i):
            for c in pair:
                seen.setdefault(c, None)
        for c in r:  # both rankings overlapped: top up with random, still distinct
            if len(seen) >= cand_num:
                break
            seen.setdefault(c, None)
        pools.append(list(seen)[:cand_num])
    return pools


def build_pools(sampler: str, feats: Features, sample_num: int, cand_num: int, seed: int) -> pd.DataFrame:
    try:
        fn = SAMPLERS[sampler]
    except KeyError:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}") from None
    if cand_num >= len(feats.ids):
        raise ValueError(f"cand_num={cand_num} must be smaller than the {len(feats.ids)} train examples")
    anchors = choose_anchors(feats.ids, sample_num, seed)
    pools = fn(feats, anchors, cand_num, seed)
    for a, p in zip(anchors, pools):
        assert a not in p and len(set(p)) == len(p) == cand_num, (a, len(p))
    return pd.DataFrame({"anchor": anchors, "candidates": pools})
