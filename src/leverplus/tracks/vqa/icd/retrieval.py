"""Exact inner-product search (faiss) over L2-normalised features, and the retrieval baselines built on it."""
from __future__ import annotations

import hashlib

import numpy as np

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.ranking import RETRIEVAL_TOL, tie_groups


class SimilarityIndex:
    """Cosine-similarity search over the rows of `vectors` (already L2-normalised), ties grouped by a tolerance.

    faiss' flat index computes the similarities exactly, but its order for tied rows follows its heap (not the row
    index), and which of two rows whose similarities differ only in the last float bits comes first depends on the
    CPU's kernels. Templated questions tie a lot, so that would decide which train examples enter a pool. Ranking
    therefore groups the sorted similarities where consecutive gaps are at most ``tol`` (:data:`RETRIEVAL_TOL`, far
    above float32 noise of a unit-vector dot product; :mod:`leverplus.tracks.vqa.icd.ranking`), ties broken by ascending row
    index; the search widens until the whole group holding the k-th row has been seen, so the result does not depend
    on faiss' order either."""

    def __init__(self, vectors: np.ndarray, tol: float = RETRIEVAL_TOL):
        import faiss

        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)
        self.tol = tol

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        n = self.index.ntotal
        k = min(k, n)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out = np.empty((len(queries), k), dtype=np.int64)
        todo = np.arange(len(queries))
        width = min(n, 2 * k + 16)
        while len(todo):
            sims, idx = self.index.search(queries[todo], width)
            again = []
            for r, q in enumerate(todo):
                s = sims[r].astype(np.float64)
                first = np.lexsort((idx[r], -s))  # faiss' order is by similarity; make equal values deterministic
                groups = tie_groups(s[first], self.tol)
                # the group holding the k-th row may continue past the searched width: search wider for this query
                if width < n and groups[-1] == groups[k - 1]:
                    again.append(q)
                    continue
                order = np.lexsort((idx[r][first], groups))  # tie groups by similarity, then row index ascending
                out[q] = idx[r][first][order[:k]]
            todo = np.asarray(again, dtype=np.int64)
            width = min(n, 2 * width)
        return out


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


def majority_answer(answers) -> str:
    """The most frequent of a question's human answers (lower-cased, stripped); ties: the alphabetically first."""
    counts: dict[str, int] = {}
    for a in answers:
        a = str(a).strip().lower()
        counts[a] = counts.get(a, 0) + 1
    if not counts:
        raise ValueError("a question without answers has no majority answer")
    return min(counts, key=lambda a: (-counts[a], a))


def oracle_choice(queries: Features, pool: Features, query_answers, pool_answers, k: int) -> list[list[str]]:
    """The **oracle** baseline: an upper reference that reads each query's ground truth, not a method.

    Per query, its k most image-similar pool examples among those whose majority answer equals the query's (on the
    demo: demonstrations of the query's class whose answer is right); where fewer than k share it, the rest are the
    most image-similar of the others. Most similar first; ranking with the tie groups of :class:`SimilarityIndex`.
    """
    if len(query_answers) != len(queries.ids) or len(pool_answers) != len(pool.ids):
        raise ValueError("oracle_choice: one answers list per query and per pool example")
    want = [majority_answer(a) for a in query_answers]
    have = [majority_answer(a) for a in pool_answers]
    ranked = SimilarityIndex(pool.image).search(queries.image, len(pool.ids))
    out = []
    for qid, target, row in zip(queries.ids, want, ranked):
        rows = [j for j in row if pool.ids[j] != qid]
        match = [j for j in rows if have[j] == target]
        rest = [j for j in rows if have[j] != target]
        out.append([pool.ids[j] for j in (match + rest)[:k]])
    return out
