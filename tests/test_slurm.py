"""SLURM placement: the profiles, and a real single-node SLURM cluster.

* test_profile_* -- fast checks that profiles/slurm and profiles/slurm-test agree.
* test_dry_run_*  (slow) -- the real workflow's DAG under --profile profiles/slurm:
  every GPU job on the GPU partition, every other job CPU-throttled.
* test_toy_dag_on_real_slurm  (slurm) -- starts slurmctld/slurmd/munged on
  127.0.0.1 (tests/slurm/start_slurm.sh, installs Debian's slurm packages if
  needed), runs the toy DAG with --profile profiles/slurm-test, checks each job
  ran as a SLURM job in its profile's partition with its thread limit, compares
  the results with a local run, and stops the cluster again.
  Needs root; skipped otherwise (LEVERPLUS_REQUIRE_SLURM=1 turns skips into failures).
  Run it with:  pytest -m slurm
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
import toyrun  # noqa: E402

REPO = toyrun.REPO
SLURM_DIR = REPO / "tests" / "slurm"
PROFILES = REPO / "profiles"
GPU_RULES = {"encode", "beam_search", "train_selector", "infer", "baseline", "zero_shot"}
CPU_RULES = {"download_dataset", "download_model", "candidates", "gather_beam", "aggregate"}


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def _classes(profile: dict) -> tuple[dict, dict]:
    """Split set-resources into (gpu rules, cpu-throttled rules) by their partition."""
    sr = profile["set-resources"]
    gpu_parts = {r["slurm_partition"] for name, r in sr.items() if name in GPU_RULES}
    cpu_parts = {r["slurm_partition"] for name, r in sr.items() if name in CPU_RULES}
    assert len(gpu_parts) == 1 and len(cpu_parts) == 1 and gpu_parts != cpu_parts, (gpu_parts, cpu_parts)
    (gpu_part,), (cpu_part,) = gpu_parts, cpu_parts
    gpu = {n: r for n, r in sr.items() if r["slurm_partition"] == gpu_part}
    cpu = {n: r for n, r in sr.items() if r["slurm_partition"] == cpu_part}
    assert set(gpu) | set(cpu) == set(sr), "every rule entry is on one of the two partitions"
    return gpu, cpu


# --------------------------------------------------------------------------- #
# profiles (fast)
# --------------------------------------------------------------------------- #
def test_profile_slurm_maps_rules_to_partitions():
    prof = _profile("slurm")
    assert prof["executor"] == "slurm"
    # accounting-less clusters: job status from squeue, and no account to validate
    assert prof["slurm-status-command"] == "squeue"
    assert "slurm_account" not in prof.get("default-resources", {})
    gpu, cpu = _classes(prof)
    assert GPU_RULES <= set(gpu) and CPU_RULES <= set(cpu)
    assert "edge_infer" in cpu  # the audio track's throttled rule uses the same entry
    for name, r in gpu.items():
        assert r["gpu"] >= 1, f"{name} must request a GPU on a real cluster"
    cpt = {r["cpus_per_task"] for r in cpu.values()}
    assert len(cpt) == 1 and next(iter(cpt)) >= 1, "one fixed cpus_per_task for all CPU-throttled rules"
    assert prof["default-resources"]["slurm_partition"] == next(iter(cpu.values()))["slurm_partition"]


def test_profile_slurm_test_mirrors_slurm():
    real, test = _profile("slurm"), _profile("slurm-test")
    for key in ("executor", "slurm-status-command"):
        assert test[key] == real[key]
    rg, rc = _classes(real)
    tg, tc = _classes(test)
    assert set(tg) == set(rg) and set(tc) == set(rc), "same rules in the same classes"
    for r in tg.values():
        assert r["gpu"] == 0  # the test node has no gres/gpu
    assert {r["cpus_per_task"] for r in tc.values()} == {1}


def test_default_profile_is_harmless_on_a_cluster():
    """profiles/default is Snakemake's implicit workflow profile, also under --profile profiles/slurm."""
    prof = _profile("default")
    assert prof["resources"]["gpu"] >= 1
    # a global (default-scoped) gpu limit would serialise GPU jobs across the cluster
    assert prof["set-resource-scopes"]["gpu"] == "local"
    assert "executor" not in prof and "default-resources" not in prof and "set-resources" not in prof


