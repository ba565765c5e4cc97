"""Agreement between two runs of the same model (a local deployment vs an API), with 95% bootstrap CIs.

Embeddings (`embedding_agreement`): per-item cosine (mean, min, p1, median) and max |Δ| over items; neighbour
agreement on the retrieval corpus per query (overlap@k of the top-k documents, RBO of the ranked lists), averaged
over queries. CIs resample items (cosine, |Δ|) or queries (neighbours).

Reranker (`rerank_agreement`): rank agreement per query (Spearman, Kendall τ-b, overlap@k, RBO, NDCG@k of the local
ranking judged by the API scores), averaged over queries; the same correlations pooled over all pairs are reported
too, with their relation to the per-query mean stated from the numbers (pooling counts between-query score
differences as agreement, which usually inflates them, but it can also come out lower); absolute agreement pooled
over pairs (Pearson on logits and on probabilities, Lin's concordance, mean and max |Δ| of probabilities). CIs
resample queries (a cluster bootstrap: a query's pairs move together).

Extremes (cosine min / p1, max |Δ|) are reported without a CI: a percentile bootstrap of a sample's own minimum or
maximum cannot reach beyond it, so its "interval" says nothing about the population's extreme.

Task quality (`task_quality`): per-query NDCG@k of each side's ranking against the corpus qrels, beside the expected
NDCG@k of a random ranking of the same list, with bootstrap CIs over queries and paired bootstraps (local − API,
each side − random): "do they agree" and "are both good" are separate answers.

Calibration (`calibration_cv`): maps from local to API scores — logit-affine, isotonic (out_of_bounds="clip"), the
source document's cubic on probabilities — fitted and scored by k-fold cross-validation over queries (held-out MAE,
RMSE, max error), the cubic's monotonicity on the support checked. No strictly increasing map changes a rank
statistic; a calibration can only move absolute agreement.

RBO is Webber, Moffat & Zobel (2010), extrapolated (RBO_ext), implemented here (the PyPI package pins numpy < 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from leverplus.metrics.stats import bootstrap_ci

MONOTONE_NOTE = (
    "No strictly increasing map of the local scores changes a rank statistic (Spearman, Kendall, overlap@k, RBO, "
    "NDCG@k): calibration can only move absolute agreement (|Δ|, Lin's CCC, Pearson). Isotonic regression is only "
    "non-decreasing (flat steps tie scores, which can lower rank agreement); a cubic that is not monotone on the "
    "support reorders items — a defect, not a fix."
)
POOLED_NOTE = ("pooled over all pairs of all queries: between-query score differences count as agreement, so a pooled "
               "correlation is not the per-query agreement (it is usually higher — inflated — but can be lower)")
EXTREME_NOTE = ("extreme order statistic over the items: no bootstrap CI (a percentile bootstrap of a sample's minimum or "
                "maximum cannot reach beyond the sample itself)")


def pooled_relation(pooled: float, per_query: dict) -> str:
    """How a pooled correlation relates to the per-query mean: `inflated` above its CI, `deflated` below, else
    `within the per-query CI` (computed, never assumed)."""
    lo, hi = per_query["ci95"]
    if any(v is None or not np.isfinite(v) for v in (pooled, lo, hi)):
        return "undefined"
    if pooled > hi:
        return "inflated"
    if pooled < lo:
        return "deflated"
    return "within the per-query CI"


def rbo(a, b, p: float = 0.9, depth: int | None = None) -> float:
    """Extrapolated rank-biased overlap of two rankings without ties (Webber et al. 2010, eq. 32 for lists of equal
    length; lists are cut to `depth`, default the shorter length). 1 = identical, 0 = disjoint."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    k = min(len(a), len(b)) if depth is None else min(depth, len(a), len(b))
    if k == 0:
        return float("nan")
    a, b = list(a)[:k], list(b)[:k]
    if len(set(a)) != k or len(set(b)) != k:
        raise ValueError("rbo: rankings must not repeat items")
    seen_a, seen_b, overlap, total = set(), set(), 0, 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += overlap / d * p**d
    return float(overlap / k * p**k + (1 - p) / p * total)


def overlap_at_k(a, b, k: int) -> float:
    k = min(k, len(a), len(b))
    return len(set(list(a)[:k]) & set(list(b)[:k])) / k


