"""Consistency track stages: corpus/models → local embed+rerank → the same through the API → compare → report.

Embedding rows are the corpus queries (formatted with the instruction) followed by its documents; rerank scores are
per `corpus["rerank"]` entry, candidates in corpus order. Every output is written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from ..io import atomic_write, read_json, write_json

CAUSES = ("precision", "separator", "instruction", "eos", "truncation")


# ---- download ------------------------------------------------------------------------------------------------------

def download_corpus(*, input, output, params, wildcards, threads):
    from ..data.consistency_demo import generate_corpus, load_corpus, validate_corpus

    spec = params["dataset"]
    if spec["source"] == "demo":
        corpus = generate_corpus(seed=spec["seed"], queries_per_topic=spec["queries_per_topic"],
                                 n_negatives=spec["n_negatives"], n_topics=spec.get("n_topics"))
    else:
        corpus = load_corpus(spec["path"])
    validate_corpus(corpus, output[0])
    write_json(output[0], corpus)
    print(f"{len(corpus['queries'])} queries, {len(corpus['documents'])} documents, {len(corpus['rerank'])} rerank lists")


def download_model(*, input, output, params, wildcards, threads):
    from ..data.hf_snapshot import materialize_model
    from ..models.consistency_assets import ASSETS

    spec, dest = params["model"], Path(output[0])
    if spec["source"] == "demo":
        src = ASSETS / spec["name"]
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src}: shipped demo model missing (python -m leverplus.models.consistency_assets)")
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    else:
        materialize_model(spec, dest)
    print(f"{dest}: {sorted(p.name for p in dest.iterdir())}")


# ---- helpers -------------------------------------------------------------------------------------------------------

def embedding_recipe(cfg: dict):
    from ..models.embedding import EmbeddingRecipe

    return EmbeddingRecipe.from_dict(cfg)


def rerank_recipe(cfg: dict):
    from ..models.reranker import RerankRecipe

    return RerankRecipe.from_dict(cfg)


def _save_npy(path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, np.float32))
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _texts(corpus: dict):
    docs = {d["id"]: d["text"] for d in corpus["documents"]}
    queries = {q["id"]: q["text"] for q in corpus["queries"]}
    return queries, docs


def run_local(corpus: dict, emb_dir, rr_dir, emb_recipe, rr_recipe, *, embedder=None, reranker=None,
              progress: bool = False):
    """(embeddings [n_q + n_d, d], [rerank prob arrays], [rerank logit arrays]) of the local recipe."""
    from ..models.embedding import QwenEmbedder
    from ..models.reranker import QwenReranker

    embedder = embedder.with_recipe(emb_recipe) if embedder is not None else QwenEmbedder(emb_dir, emb_recipe)
    reranker = reranker.with_recipe(rr_recipe) if reranker is not None else QwenReranker(rr_dir, rr_recipe)
    queries, docs = _texts(corpus)
    vq = embedder.embed_queries([q["text"] for q in corpus["queries"]], progress=progress)
    vd = embedder.embed_documents([d["text"] for d in corpus["documents"]], progress=progress)
    if emb_recipe.dimensions is not None:
        from ..models.embedding import normalise

        vq, vd = normalise(vq, emb_recipe.dimensions), normalise(vd, emb_recipe.dimensions)
    probs, logits = [], []
    lists = corpus["rerank"]
    if progress:
        from tqdm import tqdm

        lists = tqdm(lists, desc="rerank", unit="query")
    for r in lists:
        s = reranker.score(queries[r["query_id"]], [docs[c] for c in r["candidates"]])
        probs.append(s.prob)
        logits.append(s.logit)
    return np.concatenate([vq, vd]), probs, logits, embedder, reranker


def _write_side(output, emb, probs, logits, meta: dict) -> None:
    _save_npy(output[0], emb)
    rec = {"prob": [p.tolist() for p in probs], "meta": meta}
    if logits is not None:
        rec["logit"] = [x.tolist() for x in logits]
    write_json(output[1], rec)


def embed_rerank_local(*, input, output, params, wildcards, threads):
    corpus = read_json(input.corpus)
    er, rr = embedding_recipe(params["recipes"]["embedder"]), rerank_recipe(params["recipes"]["reranker"])
    emb, probs, logits, *_ = run_local(corpus, input.embedder, input.reranker, er, rr, progress=True)
    _write_side(output, emb, probs, logits, {"side": "local", "embedding_recipe": params["recipes"]["embedder"],
                                             "rerank_recipe": params["recipes"]["reranker"]})


# ---- API ------------------------------------------------------------------------------------------------------------

def served_code() -> str:
    """Digest of every leverplus file the API side runs (client, server, backends, recipes): `local_server`
    answers are this code's output."""
    from ..fingerprint import dependency_files, files_digest, package_root

    root = package_root()
    return files_digest(dependency_files([(__name__, "api_side")], root), root)


