"""Helpers for tests/test_runtime.py: run the toy DAG, read its records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "slurm" / "toy" / "Snakefile"


def snakemake_cmd() -> list[str]:
    return [sys.executable, "-m", "snakemake"]


def run_toy(workdir: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the toy workflow from the repository root, as a user would.

    Running from the root means Snakemake also applies profiles/default as the
    workflow profile, exactly as it does for the real workflow.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = [*snakemake_cmd(), "-s", str(TOY), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    (workdir / "snakemake.out").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"


def read_meta(workdir: Path) -> dict[str, dict]:
    """meta/<job>.json records keyed by file stem (candidates, beam_search_0, ...)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((workdir / "meta").glob("*.json"))}


def read_results(workdir: Path) -> dict[str, bytes]:
    root = workdir / "results"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def overlaps(a: dict, b: dict) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]
