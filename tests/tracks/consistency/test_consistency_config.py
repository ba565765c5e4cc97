"""The consistency track's config: the schema's defaults are the real check's, the demo is
config/consistency_demo.yaml (the Snakefile loads it), and no demo value reaches a real run's params (issue 21,
item 4)."""
from __future__ import annotations

from pathlib import Path

import yaml

from leverplus.core.config import demo_leaks, resolve_track_files, track_run
from leverplus.tracks.consistency.stages import check_config

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "config/consistency.schema.yaml"
BASE = ROOT / "config/config.yaml"
DEMO = ROOT / "config/consistency_demo.yaml"
REAL, REAL_SET = ROOT / "config/consistency_qwen3.yaml", "scenarios"


def test_no_demo_value_reaches_the_real_run():
    assert demo_leaks("consistency", SCHEMA, BASE, DEMO, REAL, REAL_SET, check=check_config) == []


def test_a_demo_value_in_the_global_block_is_caught(tmp_path):
    """The check above can fail: the demo's injected drift moved out of runs.demo into the global block reaches the
    real run, and demo_leaks names it."""
    demo = yaml.safe_load(DEMO.read_text())
    demo["consistency"]["api"] = {"server": demo["consistency"]["runs"]["demo"]["api"]["server"]}
    bad = tmp_path / "consistency_demo.yaml"
    bad.write_text(yaml.safe_dump(demo, allow_unicode=True))
    leaks = demo_leaks("consistency", SCHEMA, BASE, bad, REAL, REAL_SET, check=check_config)
    assert any("consistency.api: the demo file sets a global setting" in x for x in leaks), leaks
    assert any("runs.scenarios.api.server.rerank.separator: has the demo's value" in x for x in leaks), leaks


def test_the_demo_run_has_the_demo_settings_and_the_defaults_are_real():
    cfg = resolve_track_files([BASE, DEMO], "consistency", SCHEMA, check=check_config)
    demo = track_run(cfg, "demo")
    assert demo["api"]["mode"] == "local_server" and demo["api"]["server"]["rerank"]["separator"] == "\n\n"
    assert demo["compute"] == {"threads": 1, "device": "auto", "gpu": 0}
    assert cfg["datasets"]["demo"]["models"]["embedder"]["source"] == "demo"
    real_cfg = resolve_track_files([BASE, DEMO, REAL], "consistency", SCHEMA, check=check_config)
    real = track_run(real_cfg, REAL_SET)
    assert real["api"]["mode"] == "remote" and real["api"]["server"] == {"embedding": {}, "rerank": {}}
    assert real["compute"]["gpu"] == 1 and real["diagnosis"]["truncation_lengths"] == [512, 1024, 2048, 4096]
    assert real_cfg["datasets"][REAL_SET]["models"]["reranker"]["repo_id"] == "Qwen/Qwen3-Reranker-4B"
    assert 'configfile: "config/consistency_demo.yaml"' in (ROOT / "Snakefile").read_text()