# --------------------------------------------------------------------------- #
# dry run of the real workflow (slow: runs Snakemake)
# --------------------------------------------------------------------------- #
_JOB_RE = re.compile(r"^(local)?rule (\w+):$")


def _dry_run_jobs(args: list[str]) -> list[tuple[str, dict]]:
    proc = subprocess.run(
        [*toyrun.snakemake_cmd(), "--profile", str(PROFILES / "slurm"), "-n", "--nolock", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        m = _JOB_RE.match(line.strip())
        if m:
            rule = None if m.group(1) else m.group(2)
            continue
        if rule and line.strip().startswith("resources:"):
            res = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))
            jobs.append((rule, res))
            rule = None
    assert jobs, proc.stdout[-3000:]
    return jobs


_DRY_RUNS = [pytest.param([], id="demo-config")]
if (REPO / "config" / "okvqa.yaml").exists():
    _DRY_RUNS.append(
        pytest.param(["results/okvqa/v2_lora.json", "--configfile", "config/okvqa.yaml"], id="okvqa")
    )


@pytest.mark.slow
@pytest.mark.parametrize("args", _DRY_RUNS)
def test_dry_run_places_gpu_and_cpu_rules(args):
    prof = _profile("slurm")
    gpu, cpu = _classes(prof)
    gpu_part = next(iter(gpu.values()))["slurm_partition"]
    cpu_part = next(iter(cpu.values()))["slurm_partition"]
    cpt = str(next(iter(cpu.values()))["cpus_per_task"])
    seen = set()
    for rule, res in _dry_run_jobs(args):
        if rule == "all":
            continue
        seen.add(rule)
        assert rule in prof["set-resources"], f"rule {rule} has no entry in profiles/slurm (would use defaults)"
        if int(res.get("gpu", 0)) >= 1:
            assert res["slurm_partition"] == gpu_part, (rule, res)
        else:
            assert res["slurm_partition"] == cpu_part, (rule, res)
            assert res["cpus_per_task"] == cpt, (rule, res)
    assert seen & GPU_RULES and seen & CPU_RULES


