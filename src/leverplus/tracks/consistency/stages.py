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

from leverplus.core.io import atomic_write, read_json, write_json

CAUSES = ("precision", "separator", "instruction", "eos", "truncation", "template")
DTYPES = ("float32", "bfloat16", "float16")


# ---- config (parse time: the reference checks leverplus.core.config.load_track runs on the `consistency` block) -----

def check_config(block: dict) -> None:
    """A run that talks to a remote API names its base URL."""
    from leverplus.core.config import ConfigError

    for name, run in block["runs"].items():
        if run["api"]["mode"] == "remote" and not run["api"]["base_url"]:
            raise ConfigError(f"invalid config: consistency.runs.{name}.api.base_url: mode remote needs a base URL")


# ---- download ------------------------------------------------------------------------------------------------------

def download_corpus(*, input, output, params, wildcards, threads):
    from leverplus.tracks.consistency.demo import generate_corpus, load_corpus, validate_corpus

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
    from leverplus.core.hf_snapshot import materialize_model
    from leverplus.tracks.consistency.assets import ASSETS

    spec, dest = params["model"], Path(output[0])
    if spec["source"] == "demo":
        src = ASSETS / spec["name"]
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src}: shipped demo model missing (python -m leverplus.tracks.consistency.assets)")
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
    from leverplus.tracks.consistency.embedding import EmbeddingRecipe

    return EmbeddingRecipe.from_dict(cfg)


def rerank_recipe(cfg: dict):
    from leverplus.tracks.consistency.reranker import RerankRecipe

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
              progress: bool = False, device: str | None = "cpu"):
    """(embeddings [n_q + n_d, d], [rerank prob arrays], [rerank logit arrays], embedder, reranker) of the local
    recipe, the models on `device` (`compute.device`; auto = CUDA when available)."""
    from leverplus.tracks.consistency.embedding import QwenEmbedder
    from leverplus.tracks.consistency.reranker import QwenReranker

    embedder = (embedder.with_recipe(emb_recipe) if embedder is not None
                else QwenEmbedder(emb_dir, emb_recipe, device=device))
    reranker = (reranker.with_recipe(rr_recipe) if reranker is not None
                else QwenReranker(rr_dir, rr_recipe, device=device))
    queries, docs = _texts(corpus)
    vq = embedder.embed_queries([q["text"] for q in corpus["queries"]], progress=progress)
    vd = embedder.embed_documents([d["text"] for d in corpus["documents"]], progress=progress)
    if emb_recipe.dimensions is not None:
        from leverplus.tracks.consistency.embedding import normalise

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


def placement(embedder, reranker) -> dict:
    """Where and in which precision each model ran (recorded beside every result)."""
    return {"embedder": {"device": embedder.device, "dtype": embedder.recipe.dtype},
            "reranker": {"device": reranker.device, "dtype": reranker.recipe.dtype}}


def _device_spec(params: dict) -> str:
    return (params.get("compute") or {}).get("device", "auto")


def embed_rerank_local(*, input, output, params, wildcards, threads):
    corpus = read_json(input.corpus)
    er, rr = embedding_recipe(params["recipes"]["embedder"]), rerank_recipe(params["recipes"]["reranker"])
    emb, probs, logits, e, r = run_local(corpus, input.embedder, input.reranker, er, rr, progress=True,
                                         device=_device_spec(params))
    where = placement(e, r)
    print(json.dumps({"placement": where}))
    _write_side(output, emb, probs, logits, {"side": "local", "embedding_recipe": params["recipes"]["embedder"],
                                             "rerank_recipe": params["recipes"]["reranker"], "placement": where,
                                             "device_spec": _device_spec(params)})


# ---- API ------------------------------------------------------------------------------------------------------------

def served_code() -> str:
    """Digest of every leverplus file the API side runs (client, server, backends, recipes): `local_server`
    answers are this code's output."""
    from leverplus.core.fingerprint import dependency_files, files_digest, package_root

    root = package_root()
    return files_digest(dependency_files([(__name__, "api_side")], root), root)


