"""The demo DAG end to end on the `.test/config.yaml` slice, in a temporary working directory, plus the checks a
user meets first: lint, the real configs' DAG resolving offline, bad configs failing in one line."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import ROOT, SNAKEMAKE, smk, workdir

# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Tests using the module's DAG
# fixture share one xdist worker (tests/conftest.py), so the DAG runs once per test session.
pytestmark = pytest.mark.slow



TARGETS = ["results/demo/v1.json", "results/demo/v2_lora.json"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    # as the README's demo command: no GPU here, so two 1-thread model jobs may run at once
    smk(*TARGETS, "--cores", "2", "--resources", "gpu=2", "--directory", str(work),
        f"--configfile={ROOT / '.test/config.yaml'}")
    return work


def pending(work: Path, *overlays: str, env: dict | None = None) -> dict[str, set[str]]:
    """Rules with `update pending` in `snakemake --summary` (the 9.x way to ask what would rerun), with the
    .test config and then each overlay YAML text applied on top."""
    files = [str(ROOT / ".test/config.yaml")]
    for i, text in enumerate(overlays):
        f = work / f"overlay_{i}.yaml"
        f.write_text(text)
        files.append(str(f))
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *TARGETS, "--summary", "--directory", str(work),
         "--configfile", *files],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 6 and cols[-1] == "update pending":
            out.setdefault(cols[2], set()).add(cols[0])
    return out


@pytest.mark.slow
def test_demo_slice_produces_filled_results(demo_run):
    res = json.loads((demo_run / "results/demo/v2_lora.json").read_text())
    assert (demo_run / "results/demo/v2_lora.md").stat().st_size > 0
    assert (demo_run / "results/demo/v2_lora.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # grid of .test/config.yaml: 1 model × 2 samplers × 1 sample_num × 2 shots, baselines zero/random/img_sim/pool_random
    assert len(res["cells"]) == 4
    for cell in res["cells"]:
        assert cell["n"] == 24 and 0 <= cell["ci95"][0] <= cell["score"] <= cell["ci95"][1] <= 100
        assert "vs_random" in cell and "vs_pool_random" in cell
    assert {(b["retriever"], b["shot"]) for b in res["baselines"]} == {
        ("zero_shot", 0), ("random", 1), ("random", 2), ("img_sim", 1), ("img_sim", 2), ("pool_random", 1),
        ("pool_random", 2)
    }
    assert len(res["beam_signal"]) == 2 and all(s["anchors"] == 6 for s in res["beam_signal"])
    md = (demo_run / "results/demo/v2_lora.md").read_text()
    assert "RandSampler" in md and "ImgSimSampler" in md and "95%" in md


@pytest.mark.slow
def test_cli_rescoring_reproduces_pipeline_number(demo_run):
    shot = demo_run / "results/demo/tiny_vl/img_sim_6/v2_lora/seed0/shot2"
    pipeline = json.loads(shot.with_suffix(".json").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "leverplus.cli", "score", "vqa", "--predictions", str(shot.with_suffix(".parquet")),
         "--references", str(demo_run / "data/demo/val.parquet")],
        capture_output=True, text=True, check=True,
    )
    rescored = json.loads(out.stdout)
    for key in ("score", "n", "ci95", "signature"):
        assert rescored[key] == pipeline[key], key


@pytest.mark.slow
def test_beam_rows_are_well_formed(demo_run):
    beam = pd.read_parquet(demo_run / "data/demo/beam/tiny_vl/img_sim_6/beam.parquet")
    pools = pd.read_parquet(demo_run / "data/demo/candidates/img_sim_6.parquet").set_index("anchor")
    assert sorted(beam["beam_rank"].unique()) == [0, 1]
    for row in beam.itertuples():
        assert len(row.icd_ids) == 2 and set(row.icd_ids) == set(row.picked)
        assert set(row.picked) <= set(pools.loc[row.anchor, "candidates"])
        assert row.anchor not in row.picked
    # beams are ranked by final-step InfoScore, highest first, sorted scores whose gaps are at most the tie tolerance
    # being ties broken by a stable key: a kept beam is never more than one tolerance-chain above the rank before it
    tol = float(beam["tie_tolerance"].iloc[0])
    last = beam.assign(last=beam["step_scores"].map(lambda s: s[-1]))
    for anchor, g in last.groupby("anchor"):
        ranked = list(g.sort_values("beam_rank")["last"])
        chain = len(pools.loc[anchor, "candidates"]) * len(ranked) * tol  # longest possible tie chain of a step
        assert all(b <= a + chain for a, b in zip(ranked, ranked[1:])), ranked
        assert ranked[0] >= max(ranked) - chain


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


@pytest.mark.slow
def test_rerun_nothing_after_a_complete_run(demo_run):
    assert pending(demo_run) == {}


@pytest.mark.slow
def test_rerun_selector_hyperparameter_touches_only_that_version(demo_run):
    p = pending(demo_run, "runs: {demo: {selector: {per_version: {v2_lora: {lr: 0.005}}}}}\n")
    assert set(p) == {"train_selector", "infer", "aggregate"}
    assert all("/v2_lora/" in f or f.endswith("v2_lora.json") or "v2_lora." in f for fs in p.values() for f in fs)


@pytest.mark.slow
def test_rerun_beam_setting_touches_beam_search_and_below(demo_run):
    p = pending(demo_run, "runs: {demo: {beam: {beam_size: 3}}}\n")
    assert set(p) == {"beam_search", "gather_beam", "train_selector", "infer", "aggregate"}


@pytest.mark.slow
def test_rerun_shot_list_touches_only_infer_and_aggregate(demo_run):
    p = pending(demo_run, "runs: {demo: {infer: {shots: [1, 2, 3]}}}\n")
    assert set(p) == {"infer", "baseline", "aggregate"}
    assert all("shot3" in f for rule in ("infer", "baseline") for f in p[rule])


@pytest.mark.slow
def test_rerun_unread_key_and_reordered_yaml_change_nothing(demo_run):
    assert pending(demo_run, "unused_note: nobody reads this\n") == {}
    import yaml

    cfg = yaml.safe_load((ROOT / ".test/config.yaml").read_text())
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(list(cfg.items()))}
    assert pending(demo_run, yaml.safe_dump(reordered, sort_keys=False)) == {}


@pytest.mark.slow
def test_rerun_library_code_change_touches_that_stage_and_below(demo_run, tmp_path):
    import os
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src/leverplus", copy / "leverplus")
    with open(copy / "leverplus/tracks/vqa/icd/infoscore.py", "a") as f:
        f.write("\n# a change to the beam-search library code\n")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    p = pending(demo_run, env=env)
    assert set(p) == {"beam_search", "gather_beam", "train_selector", "infer", "aggregate"}


def _edited_copy(tmp_path: Path, rel: str) -> dict:
    """env for a Snakemake run on a copy of src/leverplus in which `rel` got a (comment) edit."""
    import os
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src/leverplus", copy / "leverplus")
    with open(copy / "leverplus" / rel, "a") as f:
        f.write("\n# an edit\n")
    return {**os.environ, "PYTHONPATH": str(copy)}


@pytest.mark.slow
def test_rerun_selector_training_code_change_touches_train_selector_and_below(demo_run, tmp_path):
    # icd/selector_training.py is reached through leverplus.tracks.vqa.icd.selectors' function-level import (no list names it)
    p = pending(demo_run, env=_edited_copy(tmp_path, "icd/selector_training.py"))
    assert set(p) == {"train_selector", "infer", "aggregate"}


@pytest.mark.slow
def test_rerun_report_code_change_touches_only_aggregate(demo_run, tmp_path):
    p = pending(demo_run, env=_edited_copy(tmp_path, "report/plots.py"))
    assert set(p) == {"aggregate"}


@pytest.mark.slow
def test_rerun_stage_glue_change_touches_only_the_rules_that_run_it(demo_run, tmp_path):
    p = pending(demo_run, env=_edited_copy(tmp_path, "stages/selector.py"))
    assert set(p) == {"train_selector", "infer", "aggregate"}


@pytest.mark.slow
def test_report_holds_the_tables_and_plots(demo_run):
    import zipfile

    out = demo_run / "report.zip"
    smk(*TARGETS, "--report", str(out), "--directory", str(demo_run), f"--configfile={ROOT / '.test/config.yaml'}")
    names = zipfile.ZipFile(out).namelist()
    for v in ("v1", "v2_lora"):  # the plot and the table of each version, captioned with its wildcards
        assert sum(n.endswith((f"/{v}.png", f"/{v}.md")) for n in names) == 2, names
    html = zipfile.ZipFile(out).read("report/report.html").decode()
    assert "VQA accuracy (%) against the number of in-context demonstrations (shots) on <strong>demo</strong>" in html
    assert "Results table of selector version <strong>v2_lora</strong> on <strong>demo</strong>" in html
    assert "Lever-Plus: learned selection of in-context demonstrations" in html  # the workflow description


@pytest.mark.slow
def test_rerun_new_shipped_demo_models_touches_downloads_and_below(demo_run, tmp_path):
    import os
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src/leverplus", copy / "leverplus")
    build = copy / "leverplus/assets/demo_models/BUILD.json"
    record = json.loads(build.read_text())
    env = {**os.environ, "PYTHONPATH": str(copy)}
    record["build_seconds"] += 1.0  # a rebuild that reproduced the files: nothing to rerun
    build.write_text(json.dumps(record))
    assert pending(demo_run, env=env) == {}
    record["models"]["tiny_vl"]["sha256"]["model.safetensors"] = "0" * 64  # new weights
    build.write_text(json.dumps(record))
    p = pending(demo_run, env=env)
    assert {"download_model", "download_encoder", "beam_search", "train_selector", "infer", "aggregate"} <= set(p)
    assert "download_dataset" not in p


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
