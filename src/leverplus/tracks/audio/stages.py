"""Stages of the audio track (rules/audio.smk): data and models into data/audio/, one generation per arm, the
cascade sweep, per-arm item scores, and the comparison (leverplus.tracks.audio.report).

Arms: ``edge`` (edge model, CPU-throttled), ``cloud`` (cloud model, GPU rule), ``api`` (the cloud model behind an
OpenAI-compatible endpoint, streamed), ``unaligned`` (cloud model, the document's decoding block), cascade points
(edge drafts, the cloud scores each draft and regenerates below a threshold; built from the edge and cloud arms'
own outputs and timings, so the sweep costs only the draft scoring).

Every arm writes ``predictions.parquet`` (one row per clip: ``id``, ``prediction``, ``output_tokens``,
``prompt_tokens``, ``finish_reason``, ``timed``) for the quality metrics and ``timing.parquet`` (one row per TIMED
clip, a batch-1 request: ``id``, ``prediction``, ``start_time``, ``first_token_time``, ``end_time``,
``output_tokens``, ``ttft_s``, ``total_s``, ``feature_s`` (feature extraction + tokenisation, not part of TTFT),
``prompt_tokens``, ``finish_reason``) for the latency metrics; ``leverplus score caption`` reads the first and
``leverplus score latency`` the second as they are. Which clips are timed: ``audio.latency`` (`timed_subset`: the
same seeded subset in every arm, or every clip). The local arms caption the other clips untimed in batches
(`OmniCaptioner.caption_batch`); the api arm sends every clip as one streamed request.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.core.io import write_json, write_parquet

TIMING_COLUMNS = ["id", "prediction", "start_time", "first_token_time", "end_time", "output_tokens", "ttft_s",
                  "total_s", "feature_s", "prompt_tokens", "finish_reason"]
PRED_COLUMNS = ["id", "prediction", "output_tokens", "prompt_tokens", "finish_reason", "timed"]
PROMPT_KEYS = ("prompt", "system_prompt")


def _tqdm(it, **kw):
    import sys

    from tqdm import tqdm

    return tqdm(it, file=sys.stderr, mininterval=5.0, **kw)


def check_config(block: dict) -> None:
    """The audio track's reference checks (run by leverplus.core.config.load_track on the loaded `audio` block): each
    dataset's edge/cloud model and metric models are entries of `models` / `metric_models`."""
    from leverplus.core.config import ConfigError

    for name, ds in block["datasets"].items():
        for role in ("edge_model", "cloud_model"):
            if ds[role] not in block["models"]:
                raise ConfigError(f"invalid config: audio.datasets.{name}.{role}: {ds[role]!r} is not a key of "
                                  f"audio.models {sorted(block['models'])}")
        for role, m in ds["metrics"].items():
            if m not in block["metric_models"]:
                raise ConfigError(f"invalid config: audio.datasets.{name}.metrics.{role}: {m!r} is not a key of "
                                  f"audio.metric_models {sorted(block['metric_models'])}")


def read_manifest(path) -> pd.DataFrame:
    from leverplus.tracks.audio.sets import load_manifest

    return load_manifest(path)


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------
def download_data(*, input, output, params, wildcards, threads):
    from leverplus.tracks.audio.sets import prepare_audio_set

    spec = params["spec"]
    out = Path(output.manifest)
    info = prepare_audio_set(spec, out, raw_root=Path("data/raw/audio") / wildcards["audio_set"])
    corpus = out.parent / "demo" / "train.jsonl"
    refs = []
    if corpus.is_file():
        with open(corpus, encoding="utf-8") as fh:
            refs = [r for line in fh if line.strip() for r in json.loads(line)["references"]]
    from leverplus.core.io import atomic_write

    with atomic_write(output.corpus) as fh:  # train captions (demo: the metric char-BERT's vocabulary source)
        for r in refs:
            fh.write(json.dumps({"text": r}, ensure_ascii=False) + "\n")
    print(json.dumps(info))


