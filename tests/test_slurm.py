"""SLURM placement: the profiles, and a real single-node SLURM cluster.

* test_profile_* -- fast checks that profiles/slurm and profiles/slurm-test agree.
* test_dry_run_*  (slow) -- the real workflow's DAG under --profile profiles/slurm:
  every GPU job on the GPU partition, every other job CPU-throttled.
* test_demo_dag_on_real_slurm  (slurm) -- starts slurmctld/slurmd/munged on
  127.0.0.1 (tests/slurm/start_slurm.sh, installs Debian's slurm packages if
  needed), runs the real Snakefile on the tiny slice .test/slurm.yaml (every rule,
  14 jobs) with --profile profiles/slurm-test, checks that each job ran as a SLURM
  job in its profile's partition with its thread limit, compares the results with
  a local run of the same slice, and stops the cluster again.
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
from datetime import datetime
from pathlib import Path

import pytest
import yaml

# Slow tier (whole DAG): `.ci/run` runs it, the README's fast command skips it. Tests using the module's DAG
# fixture share one xdist worker (tests/conftest.py), so the DAG runs once per test session.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
PROFILES = REPO / "profiles"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
GPU_RULES = {"encode", "beam_search", "beam_rewards", "train_selector", "infer", "baseline", "zero_shot"}
CPU_RULES = {"download_dataset", "download_model", "candidates", "gather_beam", "aggregate", "compare_versions"}


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
    assert "audio_edge_infer" in cpu  # the audio track's throttled edge rule uses the same entry
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


def _dry_run_jobs(workdir: Path, args: list[str]) -> list[tuple[str, dict]]:
    """The jobs of a dry run in an empty working directory: the whole DAG, whatever the checkout holds
    (a demo run in the repository root would leave "Nothing to be done"). The Snakefile's own
    `configfile: config/config.yaml` is read from the working directory, so config/ is linked there."""
    (workdir / "config").symlink_to(REPO / "config")
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile",
         str(PROFILES / "slurm"), "-n", "--nolock", *args],
        cwd=REPO, capture_output=True, text=True,
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
def test_dry_run_places_gpu_and_cpu_rules(args, tmp_path):
    prof = _profile("slurm")
    gpu, cpu = _classes(prof)
    gpu_part = next(iter(gpu.values()))["slurm_partition"]
    cpu_part = next(iter(cpu.values()))["slurm_partition"]
    cpt = str(next(iter(cpu.values()))["cpus_per_task"])
    seen = set()
    for rule, res in _dry_run_jobs(tmp_path, args):
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


SLURM_PORT = "16837"
SYS_CONF = Path("/etc/slurm/slurm.conf")


def _cluster_lock():
    """An exclusive lock on this machine's one test-cluster slot (the port and /etc/slurm/slurm.conf)."""
    lock = open("/tmp/leverplus-slurm-test.lock", "w")  # noqa: SIM115 (held by the caller)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _can_run_here():
    if sys.platform != "linux":
        _cannot_run("needs Linux")
    if os.geteuid() != 0:
        _cannot_run("needs root: starts munged/slurmctld/slurmd (and may apt-get install slurm-wlm)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        _cannot_run("SLURM is not installed and apt-get is unavailable")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    _can_run_here()
    # one test cluster at a time on this machine (parallel pytest runs wait here)
    lock = _cluster_lock()
    state = tmp_path_factory.mktemp("slurm")
    # this pytest process owns the cluster: if it is killed, the next run finds the cluster stale and stops it
    env = dict(os.environ, LEVERPLUS_SLURM_STATE=str(state), LEVERPLUS_SLURM_PORT=SLURM_PORT,
               LEVERPLUS_SLURM_OWNER_PID=str(os.getpid()))
    t0 = time.monotonic()
    proc = subprocess.run([str(SLURM_DIR / "start_slurm.sh")], env=env, capture_output=True, text=True)
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
        stop = subprocess.run([str(SLURM_DIR / "stop_slurm.sh")], env=env, capture_output=True, text=True)
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


def _start(state: Path, owner_pid: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, LEVERPLUS_SLURM_STATE=str(state), LEVERPLUS_SLURM_PORT=SLURM_PORT,
               LEVERPLUS_SLURM_OWNER_PID=str(owner_pid))
    proc = subprocess.run([str(SLURM_DIR / "start_slurm.sh")], env=env, capture_output=True, text=True)
    if proc.returncode == 2 and "not ours" not in proc.stderr:
        _cannot_run(proc.stderr.strip().splitlines()[-1])
    return proc


def _stop(state: Path) -> None:
    subprocess.run([str(SLURM_DIR / "stop_slurm.sh")], env=dict(os.environ, LEVERPLUS_SLURM_STATE=str(state)),
                   capture_output=True, text=True)


def _daemon_pids(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (state / "run").glob("*.pid")}


# Before test_demo_dag_on_real_slurm in this file, so that on one xdist worker it runs before the module's
# cluster fixture takes the lock (flock is per open file: a second lock in the same process would wait forever).
@pytest.mark.slurm
def test_stale_cluster_of_a_killed_run_is_stopped(tmp_path_factory):
    """A run killed mid-test leaves its daemons up and /etc/slurm/slurm.conf linked into its state dir. The next
    start must see that the owner is gone, stop that cluster and start its own; a live owner's is left alone."""
    _can_run_here()
    root = tmp_path_factory.mktemp("stale")
    old, new = root / "old", root / "new"
    with _cluster_lock():
        owner = subprocess.Popen(["sleep", "900"])  # stands in for the pytest process of the killed run
        try:
            first = _start(old, owner.pid)
            assert first.returncode == 0, first.stderr
            old_pids = _daemon_pids(old)
            assert set(old_pids) == {"munged", "slurmctld", "slurmd"}
            assert (old / "owner").read_text().split()[0] == str(owner.pid)

            # the owner is alive: its cluster is in use, the second start must refuse and touch nothing
            busy = _start(new, os.getpid())
            assert busy.returncode == 2 and "not ours" in busy.stderr, busy.stderr
            assert all(_alive(pid) for pid in old_pids.values())
            assert os.readlink(SYS_CONF) == str(old / "etc" / "slurm.conf")

            owner.kill()  # the killed test run
            owner.wait()
            second = _start(new, os.getpid())
            assert second.returncode == 0, second.stderr
            assert "stale test cluster" in second.stderr, second.stderr
            assert not [name for name, pid in old_pids.items() if _alive(pid)], "the stale daemons were stopped"
            assert os.readlink(SYS_CONF) == str(new / "etc" / "slurm.conf")
            new_pids = _daemon_pids(new)
            assert set(new_pids) == {"munged", "slurmctld", "slurmd"} and all(map(_alive, new_pids.values()))
            sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                   env=dict(os.environ, SLURM_CONF=str(new / "etc" / "slurm.conf")))
            assert sinfo.returncode == 0 and set(sinfo.stdout.split()) == {"idle"}, sinfo  # one line per partition
        finally:
            owner.kill()
            owner.wait()
            _stop(new)
            _stop(old)
    assert not SYS_CONF.is_symlink()