def cache_dir(root: Path, api: dict, *, models: dict, shipped: str, emb_cfg: dict, rr_cfg: dict) -> Path:
    """The response cache of one provider. The client keys entries by request body only (no base URL), so the
    directory carries everything else that decides an answer: for `local_server`, the served backends' options (the
    injected drift), the batch sizes handed to them, the model specs and shipped weights, and the fingerprint of the
    code that serves and scores (a run under other code or another drift never reads this one's answers); for
    `remote`, the base URL."""
    tag = api.get("cache_tag")
    if api["mode"] == "local_server":
        key = {"server": api["server"], "models": models, "shipped": shipped, "code": served_code(),
               "batch_size": {"embedding": emb_cfg.get("batch_size"), "rerank": rr_cfg.get("batch_size")}}
        if tag:
            key["tag"] = tag
        return root / f"local-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"
    # a remote deployment can change behind the same URL: `api.cache_tag` (e.g. the provider's model version or the
    # date of the run) names a fresh cache, `api.cache_max_age_days` expires old answers (prune_cache)
    key = api["base_url"] if not tag else json.dumps({"base_url": api["base_url"], "tag": tag}, sort_keys=True)
    return root / f"remote-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prune_cache(directory: Path, max_age_days: float | None, *, now: float | None = None) -> int:
    """Delete cached answers older than `max_age_days` (by modification time); returns how many were removed."""
    import time

    if max_age_days is None or not Path(directory).is_dir():
        return 0
    limit = (time.time() if now is None else now) - float(max_age_days) * 86400.0
    removed = 0
    for f in Path(directory).glob("*.json"):
        if f.stat().st_mtime < limit:
            f.unlink()
            removed += 1
    return removed


def query_as_sent(query: str, emb_cfg: dict, api: dict) -> str:
    """The string the API caller sends for a query: the local instruction formatting, with `api.query_format`
    overrides (instruction on/off, separator) — the client-side causes of embedding drift."""
    from leverplus.tracks.consistency.embedding import format_query

    recipe = embedding_recipe({**emb_cfg, **(api.get("query_format") or {})})
    return format_query(query, recipe)


def rerank_as_sent(query: str, documents: list[str], rr_cfg: dict, api: dict) -> tuple[str, list[str], str | None]:
    """(query, documents, instruction field) as the API caller sends them. `api.rerank_format`:

    * `raw` — the texts as they are, the instruction in an `instruction` field (the project's server and
      SiliconFlow-style providers apply the Qwen3 template themselves; vLLM has no such field and would score the raw
      strings: near random for Qwen3-Reranker);
    * `qwen3_template` — the client applies the template, as vLLM's Qwen3-Reranker example does: query =
      `PREFIX<Instruct>: {i}\n<Query>: {q}\n`, each document `<Document>: {d}SUFFIX`, no instruction field (a server
      that concatenates query and document, like vLLM, then scores exactly the official prompt)."""
    from leverplus.tracks.consistency.reranker import document_template, query_template

    fmt = api.get("rerank_format", "raw")
    if fmt == "raw":
        return query, list(documents), rr_cfg["instruction"]
    if fmt == "qwen3_template":
        recipe = rerank_recipe(rr_cfg)
        return query_template(query, recipe), [document_template(d) for d in documents], None
    raise ValueError(f"api.rerank_format {fmt!r}: expected raw or qwen3_template")


def check_probabilities(probs: list[np.ndarray], query_ids: list[str], where: str) -> None:
    """Rerank scores compared here are probabilities: stop, naming the query and value, on anything outside [0, 1]
    (a provider returning raw logits, or a NaN)."""
    for qid, p in zip(query_ids, probs):
        p = np.asarray(p, float)
        bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
        if bad.size:
            raise ValueError(f"{where}: rerank scores of query {qid!r} are not probabilities in [0, 1] "
                             f"(candidate {int(bad[0])}: {p[bad[0]]!r}); does the API return raw logits?")


