"""Agreement statistics (RBO known values, identical paths, pooled correlations labelled from the numbers, extremes
without a CI), task quality against the qrels, and the API path through the local server (cache: a rerun sends no
request; `embedder.dimensions` sent). The diagnosis is in test_consistency_diagnosis.py."""
from __future__ import annotations

import numpy as np
import pytest

from leverplus.tracks.consistency.demo import generate_corpus
from leverplus.metrics.agreement import (RerankRun, calibration_cv, embedding_agreement, lin_ccc, rbo,
                                         rerank_agreement, task_quality)
from leverplus.tracks.consistency.assets import ASSETS, EMBEDDER, RERANKER
from leverplus.tracks.consistency.stages import api_side, embedding_recipe, rerank_recipe, run_local

EMB, RR = ASSETS / EMBEDDER, ASSETS / RERANKER
EMB_CFG = {"batch_size": 16}
RR_CFG = {"batch_size": 16, "instruction": "Given a web search query, retrieve relevant passages that answer the query"}


def api_cfg(embedding=None, rerank=None, query_format=None):
    return {"mode": "local_server", "base_url": None, "api_key_env": None, "embedding_model": "e", "rerank_model": "r",
            "dimensions": None, "timeout_s": 30, "max_retries": 0, "backoff_s": 0.1, "rate_limit_per_s": None,
            "batch_size": 32, "query_format": query_format or {},
            "server": {"embedding": embedding or {}, "rerank": rerank or {}}}


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(seed=0, queries_per_topic=1, n_negatives=3, n_topics=4)


@pytest.fixture(scope="module")
def local(corpus):
    emb, probs, logits, *_ = run_local(corpus, EMB, RR, embedding_recipe(EMB_CFG), rerank_recipe(RR_CFG))
    return emb, RerankRun(probs, logits)


# ---- RBO and friends -------------------------------------------------------------------------------------------------