def download_model(*, input, output, params, wildcards, threads):
    spec, dest = params["spec"], Path(output[0])
    if spec["source"] == "demo":
        from leverplus.tracks.audio.assets import shipped_model_dir

        src = Path(shipped_model_dir(spec["shipped"]))
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    else:
        from leverplus.core.hf_snapshot import materialize_model

        materialize_model({k: v for k, v in spec.items() if k in ("source", "repo_id", "revision", "path", "link",
                                                                   "allow_patterns")}, dest)


def download_metric_model(*, input, output, params, wildcards, threads):
    from leverplus.tracks.audio.metric_models import materialize_metric_model

    spec = params["spec"]
    corpus = []
    if input.get("corpus"):
        with open(input.corpus, encoding="utf-8") as fh:
            corpus = [json.loads(line)["text"] for line in fh if line.strip()]
    materialize_metric_model(spec, output[0], corpus=corpus)


# ----------------------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------------------
def _split_block(block: dict) -> tuple[dict, dict]:
    """(prompt fields, decoding fields) of a generation block."""
    return {k: block.get(k) for k in PROMPT_KEYS}, {k: v for k, v in block.items() if k not in PROMPT_KEYS}


def _host() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": cpu, "hostname": platform.node()}


def _latency(df: pd.DataFrame, n_resamples: int, seed: int) -> dict:
    from leverplus.metrics.latency import summarize_latency

    out = summarize_latency(df, n_resamples=n_resamples, seed=seed)
    out["feature_s"] = {"mean": float(df["feature_s"].mean()), "median": float(df["feature_s"].median()),
                        "note": "feature extraction + tokenisation, before the model's request_start; not in TTFT"}
    return out


class timing_slot:
    """Exclusive ``flock`` held while an arm runs its TIMED requests, so the timed passes of the arms that share a
    machine never overlap (their untimed work -- model loading, batched captions -- still does): latencies of
    different arms are then measured at the same load. A node-local file (``LEVERPLUS_AUDIO_TIMING_LOCK``, default
    ``$TMPDIR/leverplus-audio-timing.lock``): jobs on different cluster nodes do not wait for each other. Records
    the wait and the 1-minute load average at the start (other processes on the machine still count)."""

    def __init__(self):
        import os
        import tempfile

        self.path = os.environ.get("LEVERPLUS_AUDIO_TIMING_LOCK") or str(
            Path(tempfile.gettempdir()) / "leverplus-audio-timing.lock")
        self.info: dict = {"lock": self.path}

    def __enter__(self):
        import fcntl
        import os

        t0 = time.perf_counter()
        self._fh = open(self.path, "a")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self.info["wait_s"] = time.perf_counter() - t0
        self.info["loadavg_1min_at_start"] = os.getloadavg()[0]
        self._t1 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import fcntl

        self.info["held_s"] = time.perf_counter() - self._t1
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        return False


def timed_subset(ids, n_timed: int | None, seed: int) -> list[str]:
    """The clips timed at batch 1: every clip when ``n_timed`` is null or >= their number, else a seeded random
    subset of ``n_timed``, in manifest order (the same ids in every arm of a dataset)."""
    ids = [str(i) for i in ids]
    if n_timed is None or int(n_timed) >= len(ids):
        return ids
    pick = np.sort(np.random.default_rng(int(seed)).choice(len(ids), size=int(n_timed), replace=False))
    return [ids[i] for i in pick]


def _save_arm(output, quality: list[dict], timing: list[dict], run: dict, scoring: dict) -> None:
    df = pd.DataFrame(quality, columns=PRED_COLUMNS)
    tf = pd.DataFrame(timing, columns=TIMING_COLUMNS)
    if df["prediction"].isna().any() or tf["prediction"].isna().any():
        raise RuntimeError("a request returned no text")
    run["latency"] = _latency(tf, scoring["n_resamples"], scoring["seed"])
    run["n"], run["n_timed"] = len(df), len(tf)
    write_parquet(output.predictions, df)
    write_parquet(output.timing, tf)
    write_json(output.run, run)