def _squeue_all(env: dict) -> dict[str, dict]:
    """Every job slurmctld still knows (finished ones too: MinJobAge=3600 on the test cluster; it has no
    accounting, so sacct cannot answer): partition, state, submit/start/end time, the plugin's comment."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%P|%T|%V|%S|%e|%k"],
        env=dict(os.environ, **env), capture_output=True, text=True, check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        jid, part, state, submit, start, end, comment = line.strip().split("|", 6)
        jobs[jid] = {"partition": part, "state": state, "submit": submit, "start": start, "end": end,
                     "comment": comment}
    return jobs


# --------------------------------------------------------------------------- #
# the real demo DAG (tiny slice .test/slurm.yaml) on the real SLURM cluster
# --------------------------------------------------------------------------- #
SNAKEFILE = REPO / "Snakefile"
SLICE = REPO / ".test" / "slurm.yaml"
SLICE_TARGET = "results/demo/v4.json"
SLICE_TARGETS = (SLICE_TARGET, "results/demo/versions.json")
# the jobs .test/slurm.yaml gives for SLICE_TARGETS: every VQA rule, encode for train and val, two beam shards,
# v3 and v4 trained and inferred (v4 vs v3 is the one version comparison)
SLICE_JOBS = {
    "download_dataset": 1, "download_model": 1, "download_encoder": 1, "encode": 2, "candidates": 1,
    "beam_search": 2, "gather_beam": 1, "beam_rewards": 1, "train_selector": 2, "infer": 2, "baseline": 1,
    "zero_shot": 1, "aggregate": 1, "compare_versions": 1,
}
# The CPU-throttled rules declare `threads: 1`. The SLURM run raises that to 2 (--set-threads), so the
# profile's cpus_per_task: 1 has something to cap. Inside the job they still run with 1 thread, as in the
# local run. The GPU-class rules declare 2 threads and get --cpus-per-task=2 (no cpus_per_task in the
# profile), as they get 2 of `--cores 2` locally. So every job has the same thread count in both runs.
DECLARED_THROTTLED = 2
DECLARED_GPU_CLASS = 2
# fields of results/**/*.json that legitimately differ between two runs
# wall-clock seconds, wherever a results file records them (the selector's training loop, each inference job's
# `cost.wall_s`, the aggregate's cost summary): they differ between any two runs and say nothing about the results
VOLATILE_KEYS = frozenset({"wall_time_s", "wall_s"})


def _drop_volatile(node):
    if isinstance(node, dict):
        return {k: _drop_volatile(v) for k, v in node.items() if k not in VOLATILE_KEYS}
    if isinstance(node, list):
        return [_drop_volatile(v) for v in node]
    return node


def _run_real(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real Snakefile on the .test/slurm.yaml slice, started from the repository root as a user would
    (so profiles/default also applies, as the workflow profile), with the Snakefile's own config files (read from
    the working directory: config/ is linked there) and the slice over them. No wall-clock limit: on a loaded
    machine the cluster's jobs take longer, they do not fail (a job that never ends stalls the run up to CI's own
    limit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "config").exists():
        (workdir / "config").symlink_to(REPO / "config")
    cmd = [*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(workdir), f"--configfile={SLICE}", *SLICE_TARGETS,
           *args]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **(env or {})), capture_output=True, text=True)
    (workdir / "snakemake.out").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def _job_headers(workdir: Path) -> dict[tuple, dict]:
    """The first line of every rule log: the JSON header that leverplus.core.runner writes (rule, wildcards,
    and the dict leverplus.core.runtime.configure_job returned inside the job). Keyed by (rule, wildcards).
    SLURM's own job logs (logs/slurm/) are not rule logs."""
    out = {}
    for log in sorted((workdir / "logs").rglob("*.log")):
        if log.relative_to(workdir / "logs").parts[0] == "slurm":
            continue
        head = json.loads(log.read_text().splitlines()[0])
        key = (head["rule"], tuple(sorted(head["wildcards"].items())))
        assert key not in out, (key, log)
        out[key] = dict(head["job"], log=str(log.relative_to(workdir)))
    return out


