"""The consistency DAG on the `.test/consistency.yaml` slice, in a temporary working directory: every statistic
filled with a CI (extremes: none, by design), task quality for both sides with a paired CI, the diagnosis names the
demo's injected difference, device and dtype recorded, a rerun of the API rule sends no request."""
from __future__ import annotations

import json

import pytest

from workflow_helpers import ROOT, smk, workdir

# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Tests using the module's DAG
# fixture share one xdist worker (tests/conftest.py), so the DAG runs once per test session.
pytestmark = pytest.mark.slow

TARGET = "results/consistency/demo/report.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("cons"))
    smk(TARGET, "--cores", "2", "--directory", str(work), f"--configfile={ROOT / '.test/consistency.yaml'}")
    return work


def _cis(node, path=""):
    if isinstance(node, dict):
        if "ci95" in node and "value" in node:
            yield path, node
        for k, v in node.items():
            yield from _cis(v, f"{path}.{k}")


@pytest.mark.slow
def test_report_is_filled_and_names_the_injected_cause(run):
    rep = json.loads((run / TARGET).read_text())
    found = list(_cis(rep))
    # 7 embedding, 5 per-query, 2 pooled, 5 absolute, task quality: local, api, random; the extremes (cosine min /
    # p1, max |Δ| of embeddings and of rerank probabilities) carry a value without a CI
    assert len(found) == 22
    for path, s in found:
        assert s["value"] is not None and s["n"] > 0, path
        if s["ci95"] is None:
            assert "no bootstrap CI" in s["note"], path
            continue
        lo, hi = s["ci95"]
        assert lo <= s["value"] + 1e-9 and s["value"] <= hi + 1e-9, path
    assert sum(s["ci95"] is None for _, s in found) == 4
    assert rep["passed"] == {"embedding": True, "rerank": False}
    assert rep["diagnosis"]["rerank"]["cause"] == "separator"
    assert "\\n\\n" in rep["diagnosis"]["rerank"]["variant"]
    assert rep["embedding"]["cosine_min"]["value"] > 1 - 1e-6
    tq = rep["task_quality"]
    assert tq["local"]["value"] > tq["random"]["value"] and "p_value" in tq["paired"]
    assert rep["local"]["placement"]["reranker"] == {"device": "cpu", "dtype": "float32"}
    md = (run / "results/consistency/demo/report.md").read_text()
    assert "cause = separator" in md and "Task quality" in md and "No strictly increasing map" in md
    assert "Placement: local embedder on cpu (float32), reranker on cpu (float32)" in md
    assert (run / "results/consistency/demo/report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep["api"]["client_stats"]["rerank"]["requests_sent"] > 0


@pytest.mark.slow
def test_rerun_of_the_api_rule_sends_no_request(run):
    smk("data/consistency/demo/api/scores.json", "--cores", "1", "--forcerun", "consistency_api", "--directory",
        str(run), f"--configfile={ROOT / '.test/consistency.yaml'}")
    meta = json.loads((run / "data/consistency/demo/api/scores.json").read_text())["meta"]
    assert meta["client_stats"]["embeddings"]["requests_sent"] == 0
    assert meta["client_stats"]["rerank"]["requests_sent"] == 0
    assert meta["client_stats"]["rerank"]["cache_hits"] > 0