def test_rbo_known_values():
    assert rbo([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert rbo([1, 2, 3], [4, 5, 6]) == 0.0
    # hand-computed: overlaps A_d = 1, 1/2, 1 at depths 1..3, p = 0.9:
    # A_3 p^3 + (1-p)/p * (0.9*1 + 0.81*0.5 + 0.729*1) = 0.729 + 2.034/9
    assert rbo([1, 2, 3], [1, 3, 2], p=0.9) == pytest.approx(0.729 + 2.034 / 9, abs=1e-12)
    assert rbo([1, 2], [2, 1], p=0.5) == pytest.approx(0.25 + 1.0 * (0 * 0.5 + 1 * 0.25))
    assert rbo([1, 2, 3], [1, 3, 2], p=0.9) > rbo([1, 2, 3], [3, 2, 1], p=0.9)
    with pytest.raises(ValueError):
        rbo([1, 1], [1, 2])


def test_lin_ccc_penalises_a_shift_pearson_does_not():
    x = np.linspace(0, 1, 50)
    assert lin_ccc(x, x) == pytest.approx(1.0)
    assert lin_ccc(x, x + 0.5) < 0.5


def test_identical_local_and_api_paths_agree(corpus, local):
    emb, run = local
    api_emb, api_probs, _ = api_side(corpus, api_cfg(), EMB_CFG, RR_CFG, emb_dir=EMB, rr_dir=RR)
    nq = len(corpus["queries"])
    e = embedding_agreement(emb, api_emb, query_rows=range(nq), doc_rows=range(nq, len(emb)), n_resamples=200)
    assert e["cosine_min"]["value"] >= 1 - 1e-6 and e["max_abs_diff"]["value"] < 1e-5
    assert e["neighbours"]["rbo"]["value"] == pytest.approx(1.0)
    r = rerank_agreement(run, RerankRun(api_probs), n_resamples=200)
    assert r["per_query_mean"]["kendall_tau_b"]["value"] == 1.0
    assert r["per_query_mean"]["spearman"]["value"] == 1.0
    assert r["absolute"]["mean_abs_diff_prob"]["value"] < 1e-6
    lo, hi = r["per_query_mean"]["kendall_tau_b"]["ci95"]
    assert lo == hi == 1.0


def test_rank_statistics_and_calibration(local):
    _, run = local
    rng = np.random.default_rng(0)
    noisy = RerankRun([np.clip(p + rng.normal(0, 0.05, len(p)), 0.001, 0.999) for p in run.prob])
    r = rerank_agreement(run, noisy, n_resamples=200)
    t = r["per_query_mean"]["kendall_tau_b"]
    assert t["ci95"][0] <= t["value"] <= t["ci95"][1] < 1
    assert "inflated" in r["pooled"]["note"]
    # a strictly increasing map of the local scores leaves every rank statistic unchanged
    mapped = RerankRun([p**3 for p in run.prob])
    r2 = rerank_agreement(mapped, noisy, n_resamples=200)
    for key in r["per_query_mean"]:
        assert r2["per_query_mean"][key]["value"] == pytest.approx(r["per_query_mean"][key]["value"])
    cal = calibration_cv(run, RerankRun([1 / (1 + np.exp(-(2 * x + 0.3))) for x in run.logits()]), folds=3)
    assert cal["methods"]["logit_affine"]["heldout_mae"] < 1e-6  # the exact model family
    assert cal["methods"]["identity"]["heldout_mae"] > 0.01
    assert "No strictly increasing map" in cal["note"] and "monotone_on_support" in cal["cubic"]


def test_api_rerun_is_served_from_the_cache(corpus, tmp_path):
    first = api_side(corpus, api_cfg(), EMB_CFG, RR_CFG, emb_dir=EMB, rr_dir=RR, cache_dir=str(tmp_path))
    again = api_side(corpus, api_cfg(), EMB_CFG, RR_CFG, emb_dir=EMB, rr_dir=RR, cache_dir=str(tmp_path))
    assert first[2]["rerank"]["requests_sent"] == len(corpus["rerank"])
    assert again[2]["embeddings"]["requests_sent"] == 0 and again[2]["rerank"]["requests_sent"] == 0
    np.testing.assert_array_equal(first[0], again[0])


# ---- issue 26, item 5 -----------------------------------------------------------------------------------------------

def test_pooled_correlation_is_labelled_from_the_numbers_not_assumed_inflated():
    """Per query the two sides agree perfectly; between queries their levels cross, so pooling lowers τ-b: the
    report must say deflated, not "inflated"."""
    local = RerankRun([np.array([0.1, 0.2, 0.25]), np.array([0.3, 0.4, 0.45])])
    api = RerankRun([np.array([0.35, 0.45, 0.5]), np.array([0.05, 0.15, 0.2])])
    r = rerank_agreement(local, api, n_resamples=200)
    assert r["per_query_mean"]["kendall_tau_b"]["value"] == 1.0
    pooled = r["pooled"]["kendall_tau_b"]
    assert pooled["value"] < 1.0 and pooled["relation_to_per_query"] == "deflated"
    same = rerank_agreement(local, local, n_resamples=200)["pooled"]["spearman"]
    assert same["relation_to_per_query"] == "within the per-query CI"


def test_extremes_have_no_bootstrap_ci(local):
    emb, run = local
    r = rerank_agreement(run, RerankRun([p * 0.9 for p in run.prob]), n_resamples=100)
    assert r["absolute"]["max_abs_diff_prob"]["ci95"] is None
    assert r["absolute"]["max_abs_diff_prob"]["value"] == pytest.approx(max(float(np.max(p * 0.1)) for p in run.prob))
    rng = np.random.default_rng(0)
    other = emb + rng.normal(0, 1e-3, emb.shape).astype(np.float32)
    e = embedding_agreement(emb, other, query_rows=range(4), doc_rows=range(4, len(emb)), n_resamples=200)
    for key in ("cosine_min", "cosine_p1", "max_abs_diff"):
        assert e[key]["ci95"] is None and "no bootstrap CI" in e[key]["note"], key
    lo, hi = e["cosine_median"]["ci95"]
    assert lo <= e["cosine_median"]["value"] <= hi


def test_task_quality_against_qrels_with_paired_ci(corpus):
    qrels = corpus["qrels"]
    perfect = RerankRun([np.array([float(c in qrels[r["query_id"]]) for c in r["candidates"]]) for r in corpus["rerank"]])
    inverted = RerankRun([1 - p for p in perfect.prob])
    tq = task_quality(corpus, {"local": perfect, "api": inverted}, k=3, n_resamples=200)
    assert tq["local"]["value"] == 1.0 and tq["api"]["value"] < tq["random"]["value"] < 1.0
    assert tq["paired"]["a"] == "local" and tq["paired"]["diff"] > 0 and tq["paired"]["ci95"][0] > 0
    assert tq["vs_random"]["local"]["diff"] > 0 and tq["n_queries"] == len(corpus["rerank"])
    with pytest.raises(ValueError, match="score lists"):
        task_quality(corpus, {"x": RerankRun(perfect.prob[:1])})


def test_embedder_dimensions_are_sent_to_the_api(corpus):
    cfg = {**EMB_CFG, "dimensions": 32}
    emb, *_ = run_local(corpus, EMB, RR, embedding_recipe(cfg), rerank_recipe(RR_CFG))
    api_emb, _, stats = api_side(corpus, api_cfg(), cfg, RR_CFG, emb_dir=EMB, rr_dir=RR)
    assert stats["dimensions_sent"] == 32 and api_emb.shape == emb.shape == (len(emb), 32)
    nq = len(corpus["queries"])
    e = embedding_agreement(emb, api_emb, query_rows=range(nq), doc_rows=range(nq, len(emb)), n_resamples=100)
    assert e["cosine_mean"]["value"] > 1 - 1e-6


def test_a_variant_that_could_not_run_is_not_drawn_as_zero(tmp_path):
    from leverplus.tracks.consistency.report import diagnosis_rows, figure

    d = {"distance": "mean_abs_diff_prob", "summary": "s", "device": "cpu", "noise_floor": {}, "variants": [
        {"cause": "none", "variant": "as configured", "mean_abs_diff_prob": 0.02, "within": False, "share_of_gap": 0.0},
        {"cause": "truncation", "variant": "max_length=32", "mean_abs_diff_prob": None, "within": False,
         "share_of_gap": None, "error": "ValueError: no room"}]}
    rows = diagnosis_rows(d)
    assert rows[1][2] is None and rows[1][3].startswith("could not run")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    real_barh = plt.Axes.barh

    def spy(self, labels, vals, *a, **k):
        bars = real_barh(self, labels, vals, *a, **k)
        drawn.append(bars)
        return bars

    rep = {"embedding": {"per_item_cosine": [1.0]}, "rerank": {"per_query": {"kendall_tau_b": [1.0]}},
           "diagnosis": {"rerank": d}}
    plt.Axes.barh = spy
    try:
        figure(rep, tmp_path / "f.png")
    finally:
        plt.Axes.barh = real_barh
    assert [b.get_visible() for b in drawn[0]] == [True, False]  # no zero-length bar for the variant that did not run
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
