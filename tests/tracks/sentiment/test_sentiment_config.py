"""The sentiment track's config: the schema's defaults are the real run's, the demo is config/sentiment_demo.yaml (the
Snakefile loads it), and no demo value reaches a real run's params (issue 21, item 4)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leverplus.core.config import ConfigError, demo_leaks, resolve_track_files, track_run
from leverplus.tracks.sentiment.stages import check_config

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "config/sentiment.schema.yaml"
BASE = ROOT / "config/config.yaml"
DEMO = ROOT / "config/sentiment_demo.yaml"
REAL, REAL_SET = ROOT / "config/sentiment_chnsenticorp.yaml", "chnsenticorp"


def test_no_demo_value_reaches_the_real_run():
    assert demo_leaks("sentiment", SCHEMA, BASE, DEMO, REAL, REAL_SET, check=check_config) == []


def test_the_real_run_without_its_settings_block_is_the_schemas_defaults(tmp_path):
    """The real file's settings are the schema's defaults: only its dataset and model entries are needed."""
    real = yaml.safe_load(REAL.read_text())["sentiment"]
    slim = tmp_path / "slim.yaml"
    slim.write_text(yaml.safe_dump({"sentiment": {k: real[k] for k in ("datasets", "models")}}, allow_unicode=True))
    full = resolve_track_files([BASE, DEMO, REAL], "sentiment", SCHEMA, check=check_config)
    bare = resolve_track_files([BASE, DEMO, slim], "sentiment", SCHEMA, check=check_config)
    assert track_run(bare, REAL_SET) == track_run(full, REAL_SET)


def test_a_demo_value_in_the_global_block_is_caught(tmp_path):
    """The check above can fail: the demo's one training seed moved out of runs.demo into the global block reaches
    a real run that does not set its seeds, and demo_leaks names it."""
    demo = yaml.safe_load(DEMO.read_text())
    demo["sentiment"]["train"] = {"seeds": demo["sentiment"]["runs"]["demo"]["train"]["seeds"]}
    bad = tmp_path / "sentiment_demo.yaml"
    bad.write_text(yaml.safe_dump(demo, allow_unicode=True))
    real = yaml.safe_load(REAL.read_text())
    del real["sentiment"]["train"]["seeds"]
    real_file = tmp_path / "real.yaml"
    real_file.write_text(yaml.safe_dump(real, allow_unicode=True))
    leaks = demo_leaks("sentiment", SCHEMA, BASE, bad, real_file, REAL_SET, check=check_config)
    assert any("sentiment.train: the demo file sets a global setting" in x for x in leaks), leaks
    assert any("runs.chnsenticorp.train.seeds: has the demo's value [0]" in x for x in leaks), leaks


def test_the_demo_run_has_the_demo_settings_and_the_checks_run():
    cfg = resolve_track_files([BASE, DEMO], "sentiment", SCHEMA, check=check_config)
    demo = track_run(cfg, "demo")
    assert demo["train"]["seeds"] == [0] and demo["compute"]["model_threads"] == 1
    assert demo["train"]["head"] == {"lr": 0.01, "epochs": 60, "patience": 5, "batch_size": 64, "weight_decay": 0.0}
    assert cfg["models"]["tiny_qwen_lm"]["gpu"] == 0
    with pytest.raises(ConfigError, match="sentiment.labels.main"):
        check_config({**cfg, "runs": {"demo": {**demo, "labels": {**demo["labels"], "main": "nope"}}}})
    assert 'configfile: "config/sentiment_demo.yaml"' in (ROOT / "Snakefile").read_text()
