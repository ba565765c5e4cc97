"""The audio track's config: the schema's defaults are the real run's, the demo is config/audio_demo.yaml (the
Snakefile loads it), and no demo value reaches a real run's params (issue 21, item 4)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leverplus.core.config import ConfigError, demo_leaks, resolve_track_files, track_run
from leverplus.tracks.audio.stages import check_config

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "config/audio.schema.yaml"
BASE = ROOT / "config/config.yaml"
DEMO = ROOT / "config/audio_demo.yaml"
REAL, REAL_SET = ROOT / "config/audio_secap.yaml", "secap"


def test_no_demo_value_reaches_the_real_run():
    assert demo_leaks("audio", SCHEMA, BASE, DEMO, REAL, REAL_SET, check=check_config) == []


def test_a_demo_value_in_the_global_block_is_caught(tmp_path):
    """The check above can fail: the demo's timed subset moved out of runs.demo into the global block reaches a real
    run that does not set it, and demo_leaks names it."""
    demo = yaml.safe_load(DEMO.read_text())
    demo["audio"]["latency"] = demo["audio"]["runs"]["demo"]["latency"]
    bad = tmp_path / "audio_demo.yaml"
    bad.write_text(yaml.safe_dump(demo, allow_unicode=True))
    real = yaml.safe_load(REAL.read_text())
    del real["audio"]["latency"]
    real_file = tmp_path / "real.yaml"
    real_file.write_text(yaml.safe_dump(real, allow_unicode=True))
    leaks = demo_leaks("audio", SCHEMA, BASE, bad, real_file, REAL_SET, check=check_config)
    assert any("audio.latency: the demo file sets a global setting" in x for x in leaks), leaks
    assert any("runs.secap.latency.n_timed: has the demo's value 100" in x for x in leaks), leaks


def test_a_real_dataset_naming_a_demo_model_is_caught(tmp_path):
    real = yaml.safe_load(REAL.read_text())
    real["audio"]["datasets"]["secap"]["edge_model"] = "omni_edge_demo"
    real_file = tmp_path / "real.yaml"
    real_file.write_text(yaml.safe_dump(real, allow_unicode=True))
    with pytest.raises(ConfigError, match="audio.datasets.secap.edge_model"):  # unknown without the demo file
        demo_leaks("audio", SCHEMA, BASE, DEMO, real_file, REAL_SET, check=check_config)


def test_the_demo_run_has_the_demo_settings_and_the_defaults_are_real():
    cfg = resolve_track_files([BASE, DEMO], "audio", SCHEMA, check=check_config)
    demo = track_run(cfg, "demo")
    assert demo["latency"]["n_timed"] == 100 and demo["edge"]["threads"] == 1 and demo["cloud"]["threads"] == 1
    assert cfg["datasets"]["demo"]["api"]["base_url"] is None and cfg["datasets"]["demo"]["edge_model"] == "omni_edge_demo"
    real_cfg = resolve_track_files([BASE, DEMO, REAL], "audio", SCHEMA, check=check_config)
    real = track_run(real_cfg, REAL_SET)
    assert real["latency"]["n_timed"] is None and real["edge"]["threads"] == 2 and real["cloud"]["threads"] == 8
    assert 'configfile: "config/audio_demo.yaml"' in (ROOT / "Snakefile").read_text()


def test_the_real_edge_runs_on_the_cpu_in_float32():
    """Issue 24 item 2: the real run's edge is the CPU in float32 (its rule passes audio.edge.device/dtype), though
    the edge checkpoint's model entry says bfloat16 (which the cloud jobs use); the cloud jobs take CUDA when
    visible."""
    cfg = resolve_track_files([BASE, DEMO, REAL], "audio", SCHEMA, check=check_config)
    real = track_run(cfg, REAL_SET)
    assert real["edge"]["device"] == "cpu" and real["edge"]["dtype"] == "float32"
    assert cfg["models"][cfg["datasets"][REAL_SET]["edge_model"]]["dtype"] == "bfloat16"
    assert real["cloud"]["device"] == "auto"