def lin_ccc(x, y) -> float:
    """Lin's concordance correlation coefficient (population moments)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    vx, vy = x.var(), y.var()
    denom = vx + vy + (x.mean() - y.mean()) ** 2
    return float(2 * np.mean((x - x.mean()) * (y - y.mean())) / denom) if denom > 0 else float("nan")


def _pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.array_equal(x, y) else float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _rank_corr(fn, x, y) -> float:
    """Spearman/Kendall of two score vectors; identical vectors give 1 even when constant, else a constant side is
    undefined (nan, dropped from the average and counted)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.array_equal(x, y):
        return 1.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if fn == "kendall":
        return float(sps.kendalltau(x, y, variant="b").statistic)
    return float(sps.spearmanr(x, y).statistic)


def ranking(scores) -> list[int]:
    """Indices by descending score, ties broken by position (stable)."""
    return [int(i) for i in np.argsort(-np.asarray(scores, float), kind="stable")]


def _summary(value: float, ci, n: int, **extra) -> dict:
    return {"value": float(value), "ci95": [float(ci[0]), float(ci[1])], "n": int(n), **extra}


def _extreme(value: float, n: int) -> dict:
    return {"value": float(value), "ci95": None, "n": int(n), "note": EXTREME_NOTE}


def _mean_over(values, *, n_resamples: int, seed: int, what: str) -> dict:
    arr = np.asarray(values, float)
    ok = arr[~np.isnan(arr)]
    if ok.size == 0:
        return {"value": float("nan"), "ci95": [float("nan")] * 2, "n": 0, "undefined": int(arr.size), "over": what}
    ci = bootstrap_ci(ok, n_resamples=n_resamples, seed=seed)
    return _summary(ok.mean(), ci, ok.size, undefined=int(arr.size - ok.size), over=what)


def embedding_agreement(local: np.ndarray, api: np.ndarray, *, query_rows, doc_rows, k: int = 5, rbo_p: float = 0.9,
                        n_resamples: int = 1000, seed: int = 0) -> dict:
    """`local`, `api`: [n_items, d] embeddings of the same items; `query_rows`/`doc_rows`: which rows are the
    retrieval queries and documents (neighbour agreement ranks all documents per query)."""
    local, api = np.asarray(local, np.float64), np.asarray(api, np.float64)
    if local.shape != api.shape:
        raise ValueError(f"embedding shapes differ: local {local.shape} vs api {api.shape}")
    n = len(local)
    cos = np.sum(local * api, 1) / np.maximum(np.linalg.norm(local, axis=1) * np.linalg.norm(api, axis=1), 1e-300)
    absd = np.max(np.abs(local - api), axis=1)
    boot = dict(n_resamples=n_resamples, seed=seed)
    out = {
        "n_items": n, "dim": int(local.shape[1]),
        "cosine_mean": _summary(cos.mean(), bootstrap_ci(cos, **boot), n),
        "cosine_min": _extreme(cos.min(), n),
        "cosine_p1": _extreme(np.percentile(cos, 1), n),
        "cosine_median": _summary(np.median(cos), bootstrap_ci(cos, statistic=np.median, **boot), n),
        "max_abs_diff": _extreme(absd.max(), n),
        "per_item_cosine": cos.tolist(),
    }
    q, d = np.asarray(query_rows, int), np.asarray(doc_rows, int)
    sl, sa = local[q] @ local[d].T, api[q] @ api[d].T
    ov = [overlap_at_k(ranking(sl[i]), ranking(sa[i]), k) for i in range(len(q))]
    rb = [rbo(ranking(sl[i]), ranking(sa[i]), rbo_p) for i in range(len(q))]
    out["neighbours"] = {
        "k": k, "rbo_p": rbo_p, "n_documents": int(len(d)),
        f"overlap_at_{k}": _mean_over(ov, what="queries", **boot),
        "rbo": _mean_over(rb, what="queries", **boot),
    }
    return out


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class RerankRun:
    """Scores of one side, one array per query (candidates in the same order on both sides)."""

    prob: list[np.ndarray]
    logit: list[np.ndarray] | None = None

    def logits(self) -> list[np.ndarray]:
        return self.logit if self.logit is not None else [_logit(p) for p in self.prob]


