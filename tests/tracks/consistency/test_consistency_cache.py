"""The API response cache of the consistency stage: the client keys entries by request body alone, so the stage's
cache directory must carry everything else that decides an answer — a run with another injected difference (or
other served models, batch sizes or serving code) must never be answered from an earlier run's entries."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from leverplus.tracks.consistency.demo import generate_corpus
from leverplus.core.io import write_json
from leverplus.tracks.consistency.assets import ASSETS, EMBEDDER, RERANKER
from leverplus.tracks.consistency import stages as stage

from test_consistency_agreement import EMB_CFG, RR_CFG, api_cfg

MODELS = {"embedder": {"source": "demo", "name": EMBEDDER}, "reranker": {"source": "demo", "name": RERANKER}}


def _run_api_rule(tmp_path, corpus_path, cache_root, api, tag):
    out = [tmp_path / f"{tag}.npy", tmp_path / f"{tag}.json"]
    stage.embed_rerank_api(
        input=SimpleNamespace(corpus=str(corpus_path), embedder=str(ASSETS / EMBEDDER), reranker=str(ASSETS / RERANKER)),
        output=[str(p) for p in out],
        params={"recipes": {"embedder": EMB_CFG, "reranker": RR_CFG}, "api": api, "models": MODELS,
                "cache_root": str(cache_root)},
        wildcards={"cons_set": "demo"}, threads=1)
    rec = json.loads(out[1].read_text())
    return np.asarray([p for q in rec["prob"] for p in q]), rec["meta"]["client_stats"]


def test_changing_the_injected_difference_does_not_reuse_old_responses(tmp_path):
    corpus_path = tmp_path / "corpus.json"
    write_json(corpus_path, generate_corpus(seed=0, queries_per_topic=1, n_negatives=3, n_topics=2))
    cache = tmp_path / "api_cache"  # one cache root for every run, as data/consistency/{set}/api_cache is
    drifted, s1 = _run_api_rule(tmp_path, corpus_path, cache, api_cfg(rerank={"separator": "\n\n"}), "a")
    clean, s2 = _run_api_rule(tmp_path, corpus_path, cache, api_cfg(), "b")
    fresh, _ = _run_api_rule(tmp_path, corpus_path, tmp_path / "other_cache", api_cfg(), "c")
    assert s1["rerank"]["requests_sent"] > 0
    assert s2["rerank"]["requests_sent"] > 0 and s2["rerank"]["cache_hits"] == 0  # the drifted answers not reused
    np.testing.assert_array_equal(clean, fresh)
    assert np.abs(clean - drifted).max() > 1e-4
    again, s3 = _run_api_rule(tmp_path, corpus_path, cache, api_cfg(rerank={"separator": "\n\n"}), "d")
    assert s3["rerank"]["requests_sent"] == 0 and s3["embeddings"]["requests_sent"] == 0  # its own entries still hit
    np.testing.assert_array_equal(again, drifted)


def test_cache_dir_names_everything_that_decides_an_answer(tmp_path, monkeypatch):
    base = dict(models=MODELS, shipped="s0", emb_cfg=EMB_CFG, rr_cfg=RR_CFG)
    d0 = stage.cache_dir(tmp_path, api_cfg(), **base)
    assert stage.cache_dir(tmp_path, api_cfg(), **base) == d0  # stable: a rerun reads its own entries
    changed = [
        stage.cache_dir(tmp_path, api_cfg(embedding={"dtype": "bfloat16"}), **base),
        stage.cache_dir(tmp_path, api_cfg(rerank={"max_length": 64}), **base),
        stage.cache_dir(tmp_path, api_cfg(), **{**base, "shipped": "s1"}),
        stage.cache_dir(tmp_path, api_cfg(), **{**base, "models": {**MODELS, "reranker": {"source": "hf", "repo": "x"}}}),
        stage.cache_dir(tmp_path, api_cfg(), **{**base, "rr_cfg": {**RR_CFG, "batch_size": 3}}),
    ]
    monkeypatch.setattr(stage, "served_code", lambda: "other code")
    changed.append(stage.cache_dir(tmp_path, api_cfg(), **base))
    assert len({d0, *changed}) == len(changed) + 1
    remote = {**api_cfg(), "mode": "remote"}
    a = stage.cache_dir(tmp_path, {**remote, "base_url": "https://a.example/v1"}, **base)
    b = stage.cache_dir(tmp_path, {**remote, "base_url": "https://b.example/v1"}, **base)
    assert a != b and a.name.startswith("remote-")


@pytest.mark.parametrize("edit", ["server.py", "reranker.py"])
def test_served_code_digest_covers_server_and_recipe(edit):
    from leverplus.core.fingerprint import dependency_files, package_root

    files = {p.name for p in dependency_files([(stage.__name__, "api_side")], package_root())}
    assert edit in files and "embedding_backend.py" in files and "client.py" in files


def test_remote_cache_has_a_tag_and_an_expiry(tmp_path):
    """A remote deployment can change behind the same URL: `api.cache_tag` names a fresh cache directory and
    `api.cache_max_age_days` deletes answers older than that before the API rule runs."""
    import os
    import time

    base = dict(models=MODELS, shipped="s0", emb_cfg=EMB_CFG, rr_cfg=RR_CFG)
    remote = {**api_cfg(), "mode": "remote", "base_url": "https://a.example/v1"}
    untagged = stage.cache_dir(tmp_path, remote, **base)
    tagged = stage.cache_dir(tmp_path, {**remote, "cache_tag": "2026-12"}, **base)
    assert untagged != tagged and tagged == stage.cache_dir(tmp_path, {**remote, "cache_tag": "2026-12"}, **base)
    assert stage.cache_dir(tmp_path, {**api_cfg(), "cache_tag": "x"}, **base) != stage.cache_dir(tmp_path, api_cfg(), **base)
    tagged.mkdir(parents=True)
    old, new = tagged / "old.json", tagged / "new.json"
    for f in (old, new):
        f.write_text("{}")
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    assert stage.prune_cache(tagged, None) == 0 and old.exists()
    assert stage.prune_cache(tagged, 30) == 1
    assert not old.exists() and new.exists()
