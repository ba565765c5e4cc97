"""Per-job runtime setup: thread limits and GPU placement.

Every ``workflow/scripts/<rule>.py`` calls :func:`configure_job` first thing,
before any numerical library does parallel work::

    from leverplus.core.runtime import configure_job
    info = configure_job(threads=snakemake.threads, gpu=True)
    log.info("runtime: %s", info)

Threads
    The job is limited to ``threads`` (what the rule declares, as handed out by
    Snakemake), lowered further to ``SLURM_CPUS_PER_TASK`` inside a SLURM job and
    to the CPU affinity mask.  The limit is written to the usual thread-count
    environment variables (OpenMP, MKL, OpenBLAS, numexpr, Accelerate, Rayon) so child
    processes and libraries loaded later obey it, applied to torch's intra- and
    inter-op pools, and applied to BLAS/OpenMP libraries that are already loaded
    (via threadpoolctl when available).

GPUs
    Snakemake only counts the ``gpu`` resource; it never says *which* device a job
    should use.  On one machine, :func:`gpu_slot` hands out device ids by taking an
    exclusive ``flock`` on ``<lock dir>/gpu<id>.lock``; the lock is held until the
    process exits (or :func:`release_gpu_slot`), so concurrent ``gpu=1`` jobs get
    distinct ``CUDA_VISIBLE_DEVICES``.  Inside a SLURM job the allocation made by
    SLURM is respected and nothing is changed.  CPU-only jobs get
    ``CUDA_VISIBLE_DEVICES=""`` so they cannot grab a GPU by accident.

Environment variables
    ``LEVERPLUS_GPU_COUNT``     number of GPUs on this machine (overrides detection;
                                also how tests fake GPUs on a CPU-only machine)
    ``LEVERPLUS_GPU_LOCK_DIR``  directory of the slot lock files
                                (default ``$TMPDIR/leverplus-gpu-locks``; must be
                                shared by all jobs on the machine)
    ``LEVERPLUS_GPU_WAIT_S``    how long to wait for a free slot before failing
                                (default: wait forever; 0 = fail at once)
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",  # Rust pools, e.g. HF tokenizers
)

_POLL_S = 0.5


class GpuSlotTimeout(RuntimeError):
    """No GPU slot became free within ``LEVERPLUS_GPU_WAIT_S``."""


@dataclass
class GpuSlot:
    device: str  # the id written to CUDA_VISIBLE_DEVICES
    lock_path: Path
    fd: int


# The slot held by this process (locks must outlive configure_job's frame).
_held_slot: GpuSlot | None = None
# torch.set_num_interop_threads may be called at most once per process.
_interop_threads_set: int | None = None


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def in_slurm_job() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _affinity_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def effective_threads(threads: int) -> int:
    """``threads`` capped by the SLURM allocation and the CPU affinity mask."""
    if threads is None or int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    n = int(threads)
    if in_slurm_job():
        slurm_cpus = _env_int("SLURM_CPUS_PER_TASK")
        if slurm_cpus:
            n = min(n, slurm_cpus)
    aff = _affinity_cpus()
    if aff:
        n = min(n, aff)
    return max(1, n)


def gpu_count() -> int:
    """Number of GPUs on this machine (not restricted by CUDA_VISIBLE_DEVICES).

    ``LEVERPLUS_GPU_COUNT`` wins; otherwise ``nvidia-smi -L`` (does not initialise
    CUDA in this process); otherwise 0.
    """
    forced = _env_int("LEVERPLUS_GPU_COUNT")
    if forced is not None:
        return max(0, forced)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (subprocess.SubprocessError, OSError):
            return 0
    return 0


def _candidate_devices() -> list[str]:
    """Device ids a local job may be given.

    If the user already restricted the machine (CUDA_VISIBLE_DEVICES set for the
    whole Snakemake run), slots are taken from that list, otherwise 0..N-1.
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None and preset.strip() not in ("", "-1"):
        return [d.strip() for d in preset.split(",") if d.strip()]
    return [str(i) for i in range(gpu_count())]


def gpu_lock_dir() -> Path:
    d = os.environ.get("LEVERPLUS_GPU_LOCK_DIR")
    return Path(d) if d else Path(tempfile.gettempdir()) / "leverplus-gpu-locks"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    # Record the holder (debugging aid only; the flock is what counts).
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return fd


