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


def build_once(tmp_path_factory, name: str, build) -> Path:
    """A directory that `build(directory)` fills once per test session, whichever xdist worker asks for it first
    (the others wait on a file lock and reuse it): a whole-DAG run or another costly artefact is never built once per
    worker. A build that failed leaves no completion marker, so the next request rebuilds it from scratch."""
    import os
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers (each has its own popen-gwN below it)
    target = root / f"shared-{name}"
    with FileLock(str(target) + ".lock"):
        done = target / ".built"
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            done.write_text("")
    return target