def api_side(corpus: dict, api: dict, emb_cfg: dict, rr_cfg: dict, *, emb_dir=None, rr_dir=None,
             cache_dir=None, device: str | None = "cpu") -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Embeddings and rerank scores through the API client; with `mode: local_server` the project's server is
    started here on 127.0.0.1 with the configured backend options (the injected drift) on `device`, and stopped
    after. `dimensions` defaults to the local recipe's (`embedder.dimensions`), so both sides have one shape."""
    from contextlib import nullcontext

    from leverplus.api import APIConfig, OpenAICompatClient

    server = nullcontext(None)
    base_url = api.get("base_url")
    if api["mode"] == "local_server":
        from leverplus.serving.embedding_backend import make_embedding_backend, make_rerank_backend
        from leverplus.serving.server import OpenAICompatServer

        eb = make_embedding_backend(str(emb_dir), model_name=api["embedding_model"], device=device,
                                    options={"batch_size": emb_cfg["batch_size"], **api["server"]["embedding"]})
        rb = make_rerank_backend(str(rr_dir), model_name=api["rerank_model"], device=device,
                                 options={"batch_size": rr_cfg["batch_size"], **api["server"]["rerank"]})
        server = OpenAICompatServer(port=0, embeddings=eb, rerank=rb)
    common = {k: api[k] for k in ("api_key_env", "timeout_s", "max_retries", "backoff_s", "rate_limit_per_s",
                                  "batch_size") if api.get(k) is not None}
    queries, docs = _texts(corpus)
    protocol = api.get("rerank_protocol", "jina")
    with server as srv:
        url = srv.url if srv is not None else base_url
        cfg_e = APIConfig.from_dict({"base_url": url, "model": api["embedding_model"], "cache_dir": cache_dir, **common})
        cfg_r = APIConfig.from_dict({"base_url": url, "model": api["rerank_model"], "cache_dir": cache_dir, **common})
        with OpenAICompatClient(cfg_e) as ce, OpenAICompatClient(cfg_r) as cr:
            dims = api.get("dimensions") if api.get("dimensions") is not None else emb_cfg.get("dimensions")
            vq = ce.embeddings([query_as_sent(q["text"], emb_cfg, api) for q in corpus["queries"]], dimensions=dims)
            vd = ce.embeddings([d["text"] for d in corpus["documents"]], dimensions=dims)
            probs = []
            for r in corpus["rerank"]:
                q, ds, instr = rerank_as_sent(queries[r["query_id"]], [docs[c] for c in r["candidates"]], rr_cfg, api)
                probs.append(np.asarray(cr.rerank(q, ds, instruction=instr, protocol=protocol), float))
            stats = {"embeddings": ce.stats(), "rerank": cr.stats(), "dimensions_sent": dims,
                     "rerank_format": api.get("rerank_format", "raw"), "rerank_protocol": protocol}
            if srv is not None:
                stats["served_placement"] = {"embedder": {"device": eb.embedder.device, "dtype": eb.embedder.recipe.dtype},
                                             "reranker": {"device": rb.reranker.device, "dtype": rb.reranker.recipe.dtype}}
    check_probabilities(probs, [r["query_id"] for r in corpus["rerank"]], f"API {url}")
    return np.concatenate([vq, vd]).astype(np.float32), probs, stats


def embed_rerank_api(*, input, output, params, wildcards, threads):
    from leverplus.tracks.consistency.assets import shipped_digest

    corpus, api = read_json(input.corpus), params["api"]
    emb_cfg, rr_cfg = params["recipes"]["embedder"], params["recipes"]["reranker"]
    cache = cache_dir(Path(params["cache_root"]), api, models=params["models"], shipped=shipped_digest(),
                      emb_cfg=emb_cfg, rr_cfg=rr_cfg)
    expired = prune_cache(cache, api.get("cache_max_age_days"))
    emb, probs, stats = api_side(corpus, api, emb_cfg, rr_cfg, emb_dir=input.embedder, rr_dir=input.reranker,
                                 cache_dir=str(cache), device=_device_spec(params))
    stats["cache_expired_entries"] = expired
    print(json.dumps({"client_stats": stats, "cache_dir": str(cache)}))
    shown = {k: v for k, v in api.items() if k != "api_key_env"} | {"api_key_env": api.get("api_key_env")}
    _write_side(output, emb, probs, None, {"side": "api", "api": shown, "client_stats": stats})


# ---- compare + diagnosis --------------------------------------------------------------------------------------------