def rerank_agreement(local: RerankRun, api: RerankRun, *, k: int = 5, rbo_p: float = 0.9, n_resamples: int = 1000,
                     seed: int = 0) -> dict:
    if len(local.prob) != len(api.prob) or any(len(a) != len(b) for a, b in zip(local.prob, api.prob)):
        raise ValueError("local and API rerank scores must cover the same queries and candidates")
    from sklearn.metrics import ndcg_score

    lp, ap = [np.asarray(x, float) for x in local.prob], [np.asarray(x, float) for x in api.prob]
    ll, al = local.logits(), api.logits()
    nq = len(lp)
    boot = dict(n_resamples=n_resamples, seed=seed)
    per_query = {
        "spearman": [_rank_corr("spearman", a, b) for a, b in zip(lp, ap)],
        "kendall_tau_b": [_rank_corr("kendall", a, b) for a, b in zip(lp, ap)],
        f"overlap_at_{k}": [overlap_at_k(ranking(a), ranking(b), k) for a, b in zip(lp, ap)],
        "rbo": [rbo(ranking(a), ranking(b), rbo_p) for a, b in zip(lp, ap)],
        f"ndcg_at_{k}": [float(ndcg_score(b[None], a[None], k=k)) if len(a) > 1 else float("nan")
                         for a, b in zip(lp, ap)],
    }
    out = {"n_queries": nq, "n_pairs": int(sum(map(len, lp))), "k": k, "rbo_p": rbo_p,
           "per_query_mean": {name: _mean_over(v, what="queries", **boot) for name, v in per_query.items()},
           "per_query": per_query}

    def pooled(fn):
        def stat(idx):
            idx = np.asarray(idx, int)
            return fn(np.concatenate([lp[i] for i in idx]), np.concatenate([ap[i] for i in idx]),
                      np.concatenate([ll[i] for i in idx]), np.concatenate([al[i] for i in idx]))
        value = stat(np.arange(nq))
        return _summary(value, bootstrap_ci(np.arange(nq), statistic=stat, **boot), sum(map(len, lp)),
                        resampled="queries")

    out["pooled"] = {"note": POOLED_NOTE}
    for name in ("spearman", "kendall_tau_b"):
        fn = "spearman" if name == "spearman" else "kendall"
        s = pooled(lambda x, y, _a, _b, fn=fn: _rank_corr(fn, x, y))
        s["relation_to_per_query"] = pooled_relation(s["value"], out["per_query_mean"][name])
        out["pooled"][name] = s
    out["absolute"] = {
        "pearson_logit": pooled(lambda _x, _y, a, b: _pearson(a, b)),
        "pearson_prob": pooled(lambda x, y, _a, _b: _pearson(x, y)),
        "lin_ccc_prob": pooled(lambda x, y, _a, _b: lin_ccc(x, y)),
        "mean_abs_diff_prob": pooled(lambda x, y, _a, _b: float(np.mean(np.abs(x - y)))),
        "max_abs_diff_prob": _extreme(max(float(np.max(np.abs(a - b))) for a, b in zip(lp, ap)), sum(map(len, lp))),
    }
    return out


# ---- calibration -----------------------------------------------------------------------------------------------------

def _fit_predict(method: str, lx_logit, lx_prob, y, tx_logit, tx_prob):
    if method == "identity":
        return tx_prob
    if method == "logit_affine":
        a, b = np.polyfit(lx_logit, _logit(y), 1)
        return 1 / (1 + np.exp(-(a * tx_logit + b)))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(lx_prob, y).predict(tx_prob)
    if method == "cubic":
        return np.polyval(np.polyfit(lx_prob, y, 3), tx_prob)
    raise ValueError(method)


CALIBRATIONS = ("identity", "logit_affine", "isotonic", "cubic")


def cubic_monotonicity(x, y) -> dict:
    """The cubic fitted on all pairs: is its derivative of one sign on [min x, max x]?"""
    x = np.asarray(x, float)
    coef = np.polyfit(x, np.asarray(y, float), 3)
    grid = np.linspace(x.min(), x.max(), 2001)
    der = np.polyval(np.polyder(coef), grid)
    inc, dec = bool(np.all(der >= 0)), bool(np.all(der <= 0))
    return {"coefficients": coef.tolist(), "support": [float(x.min()), float(x.max())],
            "monotone_on_support": inc or dec, "increasing": inc}


def calibration_cv(local: RerankRun, api: RerankRun, *, folds: int = 5, seed: int = 0) -> dict:
    """Held-out error of each local→API map under k-fold CV over queries (every query's pairs stay in one fold)."""
    nq = len(local.prob)
    folds = max(2, min(folds, nq))
    order = np.random.default_rng(seed).permutation(nq)
    fold_of = np.empty(nq, int)
    fold_of[order] = np.arange(nq) % folds
    lp, ll, ap = (np.concatenate(v) for v in (local.prob, local.logits(), api.prob))
    group = np.concatenate([[i] * len(p) for i, p in enumerate(local.prob)])
    pred = {m: np.empty_like(ap) for m in CALIBRATIONS}
    for f in range(folds):
        tr, te = fold_of[group] != f, fold_of[group] == f
        for m in CALIBRATIONS:
            pred[m][te] = _fit_predict(m, ll[tr], lp[tr], ap[tr], ll[te], lp[te])
    methods = {}
    for m in CALIBRATIONS:
        err = np.abs(pred[m] - ap)
        insample = _fit_predict(m, ll, lp, ap, ll, lp)
        methods[m] = {"heldout_mae": float(err.mean()), "heldout_rmse": float(np.sqrt(np.mean(err**2))),
                      "heldout_max_error": float(err.max()), "heldout_pearson": _pearson(pred[m], ap),
                      "insample_pearson": _pearson(insample, ap)}
    return {"folds": folds, "seed": seed, "n_pairs": int(len(ap)), "n_queries": nq, "methods": methods,
            "cubic": cubic_monotonicity(lp, ap), "note": MONOTONE_NOTE}


