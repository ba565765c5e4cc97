"""The VQA workflow's checks a user meets first, without a DAG run: lint, the real configs' DAGs resolving offline
(the missions' commands with no --configfile), the default target, --configfile overrides, one-line errors for bad
configs and unknown datasets, and the second adapter (a tiny OpenFlamingo) through every stage. Split from
test_workflow.py (the demo slice's DAG and what reruns) so that `--dist loadfile` runs the two modules on two workers."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import ROOT, smk, workdir

pytestmark = pytest.mark.slow


def test_lint_is_clean(tmp_path):
    proc = smk("--lint", "--directory", str(workdir(tmp_path)), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_real_configs_resolve_offline(tmp_path):
    # in an empty working directory (config/ linked): the whole DAG, whatever this checkout's data/ and results/ hold
    (tmp_path / "config").symlink_to(ROOT / "config")
    for ds in ("okvqa", "vqav2"):
        proc = smk("-n", "--cores", "8", f"results/{ds}/v2_lora.json", f"--configfile=config/{ds}.yaml",
                   "--directory", str(tmp_path))
        out = proc.stdout + proc.stderr
        for rule in ("download_dataset", "download_model", "encode", "candidates", "beam_search", "gather_beam",
                     "train_selector", "infer", "baseline", "zero_shot", "aggregate"):
            assert rule in out, (ds, rule)


def test_bad_config_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("beam: {construct_order: middle}\n")
    (tmp_path / "config").symlink_to(ROOT / "config")
    proc = smk("-n", "--cores", "1", f"--configfile={bad}", "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "invalid config" in ln]
    assert lines == ["lever-plus: invalid config: beam.construct_order: 'middle' is not allowed; allowed: ['left', 'right']"]


def dry_run(work: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    return smk("-n", "--nolock", "--cores", "8", "--directory", str(work), *args, check=check)


def job_counts(out: str) -> dict[str, int]:
    """The `Job stats` table of a dry run."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


ALL_RULES = ("download_dataset", "download_model", "download_encoder", "encode", "candidates", "beam_search",
             "gather_beam", "train_selector", "infer", "baseline", "zero_shot", "aggregate")


@pytest.mark.parametrize("ds, sample_num", [("okvqa", 800), ("vqav2", 5000)])
def test_the_missions_command_needs_no_configfile(tmp_path, ds, sample_num):
    """`snakemake --cores 8 results/okvqa/v2_lora.json`, as written: the default config knows the dataset and its
    run (2 models × 4 samplers × 1 sample_num, 8 beam shards, shots 1-4, 6 baselines: zero-shot + 5 per shot)."""
    out = dry_run(workdir(tmp_path), f"results/{ds}/v2_lora.json").stdout
    jobs = job_counts(out)
    assert set(jobs) == set(ALL_RULES), jobs
    assert jobs["beam_search"] == 2 * 4 * 8 and jobs["train_selector"] == 2 * 4 and jobs["infer"] == 2 * 4 * 4
    assert jobs["baseline"] == 2 * 4 * 5 and jobs["zero_shot"] == 2 and jobs["download_model"] == 2
    assert f"data/{ds}/beam/qwen2.5_vl_3B/mix_{sample_num}/beam.parquet" in out
    assert f"results/{ds}/flamingo_3B/img_sim_{sample_num}/v2_lora/seed0/shot4.json" in out
    assert "data/encoders/clip_vit_b32" in out and "tiny_vl" not in out and "tiny_clip" not in out


def test_default_target_is_still_the_demo(tmp_path):
    out = dry_run(workdir(tmp_path)).stdout
    # the demo and its control condition (issue 22), every version, and versions.json of both
    for d in ("demo", "demo_control"):
        assert all(f"results/{d}/{v}.json" in out for v in ("v0", "v1", "v2", "v2_lora", "v3", "v4", "versions"))
    assert "okvqa" not in out and "qwen2.5_vl_3B" not in out


def test_a_configfile_overrides_one_datasets_run(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text("runs: {okvqa: {experiment: {models: [qwen2.5_vl_3B], sample_num: [100]}, beam: {shards: 2}}}\n")
    out = dry_run(workdir(tmp_path), "results/okvqa/v1.json", "results/vqav2/v1.json", f"--configfile={over}").stdout
    assert "data/okvqa/beam/qwen2.5_vl_3B/rand_100/beam.parquet" in out and "data/okvqa/beam/flamingo_3B" not in out
    assert "data/vqav2/beam/flamingo_3B/rand_5000/beam.parquet" in out  # the other run is untouched
    assert job_counts(out)["beam_search"] == 1 * 4 * 2 + 2 * 4 * 8


@pytest.mark.parametrize("target", ["results/okvq/v2_lora.json", "data/nope/train.parquet"])
def test_an_unknown_dataset_stops_with_one_line_naming_the_known_ones(tmp_path, target):
    proc = dry_run(workdir(tmp_path), target, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("lever-plus:")]
    name = target.split("/")[1]
    assert lines == [f"lever-plus: unknown dataset {name!r} in target {target}; known datasets: demo, demo_control, "
                     "okvqa, vqav2 (config `datasets`)"], out
    assert "MissingRuleException" not in out


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("open_flamingo") is None, reason="open_flamingo not installed"
)
def test_flamingo_model_runs_through_every_stage(tmp_path):
    """The second adapter through the real DAG: a tiny OpenFlamingo (open_flamingo code, MPT LM, CLIP vision) as a
    `local` checkpoint-layout model — download (link), beam search, selector training, inference, aggregation."""
    from leverplus.tracks.vqa.models.demo_training import tokenizer_corpus
    from leverplus.tracks.vqa.models.tiny_flamingo import build_tiny_flamingo

    model_dir = build_tiny_flamingo(tmp_path / "tiny_flamingo", tokenizer_corpus(), seed=0)
    work = tmp_path / "work"
    work.mkdir()
    cfg = work / "flamingo.yaml"
    cfg.write_text(
        f"""
dataset: demo
datasets:
  demo: {{source: demo, seed: 0, n_train: 3000, n_val: 500}}
models:
  tiny_fl: {{adapter: flamingo, source: local, path: "{model_dir}", layout: checkpoint, batch_size: 8}}
encoders:
  tiny_clip: {{source: demo}}
compute: {{model_threads: 1}}
experiment: {{models: [tiny_fl], encoder: tiny_clip, samplers: [rand], sample_num: [4], cand_num: 6}}
beam: {{beam_size: 2, shot_num: 2, construct_order: right, shards: 1}}
selector: {{epochs: 1, batch_size: 4, versions: [v1], seeds: [0]}}
infer: {{shots: [1], limit: 8, pool: {{kind: retrieval, by: img_sim, k: 8}}}}
baselines: [zero_shot, random]
"""
    )
    smk("results/demo/v1.json", "--cores", "2", "--resources", "gpu=2", "--directory", str(work),
        f"--configfile={cfg}")
    assert (work / "data/models/tiny_fl").is_symlink()
    beams = pd.read_parquet(work / "data/demo/beam/tiny_fl/rand_4/beam.parquet")
    assert beams.anchor.nunique() == 4 and (beams.icd_ids.apply(len) == 2).all()
    res = json.loads((work / "results/demo/v1.json").read_text())
    text = json.dumps(res)
    assert "tiny_fl" in text and "zero_shot" in text
    (work / "results/demo/v1.md").read_text()
    assert (work / "results/demo/v1.png").stat().st_size > 0