def gpu_slot(devices: list[str] | None = None, wait_s: float | None = None) -> GpuSlot | None:
    """Reserve one GPU for this process; ``None`` if the machine has no GPU.

    Idempotent within a process: a second call returns the slot already held.
    Blocks while all devices are taken (up to ``wait_s``, default
    ``LEVERPLUS_GPU_WAIT_S`` or forever): running two jobs on one device is what
    the allocator exists to prevent.
    """
    global _held_slot
    if _held_slot is not None:
        return _held_slot
    devices = _candidate_devices() if devices is None else list(devices)
    if not devices:
        return None
    if wait_s is None:
        env_wait = os.environ.get("LEVERPLUS_GPU_WAIT_S", "").strip()
        wait_s = float(env_wait) if env_wait else None
    lock_dir = gpu_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:  # shared by every user's jobs on the machine
        os.chmod(lock_dir, 0o1777)
    except OSError:
        pass
    deadline = None if wait_s is None else time.monotonic() + wait_s
    warned = False
    while True:
        for dev in devices:
            path = lock_dir / f"gpu{dev}.lock"
            fd = _try_lock(path)
            if fd is not None:
                _held_slot = GpuSlot(device=dev, lock_path=path, fd=fd)
                return _held_slot
        if deadline is not None and time.monotonic() >= deadline:
            raise GpuSlotTimeout(
                f"all {len(devices)} GPU slot(s) in {lock_dir} busy for {wait_s}s; "
                "run Snakemake with --resources gpu=<number of GPUs>"
            )
        if not warned:
            print(
                f"[leverplus.core.runtime] all GPU slots {devices} busy, waiting "
                "(is --resources gpu= larger than the number of GPUs?)",
                file=sys.stderr,
            )
            warned = True
        time.sleep(_POLL_S)


def release_gpu_slot() -> None:
    """Give the slot back before the process exits (exit releases it anyway)."""
    global _held_slot
    if _held_slot is None:
        return
    try:
        fcntl.flock(_held_slot.fd, fcntl.LOCK_UN)
    finally:
        os.close(_held_slot.fd)
        _held_slot = None


# --------------------------------------------------------------------------- #
# threads
# --------------------------------------------------------------------------- #
def _limit_loaded_threadpools(n: int) -> bool:
    """Cap BLAS/OpenMP pools that were loaded before the env vars were set."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    # Kept for the process lifetime on purpose (not used as a context manager).
    threadpool_limits(limits=n)
    return True


def _configure_torch(n: int) -> dict:
    global _interop_threads_set
    try:
        import torch
    except ImportError:
        return {"torch": None}
    torch.set_num_threads(n)
    interop_note = None
    if _interop_threads_set is None:
        try:
            torch.set_num_interop_threads(n)
            _interop_threads_set = n
        except RuntimeError as e:  # already set, or parallel work already started
            interop_note = str(e).splitlines()[0]
    elif _interop_threads_set != n:
        interop_note = f"interop threads already set to {_interop_threads_set} in this process"
    info = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    if interop_note:
        info["torch_interop_note"] = interop_note
    return info


# --------------------------------------------------------------------------- #
# the entry point used by every workflow script
# --------------------------------------------------------------------------- #
def configure_job(threads: int, gpu: bool = False) -> dict:
    """Apply the job's thread limit and GPU placement; return what was set.

    Call once, first, from each workflow script (``threads=snakemake.threads``).
    The returned dict is JSON-serialisable and meant to be logged.
    """
    n = effective_threads(threads)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)

    info: dict = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "declared_threads": int(threads),
        "threads": n,
        "env": {var: os.environ[var] for var in THREAD_ENV_VARS},
        "gpu_requested": bool(gpu),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_partition": os.environ.get("SLURM_JOB_PARTITION"),
        "slurm_cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
    }

    if not gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        info["gpu_source"] = "cpu-only"
    elif in_slurm_job():
        # SLURM (gres/gpu) already exported the allocated devices; keep them.
        info["gpu_source"] = "slurm"
    else:
        slot = gpu_slot()
        if slot is None:
            info["gpu_source"] = "none"  # no GPU on this machine: runs on CPU
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
            info["gpu_source"] = "slot"
            info["gpu_lock"] = str(slot.lock_path)
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")

    info["threadpoolctl"] = _limit_loaded_threadpools(n)
    info.update(_configure_torch(n))
    return info


__all__ = [
    "THREAD_ENV_VARS",
    "GpuSlot",
    "GpuSlotTimeout",
    "configure_job",
    "effective_threads",
    "gpu_count",
    "gpu_lock_dir",
    "gpu_slot",
    "in_slurm_job",
    "release_gpu_slot",
]


class DeviceUnavailable(RuntimeError, ValueError):
    """A CUDA device was asked for on a machine that has none."""


def resolve_device(spec: str | None, default: str = "auto") -> str:
    """The torch device a model job runs on, for every track: ``auto`` = ``cuda`` when CUDA is available (the job's
    CUDA_VISIBLE_DEVICES slot), else ``cpu``; ``cpu`` / ``cuda`` / ``cuda:N`` as given — a CUDA device on a machine
    without one stops (:class:`DeviceUnavailable`) instead of silently running on the CPU. ``None`` means
    ``default`` (``auto`` for most jobs; the audio edge arm's default is ``cpu``)."""
    import torch

    spec = default if spec is None else str(spec)
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {spec!r}: CUDA is not available here (use device: auto or cpu)")
        return spec
    raise ValueError(f"device {spec!r}: use auto, cpu, cuda or cuda:N")

