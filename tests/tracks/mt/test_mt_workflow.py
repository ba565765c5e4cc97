"""The MT DAG end to end on the `.test/mt.yaml` slice in a temporary working directory."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Tests using the module's DAG
# fixture share one xdist worker (tests/conftest.py), so the DAG runs once per test session.
pytestmark = pytest.mark.slow


def test_mt_workflow_on_test_slice(tmp_path):
    (tmp_path / "config").symlink_to(ROOT / "config")  # the Snakefile's configfile is relative to the workdir
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "results/mt/demo/report.json",
         "--cores", "2", "--directory", str(tmp_path), f"--configfile={ROOT / '.test/mt.yaml'}"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((tmp_path / "results/mt/demo/report.json").read_text())
    assert rep["pairs"] == ["zh-en", "en-hi"]
    assert rep["system_level_corpus"]["en-hi"]["meteor"]["status"] == "not applicable"
    assert rep["system_level_corpus"]["zh-en"]["meteor"]["sys_a"]["score"] > 0
    for pair, meta in rep["meta_eval"].items():
        assert "meteor" not in meta["metrics"] if pair == "en-hi" else "meteor" in meta["metrics"]
        for g in ("none", "item", "system"):
            for coef in ("pearson", "spearman", "kendall", "acc23"):
                v = meta["levels"][g][coef]["value"]
                assert all(not math.isnan(x) for row in v for x in row), (pair, g, coef)
        q = meta["questions"]
        assert q["most_similar"]["value"] >= q["least_similar"]["value"]
        assert len(q["most_similar"]["ci95"]) == 2
        w = q["without"]  # the questions answered again without the demo's random judge (meta_eval.also_without)
        assert w["excluded"] == ["llm_judge"] and "llm_judge" not in w["least_similar"]["pair"] + w["most_similar"]["pair"]
        assert "vs_human" in meta  # the demo's simulated MQM
    for pair in ("zh-en", "en-hi"):  # the judge ran against the local server the rule started, parse rate recorded
        j = rep["families"][pair]["llm_judge"]
        assert j["server"]["mode"] == "local_server" and j["judged"]["requests"] == 6 * 5
        assert j["judged"]["parseable"] + j["n_unparseable"] == j["judged"]["requests"]
        # the demo judge (score tokens only) always parses; its cells use the 6 judged segments, never blank
        assert j["judged"]["parse_rate"] == 1.0 and j["subset"]["segments"] == 6
        meta = rep["meta_eval"][pair]
        assert meta["not_computable"] == {} and "llm_judge" in meta["metrics"]
        i = meta["metrics"].index("llm_judge")
        assert meta["coverage"]["llm_judge"] == 6 and meta["n_segments_cell"][i][0] == 6
        assert meta["n_segments_cell"][0][1] == 24  # two metrics scored everywhere: every segment
    na = rep["meta_eval"]["en-hi"]["not_applicable"]
    assert set(na) == {"meteor"} and "'hi'" in na["meteor"] and rep["meta_eval"]["zh-en"]["not_applicable"] == {}
    assert rep["most_stable_pair"]["best"] is not None
    assert (tmp_path / "results/mt/demo/report.png").stat().st_size > 10_000
    md = (tmp_path / "results/mt/demo/report.md").read_text()
    assert "Most / least similar" in md and "not applicable" in md
    assert "## LLM judge" in md and "in the matrices (n=6 segments)" in md and "not computable" not in md
    assert "- meteor: not applicable -- METEOR 1.5 resources for 'hi' are not shipped" in md
    assert " (n=6)" in md  # cells computed on the judged segments say so
    # issue 25: the report's labels say what the numbers are
    assert "Against the simulated MQM scores" in md and "Against the human scores" not in md
    assert "## System vs system" in md and "BLEURT is not run" in md
    assert "prompt:leverplus-da-ref" in md and "first reference only" in md and "prompt:gemba-da" not in md
    assert rep["system_tests"]["zh-en"]["bleu"]["baseline"] == "sys_a"
    assert rep["system_tests"]["zh-en"]["bleu"]["systems"]["sys_e"]["p_value"] < 0.05
    for meta in rep["meta_eval"].values():
        acc = meta["vs_human"]["item"]["acc23"]["metrics"]["chrf"]
        assert "epsilon" in acc and acc["value"] >= acc["acc23_eps0"] - 1e-12  # tie-calibrated against the humans
        for t in meta["questions"]["most_similar"]["tests"]:  # the right test for each comparison
            shared = set(t["pair"]) & set(meta["questions"]["most_similar"]["pair"])
            assert t["method"].startswith("PERM-BOTH" if shared else "paired bootstrap"), t
    assert "Primary lexical metric for this target: chrf++" in md  # en-hi
