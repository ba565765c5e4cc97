"""Helpers of the whole-DAG tests of every track (tests/tracks/*/test_*workflow.py): the real Snakefile run in a
subprocess, and an empty working directory for it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def smk(*args, cwd=ROOT, check=True):
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def workdir(tmp_path: Path) -> Path:
    """An empty working directory for Snakemake with config/ linked in (the Snakefile's `configfile:` is read from
    the working directory), so nothing the checkout holds (a demo run's results) changes the DAG."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "config").symlink_to(ROOT / "config")
    return work
