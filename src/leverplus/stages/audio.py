"""Stages of the audio track (rules/audio.smk): data and models into data/audio/, one generation per arm, the
cascade sweep, per-arm item scores, and the comparison (leverplus.report.audio_report).

Arms: ``edge`` (edge model, CPU-throttled), ``cloud`` (cloud model, GPU rule), ``api`` (the cloud model behind an
OpenAI-compatible endpoint, streamed), ``unaligned`` (cloud model, the document's decoding block), cascade points
(edge drafts, the cloud scores each draft and regenerates below a threshold; built from the edge and cloud arms'
own outputs and timings, so the sweep costs only the draft scoring).

Every prediction file holds one row per clip: ``id``, ``prediction``, ``start_time``, ``first_token_time``,
``end_time``, ``output_tokens``, ``ttft_s``, ``total_s``, ``feature_s`` (feature extraction + tokenisation, not part
of TTFT), so ``leverplus score caption`` and ``leverplus score latency`` read it as it is.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import read_json, write_json, write_parquet

PRED_COLUMNS = ["id", "prediction", "start_time", "first_token_time", "end_time", "output_tokens", "ttft_s",
                "total_s", "feature_s", "prompt_tokens", "finish_reason"]
PROMPT_KEYS = ("prompt", "system_prompt")


def _tqdm(it, **kw):
    import sys

    from tqdm import tqdm

    return tqdm(it, file=sys.stderr, mininterval=5.0, **kw)


def read_manifest(path) -> pd.DataFrame:
    from ..data.audio_sets import load_manifest

    return load_manifest(path)


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------
def download_data(*, input, output, params, wildcards, threads):
    from ..data.audio_sets import prepare_audio_set

    spec = params["spec"]
    out = Path(output.manifest)
    info = prepare_audio_set(spec, out, raw_root=Path("data/raw/audio") / wildcards["audio_set"])
    corpus = out.parent / "demo" / "train.jsonl"
    refs = []
    if corpus.is_file():
        with open(corpus, encoding="utf-8") as fh:
            refs = [r for line in fh if line.strip() for r in json.loads(line)["references"]]
    from ..io import atomic_write

    with atomic_write(output.corpus) as fh:  # train captions (demo: the metric char-BERT's vocabulary source)
        for r in refs:
            fh.write(json.dumps({"text": r}, ensure_ascii=False) + "\n")
    print(json.dumps(info))


def download_model(*, input, output, params, wildcards, threads):
    spec, dest = params["spec"], Path(output[0])
    if spec["source"] == "demo":
        from ..models.audio_assets import shipped_model_dir

        src = Path(shipped_model_dir(spec["shipped"]))
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    else:
        from ..data.hf_snapshot import materialize_model

        materialize_model({k: v for k, v in spec.items() if k in ("source", "repo_id", "revision", "path", "link",
                                                                   "allow_patterns")}, dest)


def download_metric_model(*, input, output, params, wildcards, threads):
    from ..data.audio_metric_models import materialize_metric_model

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
    from ..metrics.latency import summarize_latency

    out = summarize_latency(df, n_resamples=n_resamples, seed=seed)
    out["feature_s"] = {"mean": float(df["feature_s"].mean()), "median": float(df["feature_s"].median()),
                        "note": "feature extraction + tokenisation, before the model's request_start; not in TTFT"}
    return out


def _save_arm(output, rows: list[dict], run: dict, scoring: dict) -> None:
    df = pd.DataFrame(rows, columns=PRED_COLUMNS)
    if df["prediction"].isna().any():
        raise RuntimeError("a request returned no text")
    run["latency"] = _latency(df, scoring["n_resamples"], scoring["seed"])
    run["n"] = len(df)
    write_parquet(output.predictions, df)
    write_json(output.run, run)


def job_threads(threads) -> int:
    """The rule's threads, capped by the SLURM allocation and the CPU affinity mask (as runtime.configure_job)."""
    import os

    n = int(threads)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        n = min(n, int(os.environ["SLURM_CPUS_PER_TASK"]))
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    return max(1, n)