def _load_side(emb_path, scores_path):
    from leverplus.metrics.agreement import RerankRun

    rec = read_json(scores_path)
    logit = [np.asarray(x, float) for x in rec["logit"]] if "logit" in rec else None
    return np.load(emb_path), RerankRun([np.asarray(p, float) for p in rec["prob"]], logit), rec["meta"]


def candidate_variants(kind: str, recipe, truncation_lengths) -> list[tuple[str, str, dict]]:
    """(cause, label, changes to the local `recipe`) of each single candidate cause the diagnosis reruns: every other
    precision (bf16, fp16 — what Qwen's own examples load —, fp32), the separator `\\n` ↔ `\\n\\n`, the instruction
    on/off, for embeddings the end token, for rerank the Qwen3 template on/off (vLLM without a score template), and
    each truncation length below the configured one."""
    out = [("precision", f"dtype={dt}", {"dtype": dt}) for dt in DTYPES if dt != recipe.dtype]
    sep = "\n\n" if recipe.separator == "\n" else "\n"
    out.append(("separator", f"separator={sep!r}", {"separator": sep}))
    if kind == "embedding":
        out.append(("instruction", f"instruction={not recipe.instruction}", {"instruction": not recipe.instruction}))
        eos = "none" if recipe.eos != "none" else "append"
        out.append(("eos", f"eos={eos}", {"eos": eos}))
    else:
        out.append(("instruction", f"instruction={not recipe.use_instruction}",
                    {"use_instruction": not recipe.use_instruction}))
        out.append(("template", f"template={not recipe.template}", {"template": not recipe.template}))
    for n in truncation_lengths:
        if n < recipe.max_length:
            out.append(("truncation", f"max_length={n}", {"max_length": n}))
    return out


def candidate_pairs(kind: str, recipe, singles) -> list[tuple[str, str, dict]]:
    """Two single causes of different kinds at once, leaving out pairs where one change makes the other a no-op
    (no instruction: the embedding separator is unused; no template: the rerank separator and instruction are)."""
    out = []
    for i, (c1, l1, ch1) in enumerate(singles):
        for c2, l2, ch2 in singles[i + 1:]:
            if c1 == c2:
                continue
            merged = {**ch1, **ch2}
            if kind == "embedding" and merged.get("instruction") is False and "separator" in merged:
                continue
            if kind == "rerank" and merged.get("template") is False and {"separator", "use_instruction"} & set(merged):
                continue
            out.append((f"{c1}+{c2}", f"{l1}, {l2}", merged))
    return out


PRIMARY = {"embedding": "one_minus_cosine_mean", "rerank": "mean_abs_diff_prob"}


def within_thresholds(kind: str, dist: dict, thresholds: dict, noise: dict | None = None, factor: float = 2.0) -> bool:
    """Does this distance to the API pass the agreement thresholds — widened to `factor` × the measured noise floor
    of the variant's precision (the same dtype under two batch layouts), so that batch noise is not read as a cause
    or as its absence?"""
    if dist.get("error"):
        return False
    if kind == "embedding":
        tol = 1 - thresholds["embedding_min_cosine_mean"]
        if noise:
            tol = max(tol, factor * noise["one_minus_cosine_mean"])
        return dist["one_minus_cosine_mean"] <= tol
    tol_abs, tol_tau = thresholds["rerank_max_mean_abs_diff"], thresholds["rerank_min_kendall_tau_b"]
    if noise:
        tol_abs = max(tol_abs, factor * noise["mean_abs_diff_prob"])
        if np.isfinite(noise["kendall_tau_b_mean"]):
            tol_tau = min(tol_tau, 1 - factor * (1 - noise["kendall_tau_b_mean"]))
    tau = dist["kendall_tau_b_mean"]
    tau_ok = tau >= tol_tau if np.isfinite(tau) else dist["mean_abs_diff_prob"] == 0
    if not tau_ok and noise:
        # reorders are noise when no score moved by more than the noise's own largest move: two candidates whose
        # scores lie within batch noise of each other swap under noise alone (a 4-query floor rarely shows a swap)
        tau_ok = dist["max_abs_diff_prob"] <= factor * noise["max_abs_diff_prob"]
    return dist["mean_abs_diff_prob"] <= tol_abs and tau_ok


