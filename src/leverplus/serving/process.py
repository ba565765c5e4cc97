"""Run ``python -m leverplus.serving`` as a child process for the length of a ``with`` block.

    with spawn_server(["--chat-model", d, "--model-name", "tiny"]) as url:
        client = OpenAICompatClient(APIConfig(base_url=url, model="tiny"))

The child's stderr goes to ``log_file`` (or is discarded); the URL is read from its first stdout line. On exit
the child gets SIGTERM, then SIGKILL after ``stop_timeout_s``.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

__all__ = ["spawn_server"]


@contextlib.contextmanager
def spawn_server(args: list[str], *, startup_timeout_s: float = 300.0, stop_timeout_s: float = 10.0,
                 log_file: str | os.PathLike | None = None, env: dict | None = None) -> Iterator[str]:
    cmd = [sys.executable, "-m", "leverplus.serving", *args]
    err = open(log_file, "a", encoding="utf-8") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout_s)
        url = line[0].strip() if line else ""
        if not url.startswith("http://"):
            proc.poll()
            raise RuntimeError(f"local API server did not start (exit code {proc.returncode}); "
                               f"see {log_file or 'its stderr (pass log_file=)'}")
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if err is not subprocess.DEVNULL:
            err.close()