def _results(workdir: Path) -> tuple[dict, dict, dict]:
    """(JSON documents, tables, selector weights) of a run: every results/**/*.json (parsed, minus VOLATILE_KEYS),
    every results/**/*.parquet and the gathered beam table (as DataFrames), the selector's safetensors (bytes)."""
    import pandas as pd

    docs, tables, weights = {}, {}, {}
    for p in sorted((workdir / "results").rglob("*.json")):
        docs[str(p.relative_to(workdir))] = _drop_volatile(json.loads(p.read_text()))
    for p in sorted([*(workdir / "results").rglob("*.parquet"), *(workdir / "data").rglob("beam.parquet"),
                    *(workdir / "data").rglob("rewards.parquet")]):
        tables[str(p.relative_to(workdir))] = pd.read_parquet(p)
    for p in sorted((workdir / "results").rglob("*.safetensors")):
        weights[str(p.relative_to(workdir))] = p.read_bytes()
    return docs, tables, weights


def _t(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_dag_on_real_slurm(slurm_cluster, tmp_path):
    env = slurm_cluster["env"]
    timings = slurm_cluster["timings"]
    test_prof = _profile("slurm-test")
    sr = test_prof["set-resources"]
    _, throttled = _classes(test_prof)

    listed = subprocess.run([*SNAKEMAKE, "-s", str(SNAKEFILE), "--list-rules"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    rules = {line.split()[0] for line in listed if line.strip() and not line[0].isspace()}  # not the docstrings
    # the VQA track's rules (the other tracks have their own DAGs and tests); every one of them must be in the slice
    vqa = set(re.findall(r"^(?:use )?rule (?:\w+ as )?(\w+)", (REPO / "rules" / "vqa.smk").read_text(), flags=re.M))
    assert vqa <= rules, "rules/vqa.smk defines rules that snakemake --list-rules does not list"
    assert vqa - {"all", "unknown_dataset"} == set(SLICE_JOBS), "the slice must run every rule of the VQA track"

    # ---- under SLURM ---------------------------------------------------------
    wd = tmp_path / "slurm"
    t0 = time.monotonic()
    proc = _run_real(
        wd, "--profile", str(PROFILES / "slurm-test"),
        "--set-threads", *[f"{r}={DECLARED_THROTTLED}" for r in sorted(set(throttled) & set(SLICE_JOBS))],
        env=env,
    )
    timings["demo_slurm_run_s"] = time.monotonic() - t0
    n_jobs = sum(SLICE_JOBS.values())
    submitted = re.findall(r"submitted with SLURM jobid \d+", proc.stdout + proc.stderr)
    assert len(submitted) == n_jobs, (proc.stdout + proc.stderr)[-3000:]

    heads = _job_headers(wd)
    ran: dict[str, int] = {}
    for rule, _ in heads:
        ran[rule] = ran.get(rule, 0) + 1
    assert ran == SLICE_JOBS, ran
    squeue = _squeue_all(env)
    by_job = {}
    for (rule, wc), h in heads.items():
        want = sr[rule]
        where = f"{rule} {dict(wc)} ({h['log']})"
        # seen from inside the job (leverplus.core.runtime.configure_job) ...
        assert h["slurm_job_id"], f"{where} did not run as a SLURM job"
        assert h["slurm_partition"] == want["slurm_partition"], (where, h["slurm_partition"])
        # ... and from SLURM's side
        sq = squeue[h["slurm_job_id"]]
        assert sq["partition"] == want["slurm_partition"] and sq["state"] == "COMPLETED", (where, sq)
        assert sq["comment"].startswith(f"rule_{rule}"), (where, sq)
        by_job[h["slurm_job_id"]] = (rule, dict(wc), sq)
        # the thread limit, read inside the job: the profile's cpus_per_task, else the rule's threads
        if rule in throttled:
            cpus = want["cpus_per_task"]
            assert h["declared_threads"] == DECLARED_THROTTLED > cpus == 1, (where, h)
            assert h["gpu_source"] == "cpu-only", (where, h)
        else:
            assert "cpus_per_task" not in want
            cpus = DECLARED_GPU_CLASS
            assert h["declared_threads"] == cpus, (where, h)
            assert h["gpu_source"] == "slurm", (where, h)  # SLURM's allocation is left alone
        assert h["slurm_cpus_per_task"] == str(cpus), (where, h)
        assert h["threads"] == h["torch_threads"] == cpus, (where, h)
        assert h["env"]["OMP_NUM_THREADS"] == str(cpus) and set(h["env"].values()) == {str(cpus)}, (where, h)
    assert len(by_job) == n_jobs

    # Several gpu=1 jobs were in flight at once: Snakemake submitted the second beam_search shard before the
    # first one had finished, so profiles/default's `gpu: 1` (scope local) does not serialise cluster jobs.
    # (SLURM then runs them one after the other: each asks for 2 CPUs and the test node has 2.)
    shards = sorted((sq for rule, _, sq in by_job.values() if rule == "beam_search"), key=lambda sq: sq["start"])
    assert _t(shards[1]["submit"]) < _t(shards[0]["end"]), shards
    # ... and the node ran two jobs at the same time: the two 1-CPU download jobs that start the DAG
    dl = [sq for rule, _, sq in by_job.values() if rule in ("download_dataset", "download_model")]
    assert _t(dl[0]["start"]) < _t(dl[1]["end"]) and _t(dl[1]["start"]) < _t(dl[0]["end"]), dl

    # ---- locally: same slice, same thread counts -----------------------------
    local = tmp_path / "local"
    t0 = time.monotonic()
    _run_real(local, "--cores", "2", env={"LEVERPLUS_GPU_LOCK_DIR": str(tmp_path / "locks")})
    timings["demo_local_run_s"] = time.monotonic() - t0
    local_heads = _job_headers(local)
    assert set(local_heads) == set(heads)
    for key, h in local_heads.items():
        assert h["slurm_job_id"] is None, key
        assert h["threads"] == h["torch_threads"] == heads[key]["threads"], (key, h, heads[key])

    # ---- the results are the same -------------------------------------------
    s_docs, s_tables, s_weights = _results(wd)
    l_docs, l_tables, l_weights = _results(local)
    assert SLICE_TARGET in s_docs and sum("/shot" in k for k in s_docs) == 4, sorted(s_docs)
    assert s_docs.keys() == l_docs.keys()
    for name in s_docs:
        assert s_docs[name] == l_docs[name], name
    assert s_tables.keys() == l_tables.keys() and len(s_tables) == 7, sorted(s_tables)
    for name in s_tables:
        assert s_tables[name].equals(l_tables[name]), name
    assert len(s_weights) == 2 and s_weights == l_weights
