"""The audio DAG end to end on the `.test/audio.yaml` slice (every rule, every arm) in a temporary working
directory, and the real SECap DAG resolving offline."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TARGET = "results/audio/demo/comparison.json"
BASE_ARMS = ("edge", "cloud", "api", "unaligned")
N_CLIPS = 10  # .test/audio.yaml


def smk(*args, cwd=ROOT, check=True, timeout=1800):
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("audio_dag")
    smk(TARGET, "--cores", "2", "--resources", "gpu=2", "--directory", str(work),
        "--configfile", str(ROOT / "config/config.yaml"), str(ROOT / ".test/audio.yaml"))
    return work


@pytest.fixture(scope="module")
def result(audio_run):
    return json.loads((audio_run / TARGET).read_text())


def _config():
    from leverplus.config import validate_track

    cfg = {"audio": yaml.safe_load((ROOT / ".test/audio.yaml").read_text())["audio"]}
    return validate_track(cfg, "audio", ROOT / "config/audio.schema.yaml")


@pytest.mark.slow
def test_every_cell_filled_for_every_arm(audio_run, result):
    cmp = result["comparison"]
    arms = cmp["arms"]
    cascade = [p["label"] for p in result["cascade"]["points"]]
    assert set(BASE_ARMS) <= set(arms) and len(cascade) == len(_config()["cascade"]["quantiles"]) and set(cascade) <= set(arms)
    for arm in arms:
        for m in cmp["metrics"]:
            cell = cmp["scores"][arm][m["name"]]
            assert cell["score"] is not None and None not in cell["ci95"], (arm, m["name"])
            assert cell["n"] == N_CLIPS
    pairs = {(p["a"], p["b"]) for p in cmp["pairs"]}
    assert {("cloud", "edge"), ("api", "edge"), ("unaligned", "cloud")} <= pairs
    assert {(c, "edge") for c in cascade} <= pairs
    for p in cmp["pairs"]:
        for name, r in p["metrics"].items():
            assert r["verdict"] in {"better", "worse", "inside the noise"} and None not in r["ci95"], (p, name)
    for arm in arms:
        L = result["point_values"][arm]["length"]
        assert L["n"] == N_CLIPS and L["p10"] <= L["median"] <= L["p90"]
        assert "n_negative" in result["point_values"][arm]["bertscore_f1"]
    md = (audio_run / "results/audio/demo/comparison.md").read_text()
    assert "BIASED" in md and "cloud − edge" in md and "Cascade sweep" in md
    assert (audio_run / "results/audio/demo/comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = result["cascade"]["sweep"]
    assert sweep[0]["arm"] == "edge" and sweep[-1]["arm"] == "cloud"
    assert [p["escalation_rate"] for p in sweep] == sorted(p["escalation_rate"] for p in sweep)


@pytest.mark.slow
def test_edge_job_runs_with_its_declared_threads(result):
    t = result["runs"]["edge"]["threads"]
    # read inside the job: torch.get_num_threads() after set_threads(threads) == the rule's `threads:` (2)
    assert t["threads_declared"] == _config()["edge"]["threads"] == 2
    assert t["threads_effective"] == t["torch_num_threads"] == 2
    assert t["cpu_model"]


@pytest.mark.slow
def test_ttft_below_total_for_every_request(audio_run, result):
    for arm in result["comparison"]["arms"]:
        f = (audio_run / f"results/audio/demo/{arm}/predictions.parquet") if arm in BASE_ARMS else \
            (audio_run / "results/audio/demo/cascade/points" / f"{arm}.parquet")
        df = pd.read_parquet(f)
        assert len(df) == N_CLIPS
        assert ((df["ttft_s"] > 0) & (df["ttft_s"] < df["total_s"])).all(), arm
        assert (df["output_tokens"] >= 1).all() and (df["feature_s"] > 0).all()


@pytest.mark.slow
def test_decoding_settings_in_results_equal_the_config(audio_run, result):
    from leverplus.models.audio_generation import AudioGenerationSettings

    cfg = _config()
    gen, unal = cfg["generation"], cfg["unaligned"]
    assert result["generation"] == gen and result["unaligned_generation"] == unal
    for arm in ("edge", "cloud"):
        assert result["runs"][arm]["generation"] == gen
    assert result["runs"]["unaligned"]["generation"] == unal
    assert result["runs"]["api"]["generation"] == gen
    dec = {k: v for k, v in gen.items() if k not in ("prompt", "system_prompt")}
    assert result["runs"]["api"]["request_settings"] == AudioGenerationSettings.from_config(dec).to_openai()
    assert gen["do_sample"] is False and gen["min_new_tokens"] == 8 and gen["max_new_tokens"] == 12  # the slice's
    for arm, block in (("edge", gen), ("unaligned", unal)):  # and no output is longer than the config allows
        df = pd.read_parquet(audio_run / f"results/audio/demo/{arm}/predictions.parquet")
        assert df["output_tokens"].between(block["min_new_tokens"], block["max_new_tokens"]).all(), arm
    assert result["generation_signature"] == AudioGenerationSettings.from_config(dec).signature()


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["edge", "cascade_q50"])
def test_rescoring_saved_predictions_reproduces_the_table(audio_run, result, arm, tmp_path):
    from leverplus.cli import main

    pred = (audio_run / f"results/audio/demo/{arm}/predictions.parquet") if arm in BASE_ARMS else \
        (audio_run / "results/audio/demo/cascade/points" / f"{arm}.parquet")
    mdir = audio_run / "data/audio/metric_models/demo_char_bert"
    out = tmp_path / "score.json"
    rc = main(["score", "caption", "--predictions", str(pred), "--references",
               str(audio_run / "data/audio/demo/eval.jsonl"), "--lang", "zh",
               "--metrics", "bleu,chrf,cider,length,bertscore", "--bertscore-model", str(mdir),
               "--bertscore-layers", "2", "--bertscore-baseline", str(mdir / "bertscore_baseline.csv"),
               "--bertscore-idf", "--n-resamples", "20", "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())["metrics"]
    table = result["comparison"]["scores"][arm]
    digits = {d["name"]: d["digits"] for d in result["comparison"]["metrics"]}
    for ours, theirs in (("bleu", "bleu"), ("chrf", "chrf"), ("cider_d", "cider"), ("bertscore_f1", "bertscore")):
        assert round(table[ours]["score"], digits[ours]) == round(m[theirs]["score"], digits[ours]), ours
    assert result["point_values"][arm]["length"]["mean"] == m["length"]["mean"]
    # the two numbers `score caption` has no option for, from the same library functions on the saved predictions
    from leverplus.metrics import text
    from leverplus.metrics.sentence_similarity import sentence_similarity

    refs = pd.read_json(audio_run / "data/audio/demo/eval.jsonl", lines=True, dtype={"id": str})
    hyps, rl, _ = text.caption_inputs(pd.read_parquet(pred).astype({"id": str}), refs)
    sim = sentence_similarity(hyps, rl, model_dir=str(mdir), pooling="mean", n_resamples=10)
    biased = sum(text.sentence_bleu(hyps, rl, tokenize="13a")) / len(hyps)
    for ours, value in (("sentence_similarity", sim["score"]), ("bleu_sent_avg_13a", biased)):
        assert round(table[ours]["score"], digits[ours]) == round(value, digits[ours]), ours


def test_secap_dag_resolves_offline(tmp_path):
    # as the README runs it from the repository root (config/config.yaml from the Snakefile, the SECap file over it);
    # here in an empty directory, so both are given by absolute path
    proc = smk("-n", "results/audio/secap/comparison.json", "--directory", str(tmp_path), "--configfile",
               str(ROOT / "config/config.yaml"), str(ROOT / "config/audio_secap.yaml"), timeout=300)
    out = proc.stdout + proc.stderr
    for rule in ("audio_download_data", "audio_download_model", "audio_download_metric_model", "audio_edge_infer",
                 "audio_cloud_infer", "audio_api_infer", "audio_unaligned_infer", "audio_cascade", "audio_score",
                 "audio_aggregate"):
        assert rule in out, rule
    assert "data/audio/models/qwen2.5_omni_3B" in out and "data/audio/models/qwen2.5_omni_7B" in out


def test_bad_audio_config_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio: {generation: {max_new_tokens: 0}}\n")
    proc = smk("-n", TARGET, "--directory", str(tmp_path), "--configfile", str(ROOT / "config/config.yaml"), str(bad),
               check=False, timeout=300)
    assert proc.returncode != 0
    assert "lever-plus: invalid config: audio.generation.max_new_tokens" in proc.stdout + proc.stderr