# ---- diagnosis distances -----------------------------------------------------------------------------------------------

def embedding_distance(local: np.ndarray, api: np.ndarray) -> dict:
    """How far one local variant is from the API: 1 − mean cosine and max |Δ| (smaller is closer)."""
    local, api = np.asarray(local, np.float64), np.asarray(api, np.float64)
    cos = np.sum(local * api, 1) / np.maximum(np.linalg.norm(local, axis=1) * np.linalg.norm(api, axis=1), 1e-300)
    return {"one_minus_cosine_mean": float(1 - cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float(np.max(np.abs(local - api)))}


def rerank_distance(local: RerankRun, api: RerankRun) -> dict:
    lp, ap = np.concatenate(local.prob), np.concatenate(api.prob)
    taus = [_rank_corr("kendall", a, b) for a, b in zip(local.prob, api.prob)]
    return {"mean_abs_diff_prob": float(np.mean(np.abs(lp - ap))), "max_abs_diff_prob": float(np.max(np.abs(lp - ap))),
            "kendall_tau_b_mean": float(np.nanmean(taus)) if not np.all(np.isnan(taus)) else float("nan")}


# ---- task quality ------------------------------------------------------------------------------------------------------

def _ndcg(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    from sklearn.metrics import ndcg_score

    if len(gains) < 2 or not np.any(gains > 0):
        return float("nan")
    return float(ndcg_score(gains[None], np.asarray(scores, float)[None], k=k))


def _random_ndcg(gains: np.ndarray, k: int, rng: np.random.Generator, draws: int) -> float:
    """Expected NDCG@k of a uniformly random ranking (mean over `draws` seeded permutations)."""
    if len(gains) < 2 or not np.any(gains > 0):
        return float("nan")
    return float(np.mean([_ndcg(gains, rng.permutation(len(gains)).astype(float), k) for _ in range(draws)]))


def task_quality(corpus: dict, runs: dict, *, k: int = 5, n_resamples: int = 1000, seed: int = 0,
                 random_draws: int = 200) -> dict:
    """Per-query NDCG@k against the corpus qrels (binary gains: a candidate listed in `qrels[query_id]`) for each
    named run (`{name: RerankRun}`, candidates in `corpus["rerank"]` order), the expected NDCG@k of a random ranking,
    95% bootstrap CIs over queries, and paired bootstraps: each run − random, and the first two runs' difference.
    Queries whose list holds no relevant candidate have no NDCG and are left out (counted)."""
    from leverplus.metrics.stats import paired_bootstrap

    qrels = corpus.get("qrels") or {}
    gains = [np.array([float(c in set(qrels.get(r["query_id"], ()))) for c in r["candidates"]]) for r in corpus["rerank"]]
    rng = np.random.default_rng(seed)
    rand = np.array([_random_ndcg(g, k, rng, random_draws) for g in gains])
    ok = ~np.isnan(rand)
    boot = dict(n_resamples=n_resamples, seed=seed)
    out = {"k": k, "gains": "binary, from corpus qrels", "n_queries": int(ok.sum()),
           "undefined": int((~ok).sum()), "random": _mean_over(rand[ok], what="queries", **boot), "vs_random": {}}
    per = {}
    for name, run in runs.items():
        if len(run.prob) != len(gains):
            raise ValueError(f"task quality: run {name!r} has {len(run.prob)} score lists for {len(gains)} rerank lists")
        v = np.array([_ndcg(g, p, k) for g, p in zip(gains, run.prob)])
        per[name] = v[ok]
        out[name] = _mean_over(v[ok], what="queries", **boot)
        out["vs_random"][name] = paired_bootstrap(v[ok], rand[ok], **boot) if ok.any() else None
    names = list(runs)
    if len(names) >= 2 and ok.any():
        out["paired"] = {"a": names[0], "b": names[1], **paired_bootstrap(per[names[0]], per[names[1]], **boot)}
    return out
