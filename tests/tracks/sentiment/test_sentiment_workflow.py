"""The sentiment DAG end to end on `.test/sentiment.yaml` (every rule, every arm, two label pairs, the shipped tiny
LM), rescoring with the CLI, the real config resolving offline, and the report's own checks (vectorised metrics equal
scikit-learn's, the calibration AUC check can fail)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from leverplus.tracks.sentiment.report import (
    SentimentReportError,
    _macro_f1_from_counts,
    _metric_specs,
    auc_block,
    auc_invariance,
)

# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Tests using the module's DAG
# fixture share one xdist worker (tests/conftest.py), so the DAG runs once per test session.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
ARMS = ["zero_shot", "head_last", "head_mean", "lora_head", "lora_label"]
TARGET = "results/sentiment/demo/comparison.json"


def smk(*args, cwd, check=True):  # generous: CI boxes are shared
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args], cwd=cwd,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "config").symlink_to(ROOT / "config")
    return work


# ---------------------------------------------------------------------------------------------------------------------
# report internals
# ---------------------------------------------------------------------------------------------------------------------
def test_vectorised_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=n) + y, 1)  # rounded: many ties
    block = rng.integers(0, n, size=(20, n))
    got = auc_block(y, s, block)
    want = [skm.roc_auc_score(y[r], s[r]) for r in block]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(auc_block(y, s, np.zeros((1, n), dtype=int)))[0]  # one class only

    truth = pd.Series(np.where(y == 1, "pos", "neg"), index=[f"i{k}" for k in range(n)])
    pred = pd.DataFrame({"prediction": np.where(s > 0.5, "pos", "neg"), "score": s}, index=truth.index)
    specs, _ = _metric_specs({"a": pred}, truth)
    by = {m.name: m for m in specs}
    for row in block[:5]:
        yt, yp = truth.to_numpy()[row], pred["prediction"].to_numpy()[row]
        assert by["macro_f1"].score("a", row) == pytest.approx(
            skm.f1_score(yt, yp, labels=["neg", "pos"], average="macro", zero_division=0), abs=1e-12)
        assert by["auc_roc"].score("a", row) == pytest.approx(skm.roc_auc_score(y[row], s[row]), abs=1e-12)
    assert _macro_f1_from_counts(np.array([0, 0, 0, 5, 0, 0.0])) == 0.5  # zero_division 0 for the empty class


def test_auc_invariance_flags_a_changed_auc():
    rows = [{"arm": "zero_shot", "pair": "好/坏", "variant": v, "auc_roc": a}
            for v, a in (("none", 0.8), ("contextual", 0.8), ("pmi_dc", 0.8 + 1e-6))]
    res = auc_invariance(rows, tol=1e-9)
    assert not res["passed"] and res["max_abs_delta"] == pytest.approx(1e-6)
    rows[2]["auc_roc"] = 0.8
    assert auc_invariance(rows, tol=1e-9)["passed"]


# ---------------------------------------------------------------------------------------------------------------------
# the DAG
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sent_run(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("sentiment"))
    smk(TARGET, "--cores", "2", f"--configfile={ROOT / '.test/sentiment.yaml'}", cwd=work)
    return work


@pytest.mark.slow
def test_demo_slice_fills_every_cell(sent_run):
    res = json.loads((sent_run / TARGET).read_text())
    assert [a["arm"] for a in res["arms"]] == ARMS
    comp = res["comparison"]
    assert comp["n_items"] == res["n_test"] == 120
    for arm in ARMS:
        for m in ("accuracy", "macro_f1", "auc_roc"):
            cell = comp["scores"][arm][m]
            assert cell["n"] == 120 and cell["ci95"][0] <= cell["score"] <= cell["ci95"][1]
    assert len(comp["pairs"]) == len(res["mcnemar"]) == 10  # every pair of arms, paired test on the same items
    assert all(p["metrics"]["accuracy"]["verdict"] in ("better", "worse", "inside the noise") for p in comp["pairs"])
    rows = res["verbalizer"]["rows"]
    assert {(r["arm"], r["pair"]) for r in rows} == {(a, p) for a in ("zero_shot", "lora_label")
                                                    for p in ("正面/负面", "好/坏")}
    assert len(rows) == 2 * 2 * 5  # arms × pairs × variants
    assert all(r["label_tokens"] and 0 <= r["positive_share"] <= 1 for r in rows)
    inv = res["auc_invariance"]
    assert inv["passed"] and inv["max_abs_delta"] <= 1e-9 and len(inv["checks"]) == 4
    for arm in ARMS:
        rec = res["training"][arm]
        assert rec["frozen_unchanged"] is True, arm
        assert all("embed_tokens" not in n and "lm_head" not in n for n in rec["trainable_parameters"])
    assert res["training"]["lora_label"]["per_pair_training"].keys() == {"正面/负面", "好/坏"}
    bench = res["training"]["zero_shot"]["benchmark"]
    assert bench["max_abs_diff"] < 1e-4 and 1.0 < bench["analytic_limit"] < 2.0
    # two training seeds (.test/sentiment.yaml): per-seed runs, seed-aware accuracy, Holm on every family
    sd = res["seeds"]
    assert sd["arms"]["zero_shot"]["n_seeds"] == 1 and sd["arms"]["zero_shot"]["seeds"] == [None]
    for arm in ARMS[1:]:
        assert sd["arms"][arm]["seeds"] == [0, 1] and len(sd["arms"][arm]["per_seed"]) == 2
        lo, hi = sd["arms"][arm]["accuracy"]["ci95"]
        assert lo <= sd["arms"][arm]["accuracy"]["mean"] <= hi
    assert len(sd["pairs"]) == 10 and all(p["p_holm"] >= p["p_value"] for p in sd["pairs"])
    fams = res["multiple_comparisons"]["families"]
    assert fams["paired_bootstrap"]["tests"] == 30 and fams["mcnemar"]["tests"] == 10 and fams["seed_aware"]["tests"] == 10
    assert len(res["training_other_seeds"]["lora_head"]) == 1
    md = (sent_run / TARGET).with_suffix(".md").read_text()
    assert "Calibration leaves AUC unchanged" in md and "holds" in md and "B′ head-only" in md
    assert "## Multiple comparisons" in md and "## Training seeds" in md
    assert (sent_run / TARGET).with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((sent_run / "data/sentiment/demo/manifest.json").read_text())
    assert manifest["counts"]["test"]["pos"] + manifest["counts"]["test"]["neg"] == 120
    assert manifest["cross_split_texts"] == {"train&val": 0, "train&test": 0, "val&test": 0}
    for arm in ARMS[1:]:
        for seed in (0, 1):
            assert (sent_run / f"results/sentiment/demo/arms/{arm}/seed{seed}/scores.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["zero_shot", "lora_head"])
def test_cli_rescoring_reproduces_the_table(sent_run, arm):
    res = json.loads((sent_run / TARGET).read_text())
    run = arm if arm == "zero_shot" else f"{arm}/seed0"  # the primary seed's run is the table's
    pred = sent_run / f"results/sentiment/demo/arms/{run}/predictions.parquet"
    out = subprocess.run(
        [sys.executable, "-m", "leverplus.cli", "score", "classification", "--predictions", str(pred),
         "--references", str(sent_run / "data/sentiment/demo/test.parquet"), "--n-resamples", "200", "--seed", "0"],
        capture_output=True, text=True, check=True,
    )
    rescored = json.loads(out.stdout)
    stored = res["scores"][arm]
    for key in ("n", "accuracy", "macro_f1", "auc_roc", "per_class", "confusion_matrix", "signature"):
        assert rescored[key] == stored[key], key
    table = res["comparison"]["scores"][arm]
    for m in ("accuracy", "macro_f1", "auc_roc"):
        assert table[m]["score"] == pytest.approx(rescored[m]["score"], abs=1e-12), m


@pytest.mark.slow
def test_rerun_is_a_no_op(sent_run):
    proc = smk(TARGET, "-n", "--cores", "2", f"--configfile={ROOT / '.test/sentiment.yaml'}", cwd=sent_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_real_config_resolves_offline(tmp_path):
    work = workdir(tmp_path)
    proc = smk("-n", "--cores", "8", "results/sentiment/chnsenticorp/comparison.json",
               "--configfile=config/sentiment_chnsenticorp.yaml", cwd=work)
    out = proc.stdout + proc.stderr
    # three training seeds: B, B', C and D's five pair trainings once per seed; A once
    for rule, count in (("sentiment_download", 1), ("sentiment_model", 1), ("sentiment_zero_shot", 1),
                        ("sentiment_head_arm", 9), ("sentiment_lora_label_pair", 15), ("sentiment_lora_label_gather", 3),
                        ("sentiment_score", 13), ("sentiment_aggregate", 1)):
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-2000:])
    assert "data/sentiment/models/qwen3_0_6b" in out
    # the 25 model jobs (A, 3 x (B, B', C, 5 x D)) claim a GPU with a real model ...
    assert sum("gpu=1" in line for line in out.splitlines() if line.strip().startswith("resources:")) == 25


def test_real_config_pins_revisions_and_drops_cross_split_texts():
    import yaml

    cfg = yaml.safe_load((ROOT / "config/sentiment_chnsenticorp.yaml").read_text(encoding="utf-8"))["sentiment"]
    hexsha = __import__("re").compile(r"^[0-9a-f]{40}$")
    assert hexsha.match(cfg["models"]["qwen3_0_6b"]["revision"])  # the chat template decides the scored context
    assert hexsha.match(cfg["datasets"]["chnsenticorp"]["revision"])
    assert cfg["datasets"]["chnsenticorp"].get("cross_split", "drop") == "drop"
    assert len(cfg["train"]["seeds"]) >= 3


def test_demo_model_jobs_claim_no_gpu(tmp_path):
    """... and none with the CPU-sized shipped tiny LM (models.tiny_qwen_lm.gpu: 0), so they run side by side."""
    work = workdir(tmp_path)
    out = smk("-n", "--cores", "2", TARGET, cwd=work)
    res = [line for line in (out.stdout + out.stderr).splitlines() if line.strip().startswith("resources:")]
    assert sum("gpu=0" in line for line in res) == 9 and not any("gpu=1" in line for line in res)


def test_bad_sentiment_config_stops_with_one_line(tmp_path):
    work = workdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sentiment:\n  labels: {main: nope}\n")
    proc = smk("-n", "--cores", "1", TARGET, f"--configfile={bad}", cwd=work, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "invalid config" in ln]
    assert len(lines) == 1 and "sentiment.labels.main" in lines[0] and "'nope'" in lines[0]


def test_aggregate_refuses_predictions_for_other_items(tmp_path):
    from leverplus.tracks.sentiment.report import _aligned

    truth = pd.Series(["pos", "neg"], index=["a", "b"])
    f = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["a", "c"], "prediction": ["pos", "neg"], "score": [0.9, 0.1]}).to_parquet(f)
    with pytest.raises(SentimentReportError, match="not for the test items"):
        _aligned(f, truth)