def _timing_row(rid, res) -> dict:
    """One timed local request in the latency definition every arm shares (`leverplus.metrics.latency`): N =
    decoding steps with the end-of-turn token (as vLLM's usage counts it), TTFT = the first step, T = the end."""
    first = res.first_output_time
    first = res.end_time if first is None else first
    return {"id": rid, "prediction": res.text, "start_time": res.request_start, "first_token_time": first,
            "end_time": res.end_time, "output_tokens": int(res.output_tokens), "ttft_s": first - res.request_start,
            "total_s": res.end_time - res.request_start, "feature_s": float(res.feature_s),
            "prompt_tokens": int(res.prompt_tokens), "finish_reason": res.finish_reason}


def _timed_agreement(timing: list[dict], quality: dict[str, dict], do_sample: bool) -> dict:
    same = [t["prediction"] == quality[t["id"]]["prediction"] for t in timing]
    return {"n": len(same), "identical_captions": int(sum(same)),
            "rate": float(np.mean(same)) if same else None,
            "note": ("sampling: the timed requests draw their own samples (batch 1), the quality pass its own "
                     "(seeded per batch); their captions are not expected to agree") if do_sample else
                    "greedy: batched (left-padded) and batch-1 captions should agree up to float noise"}


def job_threads(threads) -> int:
    """The rule's threads, capped by the SLURM allocation and the CPU affinity mask (as runtime.configure_job)."""
    import os

    n = int(threads)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        n = min(n, int(os.environ["SLURM_CPUS_PER_TASK"]))
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    return max(1, n)


def arm_device(params) -> tuple[str, str]:
    """(resolved device, dtype) of a local arm's job: ``params["device"]`` (the edge: ``audio.edge.device``, default
    cpu; the cloud jobs: ``audio.cloud.device``, default auto) and ``params["dtype"]`` (the edge:
    ``audio.edge.dtype``, default float32), else the model entry's dtype."""
    from leverplus.tracks.audio.omni import resolve_device

    device = resolve_device(params.get("device", "cpu"))
    dtype = params.get("dtype") or params["model"].get("dtype", "float32")
    return device, dtype


def generate_local(*, input, output, params, wildcards, threads):
    """edge / cloud / unaligned: the Omni thinker in this process. After a warm-up, the timed clips one request at
    a time (every token timestamped); then, unless every clip was timed, all clips untimed in batches."""
    import torch

    from leverplus.tracks.audio.audio_io import load_audio
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.omni import OmniCaptioner, device_record, set_threads

    arm, block = params["arm"], params["generation"]
    prompts, decoding = _split_block(block)
    settings = AudioGenerationSettings.from_config(decoding)
    # the edge rule declares its threads; inside a SLURM job the allocation caps them (runtime.configure_job)
    thread_info = set_threads(job_threads(threads))
    thread_info.update(threads_declared=int(threads), torch_num_threads=torch.get_num_threads())
    items = read_manifest(input.manifest)
    lat, batch_size = params["latency"], int(params["batch_size"])
    timed = timed_subset(items["id"], lat["n_timed"], lat["seed"])
    audio_of = dict(zip(items["id"].astype(str), items["audio"]))
    device, dtype = arm_device(params)
    cap = OmniCaptioner.load(input.model, dtype=dtype, device=device)
    timing = []
    with timing_slot() as slot:
        for _ in range(params["warmup"]):
            cap.warm_up()
        for rid in _tqdm(timed, desc=f"{arm} timed requests"):
            res = cap.caption(load_audio(audio_of[rid]), system_prompt=prompts["system_prompt"],
                              prompt=prompts["prompt"], settings=settings)
            timing.append(_timing_row(rid, res))
    t0 = time.perf_counter()
    if len(timed) == len(items):
        quality = {t["id"]: {k: t[k] for k in ("id", "prediction", "output_tokens", "prompt_tokens", "finish_reason")}
                   for t in timing}
        quality_pass = {"mode": "the timed requests (every clip timed)", "batch_size": 1}
    else:
        ids = list(audio_of)
        quality = {}
        for i in _tqdm(range(0, len(ids), batch_size), desc=f"{arm} batched captions"):
            chunk = ids[i:i + batch_size]
            outs = cap.caption_batch([load_audio(audio_of[r]) for r in chunk], system_prompt=prompts["system_prompt"],
                                     prompt=prompts["prompt"], settings=settings, batch_size=batch_size)
            for rid, o in zip(chunk, outs):
                quality[rid] = {"id": rid, "prediction": o["text"], "output_tokens": o["output_tokens"],
                                "prompt_tokens": o["prompt_tokens"], "finish_reason": o["finish_reason"]}
        quality_pass = {"mode": "untimed, batched (left-padded)", "batch_size": batch_size}
    quality_pass["seconds"] = time.perf_counter() - t0
    timed_set = set(timed)
    rows = [{**quality[rid], "timed": rid in timed_set} for rid in items["id"].astype(str)]
    run = {"arm": arm, "model": params["model"], "model_name": params["model_name"],
           "generation": {**prompts, **settings.to_dict()}, "generation_signature": settings.signature(),
           "threads": {**thread_info, **_host()}, "device": device_record(params.get("device"), device, dtype),
           "processor": cap.processor_info(),
           "warmup_requests": params["warmup"],
           "latency_subset": {**lat, "n": len(timed)}, "timing_slot": slot.info, "quality_pass": quality_pass,
           "timed_vs_quality": _timed_agreement(timing, quality, settings.do_sample),
           "timing": "per-token streamer timestamps (model TTFT after feature extraction), batch 1; "
                     "output_tokens counts the end-of-turn token when generated (as vLLM's usage does)"}
    _save_arm(output, rows, timing, run, params["scoring"])