class _Rerunner:
    """Reruns the local side under recipe variants, one loaded model per precision, on one device."""

    def __init__(self, kind: str, corpus: dict, model_dir, base, *, device, dimensions=None):
        self.kind, self.corpus, self.model_dir, self.base = kind, corpus, model_dir, base
        self.device, self.dimensions, self._models = device, dimensions, {}

    def _model(self, dtype: str):
        if dtype not in self._models:
            if self.kind == "embedding":
                from leverplus.tracks.consistency.embedding import QwenEmbedder

                self._models[dtype] = QwenEmbedder(self.model_dir, self.base.with_(dtype=dtype), device=self.device)
            else:
                from leverplus.tracks.consistency.reranker import QwenReranker

                self._models[dtype] = QwenReranker(self.model_dir, self.base.with_(dtype=dtype), device=self.device)
        return self._models[dtype]

    def run(self, recipe):
        from leverplus.metrics.agreement import RerankRun

        m = self._model(recipe.dtype).with_recipe(recipe)
        if self.kind == "embedding":
            from leverplus.tracks.consistency.embedding import normalise

            v = np.concatenate([m.embed_queries([q["text"] for q in self.corpus["queries"]]),
                                m.embed_documents([d["text"] for d in self.corpus["documents"]])])
            return normalise(v, self.dimensions) if self.dimensions is not None else v
        queries, docs = _texts(self.corpus)
        return RerankRun([m.score(queries[x["query_id"]], [docs[c] for c in x["candidates"]]).prob
                          for x in self.corpus["rerank"]])

    def device_used(self) -> str:
        return next(iter(self._models.values())).device if self._models else str(self.device)


def _distance(kind: str, local, api) -> dict:
    from leverplus.metrics.agreement import embedding_distance, rerank_distance

    return embedding_distance(local, api) if kind == "embedding" else rerank_distance(local, api)


def diagnose_one(kind: str, corpus: dict, model_dir, recipe, api_side_result, *, thresholds: dict, truncation_lengths,
                 dimensions=None, device="cpu", noise_factor: float = 2.0, search_pairs: bool = True) -> dict:
    """Rerun the local side under each candidate cause (then, if no single one does it, each pair of causes) and
    name the cause only when that variant brings the API within the agreement thresholds (widened to the measured
    noise floor of its precision); otherwise report each variant's share of the gap."""
    key = PRIMARY[kind]
    runner = _Rerunner(kind, corpus, model_dir, recipe, device=device, dimensions=dimensions)
    rows, runs = [], {}

    def measure(cause, label, changes):
        try:
            rec = recipe.with_(**changes)
            out = runner.run(rec)
        except (ValueError, RuntimeError) as err:  # a variant that cannot run (a length below the prompt itself…)
            row = {"cause": cause, "variant": label, key: None, "error": f"{type(err).__name__}: {err}"}
        else:
            runs[label] = out
            row = {"cause": cause, "variant": label, "dtype": rec.dtype, **_distance(kind, out, api_side_result)}
        rows.append(row)
        return row

    base = measure("none", "as configured", {})
    singles = candidate_variants(kind, recipe, truncation_lengths)
    for cause, label, changes in singles:
        measure(cause, label, changes)
    # noise floor: each precision that ran, under a second batch layout (batch 1, or 8 when configured as 1)
    noise = {}
    other_bs = 1 if recipe.batch_size != 1 else 8
    for row in list(rows):
        dt = row.get("dtype")
        if dt is None or dt in noise or row["cause"] not in ("none", "precision"):
            continue
        try:
            again = runner.run(recipe.with_(dtype=dt, batch_size=other_bs))
        except (ValueError, RuntimeError) as err:
            noise[dt] = {"error": str(err)}
            continue
        noise[dt] = {**_distance(kind, runs[row["variant"]], again), "batch_sizes": [recipe.batch_size, other_bs]}
    for row in rows:
        fl = noise.get(row.get("dtype"))
        row["within"] = within_thresholds(kind, row, thresholds, fl if fl and "error" not in fl else None, noise_factor)
    pairs_searched = False
    if search_pairs and not base["within"] and not any(r["within"] for r in rows[1:]):
        pairs_searched = True
        for cause, label, changes in candidate_pairs(kind, recipe, singles):
            row = measure(cause, label, changes)
            fl = noise.get(row.get("dtype"))
            row["within"] = within_thresholds(kind, row, thresholds, fl if fl and "error" not in fl else None,
                                              noise_factor)
    return _verdict(rows, key, noise=noise, noise_factor=noise_factor, pairs_searched=pairs_searched,
                    device=runner.device_used())


