"""Latency from per-request timestamps and output token counts: ONE definition for every arm.

Per request (times in seconds on any common clock):

* ``N``                 = ``output_tokens``: decoding steps, the end-of-turn/EOS token INCLUDED when it was
  generated (what vLLM's ``usage.completion_tokens`` counts; local arms add it to their text tokens, so an API
  arm and a local arm that generate the same tokens have the same N)
* ``ttft_s``            = ``first_token_time - start_time``       (TTFT: the first decoding step)
* ``total_s``           = ``end_time - start_time``               (T: the last step, the EOS step included)
* ``decode_rate_tok_s`` = ``(N - 1) / (T - TTFT)``                ("decode OTPS": 1/TPOT of vLLM's benchmark,
  TPOT = (T - TTFT)/(N - 1); undefined when N <= 1 or T == TTFT)
* ``e2e_rate_tok_s``    = ``N / T``                               ("end-to-end OTPS": llmperf's per-request
  output throughput, TTFT included)

Because N and T both include the EOS step, neither rate is biased by (N-1)/N against an arm that counts EOS.
Each is summarised by mean, median, p90 (numpy linear percentiles), n and a bootstrap 95% CI of the mean;
requests where a quantity is undefined are left out of that quantity and counted in ``n_undefined``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leverplus.metrics import stats
from leverplus.metrics.io import MetricsInputError, require_columns
from leverplus.metrics.signature import ci_settings, make_signature

LATENCY_COLUMNS = ("start_time", "first_token_time", "end_time", "output_tokens")


def per_request(df: pd.DataFrame) -> pd.DataFrame:
    """Per-request TTFT, total time, decode rate and end-to-end rate."""
    require_columns(df, LATENCY_COLUMNS, "latency predictions")
    if len(df) == 0:
        raise MetricsInputError("latency predictions: no rows")
    try:
        t0 = df["start_time"].astype(float).to_numpy()
        t1 = df["first_token_time"].astype(float).to_numpy()
        t2 = df["end_time"].astype(float).to_numpy()
        n = df["output_tokens"].astype(float).to_numpy()
    except (TypeError, ValueError) as exc:
        raise MetricsInputError(f"latency predictions: non-numeric timing column ({exc})") from exc
    if np.isnan(np.stack([t0, t1, t2, n])).any():
        raise MetricsInputError("latency predictions: missing timing values")
    bad = (t1 < t0) | (t2 < t1) | (n < 0)
    if bad.any():
        i = int(np.argmax(bad))
        rid = df["id"].iloc[i] if "id" in df.columns else i
        raise MetricsInputError(
            f"latency predictions: request {rid!r} has inconsistent times or tokens "
            "(need start_time <= first_token_time <= end_time and output_tokens >= 0)"
        )
    ttft = t1 - t0
    total = t2 - t0
    decode_time = total - ttft
    with np.errstate(divide="ignore", invalid="ignore"):
        decode = np.where((n > 1) & (decode_time > 0), (n - 1) / decode_time, np.nan)
        e2e = np.where(total > 0, n / total, np.nan)
    out = pd.DataFrame({"ttft_s": ttft, "total_s": total, "decode_rate_tok_s": decode, "e2e_rate_tok_s": e2e})
    if "id" in df.columns:
        out.insert(0, "id", df["id"].astype(str).to_numpy())
    return out


def summarize_latency(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    rows = per_request(df)
    result: dict = {"task": "latency", "n_requests": int(len(rows)), "metrics": {}}
    for col in ("ttft_s", "total_s", "decode_rate_tok_s", "e2e_rate_tok_s"):
        v = rows[col].to_numpy(dtype=float)
        ok = v[~np.isnan(v)]
        entry = {"n": int(ok.size), "n_undefined": int(v.size - ok.size)}
        if ok.size:
            lo, hi = stats.bootstrap_ci(ok, n_resamples=n_resamples, seed=seed)
            entry.update(mean=float(ok.mean()), median=float(np.median(ok)), p90=float(np.percentile(ok, 90)),
                         ci95=[lo, hi])
        else:
            entry.update(mean=None, median=None, p90=None, ci95=None)
        result["metrics"][col] = entry
    settings = {"N": "output tokens incl. EOS when generated (vLLM completion_tokens)", "T": "start -> last step",
                "decode_rate": "(N-1)/(T-TTFT) (1/TPOT, vLLM bench)", "e2e_rate": "N/T (llmperf)", "pct": "numpy-linear",
                **ci_settings(n_resamples, seed)}
    result["settings"] = settings
    result["signature"] = make_signature("latency", settings)
    return result
