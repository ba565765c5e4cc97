"""One registry per track (arms, metric families): the rules, the schemas, the reports and the plots read the same
list.  The schemas' enums are written out (JSON-schema files), so they are checked against the registry here."""

import re
from pathlib import Path

import yaml

from leverplus.tracks.mt import metrics as mt
from leverplus.tracks.vqa.icd import versions as vqa_versions
from leverplus.tracks.vqa.icd.selectors import SELECTORS
from leverplus.tracks.audio import report as audio_report
from leverplus.tracks.sentiment import report as sent_report
from leverplus.tracks.sentiment import stages as sent_stage

ROOT = Path(__file__).resolve().parents[1]


def _schema(name):
    return yaml.safe_load((ROOT / "config" / f"{name}.schema.yaml").read_text())["properties"]


def _rules(*names):
    return "\n".join((ROOT / "rules" / f"{n}.smk").read_text() for n in names)


def test_sentiment_arms_one_registry():
    arms = _schema("sentiment")["arms"]
    assert arms["items"]["enum"] == list(sent_stage.ARMS) and arms["default"] == list(sent_stage.ARMS)
    assert set(sent_report.ARM_NAMES) == set(sent_stage.ARMS)
    assert sent_report.LABEL_ARMS is sent_stage.LABEL_ARMS
    assert set(sent_stage.HEAD_ARMS) | set(sent_stage.LABEL_ARMS) == set(sent_stage.ARMS)
    rules = _rules("sentiment_common", "sentiment")
    # no arm list written out in the rules: every wildcard constraint comes from the registry
    assert not re.search(r"head_last\|head_mean", rules) and "zero_shot|head" not in rules


def test_mt_families_one_registry():
    fam = _schema("mt")["families"]
    assert fam["items"]["enum"] == list(mt.FAMILIES) and set(fam["default"]) <= set(mt.FAMILIES)
    assert set(mt.FAMILY_METRICS) <= set(mt.FAMILIES) and set(mt.IN_PROCESS_FAMILIES) <= set(mt.FAMILIES)
    assert "lexical|meteor" not in _rules("mt_common", "mt")


def test_audio_arms_one_registry():
    assert "edge|cloud" not in _rules("audio_common").replace('role="edge|cloud"', "")
    assert set(audio_report.VERDICT_PAIRS[0]) <= set(audio_report.BASE_ARMS)
    src = (ROOT / "src/leverplus/tracks/audio/plots.py").read_text()
    assert '"unaligned")' not in src  # the plots read BASE_ARMS


def test_vqa_versions_one_registry():
    assert tuple(SELECTORS) == vqa_versions.VERSIONS  # the selector classes, in the registry's order
    sel = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())["properties"]["selector"]["properties"]
    assert sel["versions"]["items"]["enum"] == list(vqa_versions.VERSIONS)
    assert all(b in vqa_versions.VERSIONS for _, b in vqa_versions.VERSION_PAIRS)
    rules = _rules("common", "vqa")
    # no version list written out in the rules: the wildcard and the comparisons come from the registry
    assert '"v0", "v1"' not in rules and '("v1", "v0")' not in rules