def generate_local(*, input, output, params, wildcards, threads):
    """edge / cloud / unaligned: the Omni thinker in this process, every token timestamped after a warm-up."""
    import torch

    from ..data.audio_io import load_audio
    from ..models.audio_generation import AudioGenerationSettings
    from ..models.omni import OmniCaptioner, set_threads

    arm, block = params["arm"], params["generation"]
    prompts, decoding = _split_block(block)
    settings = AudioGenerationSettings.from_config(decoding)
    # the edge rule declares its threads; inside a SLURM job the allocation caps them (runtime.configure_job)
    thread_info = set_threads(job_threads(threads))
    thread_info.update(threads_declared=int(threads), torch_num_threads=torch.get_num_threads())
    items = read_manifest(input.manifest)
    cap = OmniCaptioner.load(input.model, dtype=params["model"].get("dtype", "float32"))
    for _ in range(params["warmup"]):
        cap.warm_up()
    rows = []
    for r in _tqdm(items.itertuples(index=False), total=len(items), desc=f"{arm} captions"):
        wav = load_audio(r.audio)
        res = cap.caption(wav, system_prompt=prompts["system_prompt"], prompt=prompts["prompt"], settings=settings)
        first = res.end_time if res.first_token_time is None else res.first_token_time  # 0 tokens: TTFT = T
        rows.append({"id": r.id, "prediction": res.text, "start_time": res.request_start,
                     "first_token_time": first, "end_time": res.end_time,
                     "output_tokens": int(res.n_tokens), "ttft_s": first - res.request_start,
                     "total_s": res.end_time - res.request_start, "feature_s": float(res.feature_s),
                     "prompt_tokens": int(res.prompt_tokens), "finish_reason": res.finish_reason})
    run = {"arm": arm, "model": params["model"], "model_name": params["model_name"],
           "generation": {**prompts, **settings.to_dict()}, "generation_signature": settings.signature(),
           "threads": {**thread_info, **_host()}, "warmup_requests": params["warmup"],
           "timing": "per-token streamer timestamps (model TTFT after feature extraction)"}
    _save_arm(output, rows, run, params["scoring"])


def api_settings(decoding: dict) -> dict:
    """The aligned decoding block as OpenAI/vLLM request fields, every one explicit (AudioGenerationSettings)."""
    from ..models.audio_generation import AudioGenerationSettings

    return AudioGenerationSettings.from_config(decoding).to_openai()


def chat_messages(wav: np.ndarray, prompts: dict) -> list[dict]:
    from ..api import audio_content_part

    msgs = []
    if prompts.get("system_prompt"):
        msgs.append({"role": "system", "content": prompts["system_prompt"]})
    msgs.append({"role": "user", "content": [audio_content_part(wav), {"type": "text", "text": prompts["prompt"]}]})
    return msgs


