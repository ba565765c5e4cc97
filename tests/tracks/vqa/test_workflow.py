"""The demo DAG end to end on the `.test/config.yaml` slice, in a temporary working directory: its results, rescoring
them with the CLI, the report, and what reruns after a config or code change (the checks without a DAG run are in
test_workflow_config.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import ROOT, SNAKEMAKE, build_once, smk

# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Under --dist loadfile the module
# runs on one xdist worker, and its DAG fixture is built once per test session (build_once).
pytestmark = pytest.mark.slow

TARGETS = ["results/demo/v1.json", "results/demo/v2_lora.json"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The slice's DAG, run once per test session (build_once: not once per xdist worker, never torn down between
    modules), as the README's demo command runs: plain `--cores 2` (the demo's models claim no GPU slot)."""
    def build(work: Path) -> None:
        (work / "config").symlink_to(ROOT / "config")  # the Snakefile's config files, read from the working directory
        smk(*TARGETS, "--cores", "2", "--directory", str(work), f"--configfile={ROOT / '.test/config.yaml'}")

    return build_once(tmp_path_factory, "vqa-demo-dag", build)


def pending(work: Path, *overlays: str, env: dict | None = None) -> dict[str, set[str]]:
    """Rules with `update pending` in `snakemake --summary` (the 9.x way to ask what would rerun), with the
    .test config and then each overlay YAML text applied on top."""
    import tempfile

    files = [str(ROOT / ".test/config.yaml")]
    for text in overlays:  # a file of its own: tests sharing the session's DAG never read each other's overlay
        with tempfile.NamedTemporaryFile("w", dir=work, prefix="overlay_", suffix=".yaml", delete=False) as f:
            f.write(text)
        files.append(f.name)
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
    p = pending(demo_run, env=_edited_copy(tmp_path, "tracks/vqa/icd/selector_training.py"))
    assert set(p) == {"train_selector", "infer", "aggregate"}


@pytest.mark.slow
def test_rerun_report_code_change_touches_only_aggregate(demo_run, tmp_path):
    p = pending(demo_run, env=_edited_copy(tmp_path, "tracks/vqa/report/plots.py"))
    assert set(p) == {"aggregate"}


@pytest.mark.slow
def test_rerun_stage_glue_change_touches_only_the_rules_that_run_it(demo_run, tmp_path):
    p = pending(demo_run, env=_edited_copy(tmp_path, "tracks/vqa/stages/selector.py"))
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