# --------------------------------------------------------------------------- #
# a real SLURM cluster (root; installs Debian packages if missing)
# --------------------------------------------------------------------------- #
def _cannot_run(reason: str):
    if os.environ.get("LEVERPLUS_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM test required but cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    if sys.platform != "linux":
        _cannot_run("needs Linux")
    if os.geteuid() != 0:
        _cannot_run("needs root: starts munged/slurmctld/slurmd (and may apt-get install slurm-wlm)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        _cannot_run("SLURM is not installed and apt-get is unavailable")
    # one test cluster at a time on this machine (parallel pytest runs wait here)
    lock = open("/tmp/leverplus-slurm-test.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, LEVERPLUS_SLURM_STATE=str(state), LEVERPLUS_SLURM_PORT="16837")
    t0 = time.monotonic()
    proc = subprocess.run([str(SLURM_DIR / "start_slurm.sh")], env=env, capture_output=True, text=True, timeout=900)
    started = time.monotonic() - t0
    if proc.returncode == 2:
        lock.close()
        _cannot_run(proc.stderr.strip().splitlines()[-1])
    pids = {p.stem: int(p.read_text()) for p in (state / "run").glob("*.pid")}
    info = {"state": state, "env": {"SLURM_CONF": str(state / "etc" / "slurm.conf")}, "timings": {"start_s": started}}
    try:
        assert proc.returncode == 0, f"start_slurm.sh failed:\n{proc.stderr}"
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        yield info
    finally:
        t1 = time.monotonic()
        stop = subprocess.run([str(SLURM_DIR / "stop_slurm.sh")], env=env, capture_output=True, text=True, timeout=120)
        info["timings"]["stop_s"] = time.monotonic() - t1
        lock.close()
        still = [name for name, pid in pids.items() if _alive(pid)]
        print(f"SLURM test timings: {json.dumps(info['timings'])}")
        assert stop.returncode == 0, stop.stderr
        assert not still, f"daemons still running after stop_slurm.sh: {still}"
        assert not state.exists()
        assert not (Path("/etc/slurm/slurm.conf").is_symlink() and str(state) in os.readlink("/etc/slurm/slurm.conf"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _squeue_all(env: dict) -> dict[str, dict]:
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%P|%T|%k"],
        env=dict(os.environ, **env), capture_output=True, text=True, check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        jid, part, state, comment = line.strip().split("|", 3)
        jobs[jid] = {"partition": part, "state": state, "comment": comment}
    return jobs


@pytest.mark.slurm
@pytest.mark.slow
def test_toy_dag_on_real_slurm(slurm_cluster, tmp_path):
    env = slurm_cluster["env"]
    timings = slurm_cluster["timings"]
    test_prof = _profile("slurm-test")["set-resources"]

    wd = tmp_path / "slurm"
    t0 = time.monotonic()
    # barrier: the two beam_search shards must be running at the same time
    proc = toyrun.run_toy(
        wd, "--profile", str(PROFILES / "slurm-test"), "--config", "barrier=120", env=env, timeout=480
    )
    timings["toy_slurm_run_s"] = time.monotonic() - t0
    toyrun.assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"submitted with SLURM jobid \d+", log)) == 4, log[-3000:]

    meta = toyrun.read_meta(wd)
    assert set(meta) == {"candidates", "beam_search_0", "beam_search_1", "gather_beam"}
    squeue = _squeue_all(env)
    job_ids = set()
    for key, m in meta.items():
        rule = m["rule"]
        want = test_prof[rule]
        # seen from inside the job ...
        assert m["slurm_job_id"], f"{key} did not run as a SLURM job"
        assert m["slurm_job_partition"] == want["slurm_partition"], (key, m["slurm_job_partition"])
        # ... and from SLURM's side
        sq = squeue[m["slurm_job_id"]]
        assert sq["partition"] == want["slurm_partition"] and sq["state"] == "COMPLETED", sq
        assert sq["comment"].startswith(f"rule_{rule}"), sq
        job_ids.add(m["slurm_job_id"])
        # thread limit, read inside the job after parallel work
        cpus = want.get("cpus_per_task", m["snakemake_threads"])
        assert m["slurm_cpus_per_task"] == str(cpus)
        assert m["runtime"]["threads"] == cpus
        assert m["torch_threads"] == cpus and m["omp_num_threads"] == str(cpus)
        assert m["os_threads"] == cpus == 1
    assert len(job_ids) == 4
    # the CPU-throttled rules declare 2 threads; the partition's 1 CPU wins
    assert meta["candidates"]["snakemake_threads"] == 2 and meta["candidates"]["torch_threads"] == 1
    assert toyrun.overlaps(meta["beam_search_0"], meta["beam_search_1"])

    local = tmp_path / "local"
    t0 = time.monotonic()
    toyrun.assert_ok(toyrun.run_toy(local, env={"LEVERPLUS_GPU_LOCK_DIR": str(tmp_path / "locks")}))
    timings["toy_local_run_s"] = time.monotonic() - t0
    assert all(m["slurm_job_id"] is None for m in toyrun.read_meta(local).values())
    slurm_results, local_results = toyrun.read_results(wd), toyrun.read_results(local)
    assert len(slurm_results) == 4 and slurm_results == local_results