def api_settings(decoding: dict) -> dict:
    """The aligned decoding block as OpenAI/vLLM request fields, every one explicit (AudioGenerationSettings)."""
    from leverplus.tracks.audio.generation import AudioGenerationSettings

    return AudioGenerationSettings.from_config(decoding).to_openai()


def chat_messages(wav: np.ndarray, prompts: dict) -> list[dict]:
    from leverplus.api import audio_content_part

    msgs = []
    if prompts.get("system_prompt") is not None:  # "" is an empty system turn, as the local arms render it
        msgs.append({"role": "system", "content": prompts["system_prompt"]})
    msgs.append({"role": "user", "content": [audio_content_part(wav), {"type": "text", "text": prompts["prompt"]}]})
    return msgs


def endpoint_probe(client, items: pd.DataFrame, prompts: dict, req: dict, cloud_predictions, n: int, *,
                   do_sample: bool) -> dict:
    """Before the run: the endpoint's greedy captions of the first ``n`` clips against the local cloud arm's
    (``cloud/predictions.parquet``: the same model, prompt and decoding run in this workflow). Equal captions say
    the endpoint serves the same checkpoint with the same template and honours the decoding; the result is
    recorded in run.json (``startup_probe``) and, with ``api.probe_require_match``, a mismatch stops the job."""
    from leverplus.tracks.audio.audio_io import load_audio

    if n <= 0 or cloud_predictions is None:
        return {"n": 0, "identical": None, "note": "no probe (api.probe_clips 0)"}
    if do_sample:
        return {"n": 0, "identical": None, "note": "no probe: sampling decoding"}
    local = pd.read_parquet(cloud_predictions)
    local = dict(zip(local["id"].astype(str), local["prediction"]))
    rows, mismatches = [], []
    for r in items.head(n).itertuples(index=False):
        got = client.chat_stream(chat_messages(load_audio(r.audio), prompts), settings=req).text.strip()
        same = got == local[str(r.id)]
        rows.append({"id": str(r.id), "identical": same})
        if not same:
            mismatches.append({"id": str(r.id), "endpoint": got, "local": local[str(r.id)]})
    return {"n": len(rows), "identical": int(sum(x["identical"] for x in rows)), "clips": rows,
            "mismatches": mismatches,
            "against": "the cloud arm's greedy captions (batched local generate) of the same clips"}


