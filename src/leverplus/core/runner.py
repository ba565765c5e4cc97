"""Glue between a Snakemake script and one library function: log redirection, thread/GPU setup, JSON params."""
from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout


def _param(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def run_stage(smk, func, *, gpu: bool = False) -> None:
    """Call `func(input=…, output=…, params=…, wildcards=…, threads=…)` with stdout/stderr in the rule's log."""
    from leverplus.core.runtime import configure_job

    with open(smk.log[0], "w", encoding="utf-8", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        job = configure_job(smk.threads, gpu=gpu)
        params = {k: _param(v) for k, v in smk.params.items() if k != "code"}
        print(json.dumps({"rule": smk.rule, "wildcards": dict(smk.wildcards), "job": job}, sort_keys=True, default=str))
        t0 = time.time()
        try:
            func(input=smk.input, output=smk.output, params=params, wildcards=dict(smk.wildcards), threads=smk.threads)
        except BaseException:
            traceback.print_exc()  # into the rule's log, which Snakemake prints when the job fails
            raise
        print(f"done in {time.time() - t0:.1f}s", file=sys.stderr)
