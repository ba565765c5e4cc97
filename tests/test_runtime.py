"""leverplus.core.runtime: thread limits and GPU slot assignment (no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from leverplus.core import runtime

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
import toyrun

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock/proc based; Linux only")

_CLEAN_ENV_PREFIXES = ("SLURM_", "LEVERPLUS_GPU", "CUDA_VISIBLE_DEVICES", *runtime.THREAD_ENV_VARS)


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN_ENV_PREFIXES)}
    env.update(extra)
    return env


def _run_py(code: str, env: dict) -> dict:
    """Run code in a fresh interpreter (torch's interop pool can be set only once per process)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- #
# threads
# --------------------------------------------------------------------------- #
def test_effective_threads_caps(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert runtime.effective_threads(3) == 3
    # outside a SLURM job a stray SLURM_CPUS_PER_TASK is ignored
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert runtime.effective_threads(3) == 3
    # inside a job the allocation wins over the rule's declaration
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert runtime.effective_threads(3) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert runtime.effective_threads(3) == 3
    # and so does the CPU affinity mask (taskset, cgroup cpusets)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5})
    assert runtime.effective_threads(3) == 1
    with pytest.raises(ValueError):
        runtime.effective_threads(0)


@pytest.mark.parametrize("threads", [1, 2])
def test_configure_job_limits_threads_in_process(threads):
    out = _run_py(
        f"""
        import json, os
        from leverplus.core.runtime import configure_job
        info = configure_job(threads={threads}, gpu=False)
        import numpy as np, torch
        from threadpoolctl import threadpool_info
        x = torch.randn(400, 400)
        for _ in range(3):
            x = torch.tanh(x @ x / 400)
        a = np.random.rand(300, 300); a @ a
        print(json.dumps({{
            "info": info,
            "torch_threads": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
            "env": {{v: os.environ.get(v) for v in {list(runtime.THREAD_ENV_VARS)!r}}},
            "pools": sorted({{p["num_threads"] for p in threadpool_info()}}),
            "os_threads": len(os.listdir("/proc/self/task")),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }}))
        """,
        _clean_env(),
    )
    assert out["info"]["threads"] == threads
    assert out["torch_threads"] == threads
    assert out["torch_interop"] == threads
    assert set(out["env"].values()) == {str(threads)}
    assert out["pools"] and max(out["pools"]) <= threads  # every loaded BLAS/OpenMP pool
    assert out["cuda"] == "" and out["info"]["gpu_source"] == "cpu-only"
    if threads == 1:
        # after real parallel work the process still has a single OS thread
        assert out["os_threads"] == 1


def test_configure_job_after_numpy_import_and_twice():
    """Libraries loaded before configure_job are limited too; a second call must not crash."""
    out = _run_py(
        """
        import json
        import numpy as np
        import torch
        torch.randn(200, 200) @ torch.randn(200, 200)   # pools already running
        from leverplus.core.runtime import configure_job
        from threadpoolctl import threadpool_info
        first = configure_job(threads=1, gpu=False)
        second = configure_job(threads=1, gpu=False)
        print(json.dumps({"first": first, "second": second, "torch": torch.get_num_threads(),
                          "pools": sorted({p["num_threads"] for p in threadpool_info()})}))
        """,
        _clean_env(),
    )
    assert out["torch"] == 1
    assert out["pools"] == [1]
    assert out["second"]["threads"] == 1


# --------------------------------------------------------------------------- #
# GPU slots
# --------------------------------------------------------------------------- #
_HOLDER = """
import json, os, sys, time
from pathlib import Path
from leverplus.core.runtime import configure_job
info = configure_job(threads=1, gpu=True)
bar = Path(sys.argv[1]); n = int(sys.argv[2])
(bar / str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
deadline = time.time() + 1800  # a deadlock guard, not a speed limit
while len(list(bar.iterdir())) < n:          # hold the slot until all holders have one
    if time.time() > deadline:
        sys.exit("barrier timeout")
    time.sleep(0.05)
print(json.dumps(info))
"""


def _start_holders(n, env, barrier: Path):
    barrier.mkdir()
    return [
        subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(barrier), str(n)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]


def _collect(procs):
    infos = []
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        infos.append(json.loads(out.strip().splitlines()[-1]))
    return infos


def test_concurrent_gpu_jobs_get_distinct_devices(tmp_path):
    env = _clean_env(LEVERPLUS_GPU_COUNT="3", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks"))
    infos = _collect(_start_holders(3, env, tmp_path / "bar"))
    devices = sorted(i["cuda_visible_devices"] for i in infos)
    assert devices == ["0", "1", "2"]
    assert {i["gpu_source"] for i in infos} == {"slot"}


def test_no_oversubscription_when_all_slots_busy(tmp_path):
    env = _clean_env(LEVERPLUS_GPU_COUNT="1", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from leverplus.core.runtime import configure_job; "
            "i = configure_job(threads=1, gpu=True); print(i['cuda_visible_devices'], flush=True); time.sleep(60)",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        probe = (
            "import json; from leverplus.core.runtime import configure_job, GpuSlotTimeout\n"
            "try:\n    print(json.dumps(configure_job(threads=1, gpu=True)))\n"
            "except GpuSlotTimeout as e:\n    print(json.dumps({'timeout': str(e)}))\n"
        )
        t0 = time.monotonic()
        out = _run_py(probe, dict(env, LEVERPLUS_GPU_WAIT_S="1"))
        assert "timeout" in out and time.monotonic() - t0 >= 1
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL, no cleanup): the kernel dropped its lock
    out = _run_py(probe, dict(env, LEVERPLUS_GPU_WAIT_S="5"))
    assert out.get("cuda_visible_devices") == "0"


def test_slots_come_from_a_preset_device_list(tmp_path):
    env = _clean_env(
        LEVERPLUS_GPU_COUNT="8", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks"), CUDA_VISIBLE_DEVICES="5,7"
    )
    infos = _collect(_start_holders(2, env, tmp_path / "bar"))
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["5", "7"]


def test_slurm_allocation_is_respected(tmp_path):
    lock_dir = tmp_path / "locks"
    out = _run_py(
        """
        import json
        from leverplus.core.runtime import configure_job
        print(json.dumps(configure_job(threads=4, gpu=True)))
        """,
        _clean_env(
            SLURM_JOB_ID="17", SLURM_CPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="3",
            LEVERPLUS_GPU_COUNT="4", LEVERPLUS_GPU_LOCK_DIR=str(lock_dir),
        ),
    )
    assert out["cuda_visible_devices"] == "3" and out["gpu_source"] == "slurm"
    assert out["threads"] == 2 and out["torch_threads"] == 2
    assert not lock_dir.exists()  # the local allocator stayed out of it


def test_gpu_rule_without_gpus_runs_on_cpu(tmp_path):
    out = _run_py(
        "import json; from leverplus.core.runtime import configure_job; print(json.dumps(configure_job(threads=1, gpu=True)))",
        _clean_env(LEVERPLUS_GPU_COUNT="0", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks")),
    )
    assert out["gpu_source"] == "none" and out["cuda_visible_devices"] is None


# --------------------------------------------------------------------------- #
# inside jobs run by Snakemake (toy DAG, profiles/default)
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_toy_dag_local_gpu_slots_and_threads(tmp_path):
    """Two gpu=1 shards run at once on a (fake) 2-GPU machine and get different devices;
    every job runs with exactly its declared thread count."""
    env = _clean_env(LEVERPLUS_GPU_COUNT="2", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks"))
    wd = tmp_path / "two_gpus"
    # barrier: each shard waits until both have started -> fails unless concurrent
    toyrun.assert_ok(toyrun.run_toy(wd, "--resources", "gpu=2", "--config", "barrier=120", env=env))
    meta = toyrun.read_meta(wd)
    b0, b1 = meta["beam_search_0"], meta["beam_search_1"]
    assert toyrun.overlaps(b0, b1)
    assert {b0["cuda_visible_devices"], b1["cuda_visible_devices"]} == {"0", "1"}
    for m in meta.values():
        declared = m["snakemake_threads"]
        assert m["runtime"]["threads"] == declared
        assert m["torch_threads"] == declared
        assert m["omp_num_threads"] == str(declared)
        if declared == 1:
            assert m["os_threads"] == 1
    assert meta["candidates"]["torch_threads"] == 2  # CPU-only rule declaring 2 threads
    assert meta["candidates"]["cuda_visible_devices"] == ""  # and it cannot see GPUs


@pytest.mark.slow
def test_default_profile_serialises_gpu_jobs(tmp_path):
    """profiles/default (gpu: 1) never runs two GPU jobs at once, even with free cores."""
    env = _clean_env(LEVERPLUS_GPU_COUNT="2", LEVERPLUS_GPU_LOCK_DIR=str(tmp_path / "locks"))
    wd = tmp_path / "one_gpu"
    toyrun.assert_ok(toyrun.run_toy(wd, "--profile", str(toyrun.REPO / "profiles" / "default"), env=env))
    meta = toyrun.read_meta(wd)
    assert not toyrun.overlaps(meta["beam_search_0"], meta["beam_search_1"])