def generate_api(*, input, output, params, wildcards, threads):
    """The cloud via an OpenAI-compatible API, streamed: TTFT from the first non-empty delta, tokens from usage.
    With ``api.base_url: null`` (the demo) this job serves the cloud model itself on 127.0.0.1."""
    from ..api import APIConfig, OpenAICompatClient
    from ..data.audio_io import load_audio

    api = dict(params["api"])
    prompts, decoding = _split_block(params["generation"])
    req = api_settings(decoding)
    server = None
    if api.get("base_url") is None:
        from ..serving import OpenAICompatServer
        from ..serving.omni_backend import OmniChatBackend

        server = OpenAICompatServer(chat=OmniChatBackend(input.model, model_name=api["model"]))
        server.start()
        api["base_url"] = server.url
        served = "local OpenAICompatServer + OmniChatBackend on 127.0.0.1 (the cloud model)"
    else:
        served = "remote endpoint"
    try:
        cfg = APIConfig.from_dict({k: v for k, v in api.items() if v is not None or k == "api_key_env"})
        items = read_manifest(input.manifest)
        with OpenAICompatClient(cfg) as client:
            if params["warmup"] and len(items):
                for _ in range(params["warmup"]):
                    client.chat_stream(chat_messages(load_audio(items.audio.iloc[0]), prompts), settings=req)
            rows = []
            for r in _tqdm(items.itertuples(index=False), total=len(items), desc="api captions"):
                t0 = time.perf_counter()
                msgs = chat_messages(load_audio(r.audio), prompts)
                feat = time.perf_counter() - t0
                res = client.chat_stream(msgs, settings=req)
                if res.first_token_time is None or res.completion_tokens is None:
                    raise RuntimeError(f"{cfg.base_url}: clip {r.id!r}: stream without content or usage "
                                       f"(finish_reason {res.finish_reason!r})")
                rows.append({"id": r.id, "prediction": res.text, "start_time": res.request_start,
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
    run = {"arm": "api", "api": recorded, "served_by": served, "model_name": params["model_name"],
           "request_settings": req, "generation": {**prompts, **decoding}, "client_stats": stats,
           "warmup_requests": params["warmup"],
           "timing": "client side: request start -> first non-empty delta (TTFT) -> end of stream; "
                     "feature_s = WAV encoding + base64",
           "threads": _host()}
    _save_arm(output, rows, run, params["scoring"])


# ----------------------------------------------------------------------------------------------------------------
# cascade
# ----------------------------------------------------------------------------------------------------------------
def cascade_point(edge: pd.DataFrame, cloud: pd.DataFrame, scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Edge draft kept when its cloud mean log-prob >= threshold, else the cloud's answer. Latency per clip:
    total = edge total + draft scoring (+ cloud total when escalated); TTFT = edge TTFT when kept, else
    edge total + scoring + cloud TTFT (the first token of the answer the user gets)."""
    e = edge.set_index("id")
    c = cloud.set_index("id").loc[e.index]
    s = scores.set_index("id").loc[e.index]
    esc = (s["mean_logprob"] < threshold).to_numpy()
    base = e["total_s"].to_numpy() + s["score_s"].to_numpy()
    ttft = np.where(esc, base + c["ttft_s"].to_numpy(), e["ttft_s"].to_numpy())
    total = np.where(esc, base + c["total_s"].to_numpy(), base)
    out = pd.DataFrame({
        "id": e.index.to_numpy(),
        "prediction": np.where(esc, c["prediction"].to_numpy(), e["prediction"].to_numpy()),
        "start_time": 0.0, "first_token_time": ttft, "end_time": total,
        "output_tokens": np.where(esc, c["output_tokens"].to_numpy(), e["output_tokens"].to_numpy()).astype(int),
        "ttft_s": ttft, "total_s": total,
        "feature_s": e["feature_s"].to_numpy() + np.where(esc, c["feature_s"].to_numpy(), 0.0),
        "escalated": esc, "draft_mean_logprob": s["mean_logprob"].to_numpy(),
    })
    return out


def cascade_thresholds(logprobs: np.ndarray, quantiles, extra) -> list[dict]:
    pts = [{"label": f"cascade_q{round(100 * q):02d}", "quantile": float(q),
            "threshold": float(np.quantile(logprobs, q))} for q in quantiles]
    pts += [{"label": f"cascade_t{t:g}".replace("-", "m").replace(".", "p"), "quantile": None, "threshold": float(t)}
            for t in extra]
    return pts


def cascade(*, input, output, params, wildcards, threads):
    """Score every edge draft under the cloud model (one prefill each), then sweep thresholds."""
    from ..data.audio_io import load_audio
    from ..models.omni import OmniCaptioner, set_threads

    thread_info = set_threads(job_threads(threads))
    prompts, _ = _split_block(params["generation"])
    edge, cloud = pd.read_parquet(input.edge), pd.read_parquet(input.cloud)
    items = read_manifest(input.manifest).set_index("id").loc[edge["id"]]
    cap = OmniCaptioner.load(input.model, dtype=params["model"].get("dtype", "float32"))
    for _ in range(params["warmup"]):
        cap.warm_up()
    rows = []
    for rid, draft in _tqdm(zip(edge["id"], edge["prediction"]), total=len(edge), desc="draft scoring"):
        wav = load_audio(items.loc[rid, "audio"])
        d = cap.draft_logprob(wav, system_prompt=prompts["system_prompt"], prompt=prompts["prompt"], draft=draft)
        rows.append({"id": rid, "mean_logprob": float(d["mean_logprob"]), "n_tokens": int(d["n_tokens"]),
                     "score_s": float(d["seconds"])})
    scores = pd.DataFrame(rows)
    points = cascade_thresholds(scores["mean_logprob"].to_numpy(), params["cascade"]["quantiles"],
                                params["cascade"]["thresholds"])
    out_dir = Path(output.points)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in points:
        df = cascade_point(edge, cloud, scores, p["threshold"])
        p["escalation_rate"] = float(df["escalated"].mean())
        p["predictions"] = f"{p['label']}.parquet"
        write_parquet(tmp / p["predictions"], df)
    write_json(tmp / "points.json", {"points": points, "threads": {**thread_info, **_host()},
                                     "scorer": "cloud model: mean token log-prob of the edge draft, one prefill",
                                     "mean_score_s": float(scores["score_s"].mean())})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    write_parquet(output.scores, scores)


# ----------------------------------------------------------------------------------------------------------------
# scoring and aggregation
# ----------------------------------------------------------------------------------------------------------------
def score_arms(*, input, output, params, wildcards, threads):
    """Per-item model-based scores (BERTScore F1 rescaled, sentence similarity) of every base arm, in one process."""
    from ..report.audio_report import item_scores

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
    from ..report.audio_report import build_comparison

    build_comparison(input=input, output=output, params=params, dataset=wildcards["audio_set"])
