"""One job of the toy DAG: configure the runtime, do a little work, record where it ran."""

import json
import os
import socket
import time
from pathlib import Path

from leverplus.core.runtime import configure_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
started = time.time()
info = configure_job(threads=smk.threads, gpu=bool(smk.params.gpu))

import torch  # noqa: E402  (after configure_job on purpose)

log = open(smk.log[0], "w")  # noqa: SIM115 (open for the job's life)
print(f"runtime: {json.dumps(info, sort_keys=True)}", file=log, flush=True)

# Parallel float work so that every thread pool the job is allowed to use spins up;
# its value is irrelevant (float reductions depend on the thread count).
x = torch.randn(512, 512)
for _ in range(4):
    x = torch.tanh(x @ x / 512)

rule = smk.rule
if rule == "candidates":
    g = torch.Generator().manual_seed(1234)
    cands = torch.randint(-50, 50, (smk.params.n, 16), generator=g, dtype=torch.int64)
    result = {"candidates": cands.tolist()}
elif rule == "beam_search":
    shard = int(smk.wildcards.shard)
    n_shards = int(smk.params.n_shards)
    if smk.params.barrier > 0:
        bdir = Path(smk.params.barrier_dir)
        bdir.mkdir(parents=True, exist_ok=True)
        (bdir / f"shard{shard}").write_text(str(os.getpid()))
        deadline = time.time() + smk.params.barrier
        while len(list(bdir.glob("shard*"))) < n_shards:
            if time.time() > deadline:
                raise RuntimeError(f"shard {shard}: the other shards never started concurrently")
            time.sleep(0.1)
    cands = torch.tensor(json.loads(Path(smk.input[0]).read_text())["candidates"])
    rows = cands[shard::n_shards]
    # integer arithmetic: bit-identical whatever the thread count or machine
    scores = (rows @ cands.T).max(dim=1).values
    result = {"shard": shard, "scores": scores.tolist()}
elif rule == "gather_beam":
    shards = [json.loads(Path(p).read_text()) for p in smk.input]
    scores = [s for sh in sorted(shards, key=lambda d: d["shard"]) for s in sh["scores"]]
    result = {"n": len(scores), "total": int(sum(scores)), "max": int(max(scores))}
else:
    raise ValueError(f"unknown rule {rule}")

Path(smk.output.result).parent.mkdir(parents=True, exist_ok=True)
Path(smk.output.result).write_text(json.dumps(result, sort_keys=True) + "\n")

meta = {
    "rule": rule,
    "wildcards": dict(smk.wildcards),
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": started,
    "finished": time.time(),
    "snakemake_threads": smk.threads,
    "runtime": info,
    # read back inside the job, after the parallel work:
    "torch_threads": torch.get_num_threads(),
    "os_threads": len(os.listdir("/proc/self/task")),
    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    "slurm_job_partition": os.environ.get("SLURM_JOB_PARTITION"),
    "slurm_cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
}
Path(smk.output.meta).parent.mkdir(parents=True, exist_ok=True)
Path(smk.output.meta).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
print(f"meta: {json.dumps(meta, sort_keys=True)}", file=log)
log.close()
