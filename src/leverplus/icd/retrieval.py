"""Exact inner-product search (faiss) over L2-normalised features, and the retrieval baselines built on it."""
from __future__ import annotations

import hashlib

import numpy as np

from .features import Features


class SimilarityIndex:
    """Cosine-similarity search over the rows of `vectors` (already L2-normalised). The flat index is exact and
    deterministic; exactly tied rows come back in a fixed order that is *not* ascending row index (faiss' heap
    returns the later row first), so a query's own row need not be in column 0 when it has a duplicate."""

    def __init__(self, vectors: np.ndarray):
        import faiss

        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        k = min(k, self.index.ntotal)
        _, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return idx


def retrieve(kind: str, queries: Features, pool: Features, k: int, *, exclude_same_id: bool = True) -> list[list[str]]:
    """Top-k pool ids per query by `kind` in {text_sim, img_sim}, most similar first."""
    vec = {"text_sim": "text", "img_sim": "image"}[kind]
    index = SimilarityIndex(getattr(pool, vec))
    hits = index.search(getattr(queries, vec), k + 1)
    out = []
    for qid, row in zip(queries.ids, hits):
        ids = [pool.ids[j] for j in row if not (exclude_same_id and pool.ids[j] == qid)]
        out.append(ids[:k])
    return out


def query_rng(seed: int, qid: str) -> np.random.Generator:
    """A random stream of its own for each query id (a hash of the whole id), independent of query order."""
    digest = hashlib.sha256(str(qid).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def random_choice(queries: Features, pool: Features, k: int, seed: int) -> list[list[str]]:
    """k distinct random pool ids per query; each query has its own seeded stream (order-independent)."""
    out = []
    for qid in queries.ids:
        rng = query_rng(seed, qid)
        picks = [pool.ids[j] for j in rng.choice(len(pool.ids), size=k + 1, replace=False)]
        out.append([p for p in picks if p != qid][:k])
    return out


def random_from_pools(pool_ids: list[list[str]], k: int, query_ids: list[str], seed: int) -> list[list[str]]:
    """k distinct random ids from each query's own candidate pool (e.g. its retrieval pre-filter)."""
    out = []
    for qid, ids in zip(query_ids, pool_ids):
        rng = query_rng(seed, qid)
        out.append([ids[j] for j in rng.choice(len(ids), size=min(k, len(ids)), replace=False)])
    return out
