"""Kill a resumable stage mid-run: start it in a subprocess and SIGKILL it once its JSONL checkpoint (a settings
header, then one line per finished anchor) holds enough anchors. Shared by the beam_search and beam_rewards resume
tests."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def complete_lines(path: Path) -> int:
    """Finished anchors in a checkpoint (complete lines after the settings header)."""
    return max(path.read_bytes().count(b"\n") - 1, 0) if path.exists() else 0


def run_until_killed(argv: list[str], partial: Path, min_lines: int, env: dict) -> None:
    """Run `argv` and SIGKILL it as soon as `partial` holds `min_lines` finished anchors; fail if it exits first.
    No wall-clock limit: on a loaded machine the stage is slower, not wrong."""
    err = tempfile.TemporaryFile()  # noqa: SIM115 (closed below) -- a file, not a pipe: a full pipe would stall the child before its checkpoint
    proc = subprocess.Popen(argv, env=env, stderr=err)
    try:
        while complete_lines(partial) < min_lines:
            if proc.poll() is not None:
                err.seek(0)
                pytest.fail(f"exited (rc={proc.returncode}) before it could be killed: {err.read()[-2000:]!r}")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        err.close()
    assert proc.returncode == -signal.SIGKILL