def cache_dir(root: Path, api: dict, *, models: dict, shipped: str, emb_cfg: dict, rr_cfg: dict) -> Path:
    """The response cache of one provider. The client keys entries by request body only (no base URL), so the
    directory carries everything else that decides an answer: for `local_server`, the served backends' options (the
    injected drift), the batch sizes handed to them, the model specs and shipped weights, and the fingerprint of the
    code that serves and scores (a run under other code or another drift never reads this one's answers); for
    `remote`, the base URL."""
    if api["mode"] == "local_server":
        key = {"server": api["server"], "models": models, "shipped": shipped, "code": served_code(),
               "batch_size": {"embedding": emb_cfg.get("batch_size"), "rerank": rr_cfg.get("batch_size")}}
        return root / f"local-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"
    return root / f"remote-{hashlib.sha256(api['base_url'].encode()).hexdigest()[:12]}"


def query_as_sent(query: str, emb_cfg: dict, api: dict) -> str:
    """The string the API caller sends for a query: the local instruction formatting, with `api.query_format`
    overrides (instruction on/off, separator) — the client-side causes of embedding drift."""
    from ..models.embedding import format_query

    recipe = embedding_recipe({**emb_cfg, **(api.get("query_format") or {})})
    return format_query(query, recipe)


def api_side(corpus: dict, api: dict, emb_cfg: dict, rr_cfg: dict, *, emb_dir=None, rr_dir=None,
             cache_dir=None) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Embeddings and rerank scores through the API client; with `mode: local_server` the project's server is
    started here on 127.0.0.1 with the configured backend options (the injected drift) and stopped after."""
    from contextlib import nullcontext

    from ..api import APIConfig, OpenAICompatClient

    server = nullcontext(None)
    base_url = api.get("base_url")
    if api["mode"] == "local_server":
        from ..serving.embedding_backend import make_embedding_backend, make_rerank_backend
        from ..serving.server import OpenAICompatServer

        eb = make_embedding_backend(str(emb_dir), model_name=api["embedding_model"],
                                    options={"batch_size": emb_cfg["batch_size"], **api["server"]["embedding"]})
        rb = make_rerank_backend(str(rr_dir), model_name=api["rerank_model"],
                                 options={"batch_size": rr_cfg["batch_size"], **api["server"]["rerank"]})
        server = OpenAICompatServer(port=0, embeddings=eb, rerank=rb)
    common = {k: api[k] for k in ("api_key_env", "timeout_s", "max_retries", "backoff_s", "rate_limit_per_s",
                                  "batch_size") if api.get(k) is not None}
    queries, docs = _texts(corpus)
    with server as srv:
        url = srv.url if srv is not None else base_url
        cfg_e = APIConfig.from_dict({"base_url": url, "model": api["embedding_model"], "cache_dir": cache_dir, **common})
        cfg_r = APIConfig.from_dict({"base_url": url, "model": api["rerank_model"], "cache_dir": cache_dir, **common})
        with OpenAICompatClient(cfg_e) as ce, OpenAICompatClient(cfg_r) as cr:
            dims = api.get("dimensions")
            vq = ce.embeddings([query_as_sent(q["text"], emb_cfg, api) for q in corpus["queries"]], dimensions=dims)
            vd = ce.embeddings([d["text"] for d in corpus["documents"]], dimensions=dims)
            probs = [np.asarray(cr.rerank(queries[r["query_id"]], [docs[c] for c in r["candidates"]],
                                          instruction=rr_cfg["instruction"]), float)
                     for r in corpus["rerank"]]
            stats = {"embeddings": ce.stats(), "rerank": cr.stats()}
    return np.concatenate([vq, vd]).astype(np.float32), probs, stats


def embed_rerank_api(*, input, output, params, wildcards, threads):
    from ..models.consistency_assets import shipped_digest

    corpus, api = read_json(input.corpus), params["api"]
    emb_cfg, rr_cfg = params["recipes"]["embedder"], params["recipes"]["reranker"]
    cache = cache_dir(Path(params["cache_root"]), api, models=params["models"], shipped=shipped_digest(),
                      emb_cfg=emb_cfg, rr_cfg=rr_cfg)
    emb, probs, stats = api_side(corpus, api, emb_cfg, rr_cfg, emb_dir=input.embedder, rr_dir=input.reranker,
                                 cache_dir=str(cache))
    print(json.dumps({"client_stats": stats, "cache_dir": str(cache)}))
    shown = {k: v for k, v in api.items() if k != "api_key_env"} | {"api_key_env": api.get("api_key_env")}
    _write_side(output, emb, probs, None, {"side": "api", "api": shown, "client_stats": stats})


# ---- compare + diagnosis --------------------------------------------------------------------------------------------

def _load_side(emb_path, scores_path):
    from ..metrics.agreement import RerankRun

    rec = read_json(scores_path)
    logit = [np.asarray(x, float) for x in rec["logit"]] if "logit" in rec else None
    return np.load(emb_path), RerankRun([np.asarray(p, float) for p in rec["prob"]], logit), rec["meta"]


def candidate_variants(kind: str, recipe, truncation_lengths) -> list[tuple[str, str, object]]:
    """(cause, label, recipe) of each single-cause change to the local `recipe` (what the diagnosis reruns)."""
    out = [("precision", f"dtype={'bfloat16' if recipe.dtype == 'float32' else 'float32'}",
            recipe.with_(dtype="bfloat16" if recipe.dtype == "float32" else "float32"))]
    sep = "\n\n" if recipe.separator == "\n" else "\n"
    out.append(("separator", f"separator={sep!r}", recipe.with_(separator=sep)))
    if kind == "embedding":
        out.append(("instruction", f"instruction={not recipe.instruction}", recipe.with_(instruction=not recipe.instruction)))
        eos = "none" if recipe.eos != "none" else "append"
        out.append(("eos", f"eos={eos}", recipe.with_(eos=eos)))
    else:
        out.append(("instruction", f"instruction={not recipe.use_instruction}",
                    recipe.with_(use_instruction=not recipe.use_instruction)))
    for n in truncation_lengths:
        if n < recipe.max_length:
            out.append(("truncation", f"max_length={n}", recipe.with_(max_length=n)))
    return out


def diagnose(corpus: dict, emb_dir, rr_dir, er, rr, api_emb, api_rr, *, run_embedding: bool, run_rerank: bool,
             truncation_lengths, dimensions=None) -> dict:
    """Rerun the local side under each candidate cause; the variant closest to the API names the cause."""
    from ..metrics.agreement import RerankRun, embedding_distance, rerank_distance
    from ..models.embedding import QwenEmbedder, normalise
    from ..models.reranker import QwenReranker

    queries, docs = _texts(corpus)
    result = {}
    if run_embedding:
        embedder = QwenEmbedder(emb_dir, er)
        rows = []
        for cause, label, recipe in [("none", "as configured", er), *candidate_variants("embedding", er, truncation_lengths)]:
            try:
                e = embedder.with_recipe(recipe)
                v = np.concatenate([e.embed_queries([q["text"] for q in corpus["queries"]]),
                                    e.embed_documents([d["text"] for d in corpus["documents"]])])
            except ValueError as err:  # a variant that cannot run (e.g. a length below the prompt itself)
                rows.append({"cause": cause, "variant": label, "one_minus_cosine_mean": float("inf"), "error": str(err)})
                continue
            if dimensions is not None:
                v = normalise(v, dimensions)
            rows.append({"cause": cause, "variant": label, **embedding_distance(v, api_emb)})
        result["embedding"] = _verdict(rows, "one_minus_cosine_mean")
    if run_rerank:
        reranker = QwenReranker(rr_dir, rr)
        rows = []
        for cause, label, recipe in [("none", "as configured", rr), *candidate_variants("rerank", rr, truncation_lengths)]:
            try:
                r = reranker.with_recipe(recipe)
                probs = [r.score(queries[x["query_id"]], [docs[c] for c in x["candidates"]]).prob
                         for x in corpus["rerank"]]
            except ValueError as err:
                rows.append({"cause": cause, "variant": label, "mean_abs_diff_prob": float("inf"), "error": str(err)})
                continue
            rows.append({"cause": cause, "variant": label, **rerank_distance(RerankRun(probs), api_rr)})
        result["rerank"] = _verdict(rows, "mean_abs_diff_prob")
    return result


def _verdict(rows: list[dict], key: str) -> dict:
    """The closest variant; a cause is named only when it beats the configured recipe by a factor ≥ 10 (or reaches
    0), so noise-level differences between variants are not read as a cause."""
    base = rows[0][key]
    best = min(rows[1:], key=lambda r: r[key]) if len(rows) > 1 else rows[0]
    found = best[key] < base and (best[key] == 0 or best[key] * 10 <= base)
    return {"distance": key, "variants": rows, "best": best,
            "cause": best["cause"] if found else None, "variant": best["variant"] if found else None,
            "summary": (f"the API matches the local model run with {best['variant']} ({key} {best[key]:.3g} vs "
                        f"{base:.3g} as configured): cause = {best['cause']}") if found else
                       (f"no single candidate cause explains the difference (closest: {best['variant']}, {key} "
                        f"{best[key]:.3g} vs {base:.3g} as configured)")}


def compare(*, input, output, params, wildcards, threads):
    from ..metrics.agreement import calibration_cv, embedding_agreement, rerank_agreement

    corpus = read_json(input.corpus)
    m, th = params["metrics"], params["thresholds"]
    le, lr, lmeta = _load_side(input.local_emb, input.local_scores)
    ae, ar, ameta = _load_side(input.api_emb, input.api_scores)
    nq = len(corpus["queries"])
    boot = dict(n_resamples=m["n_resamples"], seed=m["seed"])
    emb = embedding_agreement(le, ae, query_rows=range(nq), doc_rows=range(nq, len(le)), k=m["k"], rbo_p=m["rbo_p"], **boot)
    rer = rerank_agreement(lr, ar, k=m["k"], rbo_p=m["rbo_p"], **boot)
    cal = calibration_cv(lr, ar, folds=m["calibration_folds"], seed=m["seed"])
    emb_ok = emb["cosine_mean"]["value"] >= th["embedding_min_cosine_mean"]
    tau = rer["per_query_mean"]["kendall_tau_b"]["value"]
    rr_ok = (rer["absolute"]["mean_abs_diff_prob"]["value"] <= th["rerank_max_mean_abs_diff"]
             and tau >= th["rerank_min_kendall_tau_b"])
    d = params["diagnosis"]
    run_e, run_r = d["always"] or not emb_ok, d["always"] or not rr_ok
    diagnosis = {}
    if d["enabled"] and (run_e or run_r):
        diagnosis = diagnose(corpus, input.embedder, input.reranker, embedding_recipe(params["recipes"]["embedder"]),
                             rerank_recipe(params["recipes"]["reranker"]), ae, ar, run_embedding=run_e,
                             run_rerank=run_r, truncation_lengths=d["truncation_lengths"],
                             dimensions=params["recipes"]["embedder"].get("dimensions"))
    out = {"dataset": wildcards.get("cons_set", wildcards.get("dataset")), "embedding": emb, "rerank": rer, "calibration": cal,
           "thresholds": th, "passed": {"embedding": bool(emb_ok), "rerank": bool(rr_ok)}, "diagnosis": diagnosis,
           "local": lmeta, "api": ameta,
           "corpus": {"n_queries": nq, "n_documents": len(corpus["documents"]), "meta": corpus.get("meta", {}),
                      "langs": sorted({q.get("lang", "?") for q in corpus["queries"]})}}
    write_json(output[0], finite(out))


def finite(obj):
    """JSON has no NaN/Infinity: undefined values (a constant score list's correlation, a variant that could not
    run) are written as null."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