def _verdict(rows: list[dict], key: str, *, noise: dict, noise_factor: float, pairs_searched: bool, device: str) -> dict:
    base = rows[0]
    d0 = base.get(key)
    for r in rows:
        r["share_of_gap"] = (None if r.get(key) is None or not d0 else float((d0 - r[key]) / d0))
    ran = [r for r in rows[1:] if r.get(key) is not None]
    best = min(ran, key=lambda r: r[key]) if ran else base
    matched = [r for r in rows[1:] if r["within"]]
    singles = [r for r in matched if "+" not in r["cause"]]
    pick = min(singles or matched, key=lambda r: r[key]) if matched else None
    out = {"distance": key, "variants": rows, "noise_floor": noise, "noise_factor": noise_factor,
           "pairs_searched": pairs_searched, "device": device, "best": best,
           "cause": pick["cause"] if pick else None, "causes": pick["cause"].split("+") if pick else [],
           "variant": pick["variant"] if pick else None,
           "also_within": [r["variant"] for r in matched if r is not pick]}
    if base["within"]:
        out.update(cause=None, causes=[], variant=None)
        out["summary"] = (f"the configured recipe is already within the thresholds / noise floor ({key} {d0:.3g}): "
                          "no cause to name")
    elif pick:
        out["summary"] = (f"the API matches the local model run with {pick['variant']} ({key} {pick[key]:.3g} vs "
                          f"{d0:.3g} as configured; within the agreement thresholds or {noise_factor:g}x the "
                          f"{pick.get('dtype')} noise floor): cause = {pick['cause']}")
    else:
        top = sorted([r for r in ran if r.get("share_of_gap") is not None], key=lambda r: -r["share_of_gap"])[:3]
        shares = ", ".join(f"{r['variant']} {100 * r['share_of_gap']:.0f}%" for r in top)
        out["summary"] = (f"no candidate cause{' or pair of causes' if pairs_searched else ''} brings the API within "
                          f"the agreement thresholds ({key} {d0:.3g} as configured); share of the gap closed by the "
                          f"closest variants: {shares or 'none ran'}")
    return out


def diagnose(corpus: dict, emb_dir, rr_dir, er, rr, api_emb, api_rr, *, run_embedding: bool, run_rerank: bool,
             truncation_lengths, thresholds: dict | None = None, dimensions=None, device="cpu",
             noise_factor: float = 2.0, search_pairs: bool = True) -> dict:
    """`diagnose_one` for the embedder and/or the reranker."""
    th = {"embedding_min_cosine_mean": 0.9999, "rerank_max_mean_abs_diff": 0.001, "rerank_min_kendall_tau_b": 0.99,
          **(thresholds or {})}
    common = dict(thresholds=th, truncation_lengths=truncation_lengths, device=device, noise_factor=noise_factor,
                  search_pairs=search_pairs)
    result = {}
    if run_embedding:
        result["embedding"] = diagnose_one("embedding", corpus, emb_dir, er, api_emb, dimensions=dimensions, **common)
    if run_rerank:
        result["rerank"] = diagnose_one("rerank", corpus, rr_dir, rr, api_rr, **common)
    return result


def compare(*, input, output, params, wildcards, threads):
    from leverplus.metrics.agreement import calibration_cv, embedding_agreement, rerank_agreement, task_quality

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
                             run_rerank=run_r, truncation_lengths=d["truncation_lengths"], thresholds=th,
                             dimensions=params["recipes"]["embedder"].get("dimensions"), device=_device_spec(params),
                             noise_factor=d.get("noise_factor", 2.0), search_pairs=d.get("pairs", True))
    quality = task_quality(corpus, {"local": lr, "api": ar}, k=m["k"], **boot)
    out = {"dataset": wildcards.get("cons_set", wildcards.get("dataset")), "embedding": emb, "rerank": rer, "calibration": cal,
           "task_quality": quality,
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