def generate_api(*, input, output, params, wildcards, threads):
    """The cloud via an OpenAI-compatible API, streamed: TTFT from the first non-empty delta, tokens from usage.
    With ``api.base_url: null`` (the demo) this job serves the cloud model itself on 127.0.0.1."""
    from leverplus.api import APIConfig, OpenAICompatClient
    from leverplus.tracks.audio.audio_io import load_audio

    api = dict(params["api"])
    probe_n = int(api.pop("probe_clips", 0) or 0)
    probe_strict = bool(api.pop("probe_require_match", False))
    prompts, decoding = _split_block(params["generation"])
    req = api_settings(decoding)
    server = None
    if api.get("base_url") is None:
        from leverplus.serving import OpenAICompatServer
        from leverplus.serving.omni_backend import OmniChatBackend

        device, dtype = arm_device({"device": params.get("device", "cpu"), "model": params.get("model") or {}})
        backend = OmniChatBackend(input.model, model_name=api["model"], device=device, dtype=dtype)
        server = OpenAICompatServer(chat=backend)
        server.start()
        api["base_url"] = server.url
        served = "local OpenAICompatServer + OmniChatBackend on 127.0.0.1 (the cloud model)"
        from leverplus.tracks.audio.omni import device_record

        served_device = device_record(params.get("device"), device, dtype)
    else:
        served, served_device = "remote endpoint", None
    try:
        cfg = APIConfig.from_dict({k: v for k, v in api.items() if v is not None or k == "api_key_env"})
        items = read_manifest(input.manifest)
        lat = params["latency"]
        timed_set = set(timed_subset(items["id"], lat["n_timed"], lat["seed"]))
        with OpenAICompatClient(cfg) as client, timing_slot() as slot:
            if params["warmup"] and len(items):
                for _ in range(params["warmup"]):
                    client.chat_stream(chat_messages(load_audio(items.audio.iloc[0]), prompts), settings=req)
            probe = endpoint_probe(client, items, prompts, req, getattr(input, "cloud", None) or None, probe_n,
                                   do_sample=req["temperature"] > 0)
            if probe_strict and probe.get("identical") is not None and probe["identical"] < probe["n"]:
                raise RuntimeError(f"{cfg.base_url}: the endpoint's greedy captions differ from the local cloud "
                                   f"model's on {probe['n'] - probe['identical']} of {probe['n']} probe clips "
                                   f"({probe['mismatches'][:2]}): another checkpoint, template or decoding?")
            timing = []
            for r in _tqdm(items.itertuples(index=False), total=len(items), desc="api captions"):
                t0 = time.perf_counter()
                msgs = chat_messages(load_audio(r.audio), prompts)
                feat = time.perf_counter() - t0
                res = client.chat_stream(msgs, settings=req)
                if res.first_token_time is None or res.completion_tokens is None:
                    raise RuntimeError(f"{cfg.base_url}: clip {r.id!r}: stream without content or usage "
                                       f"(finish_reason {res.finish_reason!r})")
                timing.append({"id": str(r.id), "prediction": res.text, "start_time": res.request_start,
                               "first_token_time": res.first_token_time, "end_time": res.end_time,
                               "output_tokens": int(res.completion_tokens), "ttft_s": res.ttft_s,
                               "total_s": res.total_s, "feature_s": feat,
                               "prompt_tokens": res.prompt_tokens, "finish_reason": res.finish_reason})
            stats = client.stats()
    finally:
        if server is not None:
            server.stop()
    recorded = cfg.as_dict()
    if server is not None:
        recorded["base_url"] = "local (started by the rule)"
    quality = [{**{k: t[k] for k in ("id", "prediction", "output_tokens", "prompt_tokens", "finish_reason")},
                "timed": t["id"] in timed_set} for t in timing]
    if server is not None:  # the local server reads the request as vLLM does: fields vLLM drops are counted
        recorded["server_ignored_fields"] = dict(backend.ignored_fields)
    run = {"arm": "api", "api": recorded, "served_by": served, "device": served_device, "startup_probe": probe,
           "model_name": params["model_name"],
           "request_settings": req, "generation": {**prompts, **decoding}, "client_stats": stats,
           "warmup_requests": params["warmup"], "latency_subset": {**lat, "n": len(timed_set)},
           "timing_slot": slot.info,
           "quality_pass": {"mode": "every clip one streamed request, one at a time (its timing rows for the timed "
                                    "clips are timing.parquet)"},
           "timing": "client side: request start -> first non-empty delta (TTFT) -> end of stream; "
                     "feature_s = WAV encoding + base64; output_tokens = usage.completion_tokens (counts the "
                     "end-of-turn token when one was generated, as vLLM does)",
           "threads": _host()}
    _save_arm(output, quality, [t for t in timing if t["id"] in timed_set], run, params["scoring"])


# ----------------------------------------------------------------------------------------------------------------
# cascade
# ----------------------------------------------------------------------------------------------------------------
def cascade_point(edge: pd.DataFrame, cloud: pd.DataFrame, scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Edge draft kept when its cloud mean log-prob (``scores.mean_logprob``) >= threshold, else the cloud's answer,
    for the clips of ``edge``. On timing frames (edge/cloud with ``ttft_s``/``total_s``/``feature_s``, scores with
    ``score_s``) also the latency per clip: total = edge total + draft scoring (+ cloud total when escalated).
    TTFT is measured when the user can get a first token of the answer they will keep, i.e. once keep/escalate is
    known (after the edge finished and its draft was scored): kept → edge total + scoring (the whole draft is
    released at once, so TTFT = T and the decode rate is undefined); escalated → edge total + scoring + cloud TTFT.
    The quality frames (predictions) and the timing frames go through the same selection."""
    e = edge.set_index("id")
    c = cloud.set_index("id").loc[e.index]
    s = scores.set_index("id").loc[e.index]
    esc = (s["mean_logprob"] < threshold).to_numpy()

    def pick(col):
        return np.where(esc, c[col].to_numpy(), e[col].to_numpy())

    out = pd.DataFrame({"id": e.index.to_numpy(), "prediction": pick("prediction"),
                        "output_tokens": pick("output_tokens").astype(int)})
    for col in ("prompt_tokens", "finish_reason"):
        if col in e.columns and col in c.columns:
            out[col] = pick(col)
    timing = all(k in e.columns and k in c.columns for k in ("ttft_s", "total_s", "feature_s")) and \
        "score_s" in s.columns
    if timing:
        base = e["total_s"].to_numpy() + s["score_s"].to_numpy()
        ttft = np.where(esc, base + c["ttft_s"].to_numpy(), base)
        total = np.where(esc, base + c["total_s"].to_numpy(), base)
        out = out.assign(start_time=0.0, first_token_time=ttft, end_time=total, ttft_s=ttft, total_s=total,
                         feature_s=e["feature_s"].to_numpy() + np.where(esc, c["feature_s"].to_numpy(), 0.0))
    elif "timed" in e.columns:
        out["timed"] = e["timed"].to_numpy()
    out["escalated"] = esc
    out["draft_mean_logprob"] = s["mean_logprob"].to_numpy()
    return out


def cascade_thresholds(logprobs: np.ndarray, quantiles, extra) -> list[dict]:
    pts = [{"label": f"cascade_q{round(100 * q):02d}", "quantile": float(q),
            "threshold": float(np.quantile(logprobs, q))} for q in quantiles]
    pts += [{"label": f"cascade_t{t:g}".replace("-", "m").replace(".", "p"), "quantile": None, "threshold": float(t)}
            for t in extra]
    return pts


def cascade(*, input, output, params, wildcards, threads):
    """Score every edge draft under the cloud model, then sweep thresholds. The timed clips are scored one prefill
    at a time (``score_s``, their latency); unless every clip is timed, all drafts are also scored untimed in
    batches, and the batched log-prob makes the keep/escalate decision for every clip (quality and latency
    therefore see the same decisions). Each point: ``{label}.parquet`` (every clip) + ``{label}.timing.parquet``."""
    from leverplus.tracks.audio.audio_io import load_audio
    from leverplus.tracks.audio.omni import OmniCaptioner, device_record, set_threads

    thread_info = set_threads(job_threads(threads))
    prompts, _ = _split_block(params["generation"])
    edge, cloud = pd.read_parquet(input.edge), pd.read_parquet(input.cloud)
    edge_t, cloud_t = pd.read_parquet(input.edge_timing), pd.read_parquet(input.cloud_timing)
    for df in (edge, cloud, edge_t, cloud_t):
        df["id"] = df["id"].astype(str)
    if list(edge_t["id"]) != list(cloud_t["id"]):
        raise ValueError("edge and cloud were timed on different clips (audio.latency changed between the jobs?)")
    items = read_manifest(input.manifest)
    audio_of = dict(zip(items["id"].astype(str), items["audio"]))
    draft_of = dict(zip(edge["id"], edge["prediction"]))
    device, dtype = arm_device(params)
    cap = OmniCaptioner.load(input.model, dtype=dtype, device=device)
    timed = {}
    with timing_slot() as slot:
        for _ in range(params["warmup"]):
            cap.warm_up()
        for rid in _tqdm(list(edge_t["id"]), desc="draft scoring (timed)"):
            timed[rid] = cap.draft_logprob(load_audio(audio_of[rid]), system_prompt=prompts["system_prompt"],
                                           prompt=prompts["prompt"], draft=draft_of[rid])
    if len(timed) == len(edge):
        batched = {rid: timed[rid] for rid in edge["id"]}
        mode = "the timed prefills (every clip timed)"
    else:
        batched, ids, bs = {}, list(edge["id"]), int(params["batch_size"])
        for i in _tqdm(range(0, len(ids), bs), desc="draft scoring (batched)"):
            chunk = ids[i:i + bs]
            outs = cap.draft_logprob_batch([load_audio(audio_of[r]) for r in chunk], [draft_of[r] for r in chunk],
                                           system_prompt=prompts["system_prompt"], prompt=prompts["prompt"],
                                           batch_size=bs)
            batched.update(zip(chunk, outs))
        mode = f"untimed, batched ({bs} per prefill)"
    scores = pd.DataFrame({
        "id": list(edge["id"]),
        "mean_logprob": [float(batched[r]["mean_logprob"]) for r in edge["id"]],
        "n_tokens": [int(batched[r]["n_tokens"]) for r in edge["id"]],
        "score_s": [float(timed[r]["seconds"]) if r in timed else np.nan for r in edge["id"]],
        "mean_logprob_timed": [float(timed[r]["mean_logprob"]) if r in timed else np.nan for r in edge["id"]],
    })
    gap = float(np.nanmax(np.abs(scores["mean_logprob"] - scores["mean_logprob_timed"]))) if timed else 0.0
    points = cascade_thresholds(scores["mean_logprob"].to_numpy(), params["cascade"]["quantiles"],
                                params["cascade"]["thresholds"])
    out_dir = Path(output.points)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    timed_scores = scores[scores["id"].isin(timed)]
    for p in points:
        df = cascade_point(edge, cloud, scores, p["threshold"])
        tf = cascade_point(edge_t, cloud_t, timed_scores, p["threshold"])
        p["escalation_rate"] = float(df["escalated"].mean())
        p["escalation_rate_timed"] = float(tf["escalated"].mean())
        p["predictions"] = f"{p['label']}.parquet"
        p["timing"] = f"{p['label']}.timing.parquet"
        write_parquet(tmp / p["predictions"], df)
        write_parquet(tmp / p["timing"], tf)
    write_json(tmp / "points.json", {
        "points": points, "threads": {**thread_info, **_host()},
        "device": device_record(params.get("device"), device, dtype),
        "scorer": "cloud model: mean token log-prob of the edge draft, one prefill",
        "scoring_pass": mode, "max_abs_logprob_gap_timed_vs_batched": gap, "timing_slot": slot.info,
        "mean_score_s": float(np.nanmean(scores["score_s"])), "n_timed": len(timed)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    write_parquet(output.scores, scores)


# ----------------------------------------------------------------------------------------------------------------
# scoring and aggregation
# ----------------------------------------------------------------------------------------------------------------
def score_arms(*, input, output, params, wildcards, threads):
    """Per-item model-based scores (BERTScore F1 rescaled, sentence similarity) of every base arm, in one process."""
    from leverplus.tracks.audio.report import item_scores

    refs = read_manifest(input.manifest)
    for arm in params["arms"]:
        preds = pd.read_parquet(getattr(input, f"{arm}_predictions"))
        df, info = item_scores(preds, refs, bertscore_dir=input.bertscore_model,
                               similarity_dir=input.similarity_model, metric_specs=params["metric_models"],
                               scoring=params["scoring"])
        write_parquet(getattr(output, f"{arm}_items"), df)
        write_json(getattr(output, f"{arm}_info"), info)
        print(f"scored {arm}: {len(df)} items", flush=True)


def aggregate(*, input, output, params, wildcards, threads):
    from leverplus.tracks.audio.report import build_comparison

    build_comparison(input=input, output=output, params=params, dataset=wildcards["audio_set"])


# ----------------------------------------------------------------------------------------------------------------
# SECap's protocol (tracks.audio.report.secap_protocol): k sampled generations per clip, an optional target
# ----------------------------------------------------------------------------------------------------------------
def secap_protocol_run(*, input, output, params, wildcards, threads):
    """``results/audio/{set}/secap_protocol/{role}.json``: the role's model (edge or cloud) captions every clip
    ``n_generations`` times with the protocol's sampling block (seed = base seed + generation index), the
    similarity model scores them against the first reference as SECap does, and `secap_protocol` keeps the most
    consistent ``keep`` per clip. Every setting is in the file's ``settings``/``signature``."""
    from leverplus.tracks.audio.audio_io import load_audio
    from leverplus.metrics.sentence_similarity import embed
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.omni import OmniCaptioner, device_record, set_threads
    from leverplus.tracks.audio.report import secap_protocol

    cfg, sim_spec = params["protocol"], params["similarity"]
    thread_info = set_threads(job_threads(threads))
    prompts, decoding = _split_block(cfg["generation"])
    base = AudioGenerationSettings.from_config(decoding)
    items = read_manifest(input.manifest)
    device, dtype = arm_device(params)
    cap = OmniCaptioner.load(input.model, dtype=dtype, device=device)
    audios = [load_audio(a) for a in items["audio"]]
    k, bs = int(cfg["n_generations"]), int(params["batch_size"])
    gens = [[] for _ in audios]
    for g in _tqdm(range(k), desc="secap protocol generations"):
        settings = AudioGenerationSettings(**{**base.to_dict(), "seed": base.seed + g})
        for i in range(0, len(audios), bs):
            outs = cap.caption_batch(audios[i:i + bs], system_prompt=prompts["system_prompt"],
                                     prompt=prompts["prompt"], settings=settings, batch_size=bs)
            for j, o in enumerate(outs):
                gens[i + j].append(o["text"])
    pooling = sim_spec.get("pooling", "mean")

    def similarity(a, b):
        ea = embed(list(a), input.similarity_model, pooling=pooling)
        eb = embed(list(b), input.similarity_model, pooling=pooling)
        return np.sum(ea * eb, axis=1)

    out = secap_protocol(gens, [r[0] for r in items["references"]], similarity, keep=int(cfg["keep"]),
                         thresholds=tuple(cfg["thresholds"]), model_label=sim_spec.get("label", ""))
    out.update(role=wildcards["role"], model_name=params["model_name"],
               generation={**prompts, **base.to_dict(), "seed": f"{base.seed} + generation index"},
               device=device_record(params.get("device"), device, dtype), threads={**thread_info, **_host()},
               reference="the first reference of each clip (SECap has one)",
               generations=[{"id": str(i), "captions": g} for i, g in zip(items["id"], gens)])
    out["signature"] += f"|{base.signature().split()[0]}"  # "gen:<12 hex>", the sampling block's digest
    write_json(output[0], out)
