"""Stages: ICL inference with a trained selector, and the retrieval baselines.

Pools (documented in the README): a selector picks a val query's demonstrations from
`infer.pool.kind = all` — the whole train set — or `retrieval` — the `k` train examples most similar to that query
by `infer.pool.by` (CLIP image or question-text cosine). Selections come back in selection order and are laid out
in prompt order by the beam search's `construct_order` (`left`: the last pick is first in the prompt). Retrieval
baselines put the most similar demonstration next to the query.

Answers: the adapter is built with config `prompt` (the same instruction the beam search scored with) and decodes
with the explicit settings of `infer.generation`; both go into the results file (`generation`,
`generation_signature`).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from leverplus.tracks.vqa.data.records import examples, load_split
from leverplus.tracks.vqa.icd.features import Features, load_features
from leverplus.tracks.vqa.icd.retrieval import oracle_choice, random_choice, random_from_pools, retrieve
from leverplus.core.io import read_json, write_json, write_parquet
from leverplus.metrics.vqa import score_vqa
from leverplus.metrics.signature import make_signature, package_version
from leverplus.models.generation import GenerationSettings
from leverplus.tracks.vqa.stages.common import dataset_dir, load_model, prompt_settings


def _subset(feats: Features, ids: list[str]) -> Features:
    index = feats.index_of()
    rows = [index[i] for i in ids]
    return Features(ids=list(ids), image=feats.image[rows], text=feats.text[rows])


def _val(input, params):
    val = load_split(dataset_dir(input.val), "val")
    limit = params["infer"].get("limit")
    if limit:
        val = val.head(limit).reset_index(drop=True)
    return val


def _answer_and_score(input, output, params, val, train, prompt_ids, meta, start=None):
    by_id = dict(zip(train["id"], examples(train)))
    queries = examples(val)
    seqs = [[by_id[i] for i in ids] for ids in prompt_ids]
    model = load_model(params["model"], input.model, prompt_settings(params))
    generation = GenerationSettings.from_config(params["infer"].get("generation"))
    preds = model.generate(seqs, queries, generation)
    meta = {**meta, **generation_record(params["model"]["adapter"], model, generation)}
    table = pd.DataFrame({"id": val["id"], "prediction": preds, "icd_ids": prompt_ids, "shot": meta["shot"]})
    write_parquet(output.predictions, table)
    m = params["metrics"]
    score = score_vqa(
        table[["id", "prediction"]], val[["id", "answers"]], stem=m["vqa_stem"], vqa_eval=m.get("vqa_eval", "official"),
        n_resamples=m["n_resamples"], seed=m["seed"],
    )
    cost = {"wall_s": round(time.perf_counter() - start, 3), "threads": torch.get_num_threads(),
            "queries": len(val)} if start is not None else None
    write_json(output.score, {**meta, **score, "predictions": Path(output.predictions).name,
                              **({"cost": cost} if cost else {})})


def generation_record(adapter: str, model, generation: GenerationSettings) -> dict:
    """How the answers were produced, for the results file: the adapter's prompt format, instruction and answer
    post-processing, every decoding setting, and the same as one signature string."""
    settings = {
        "adapter": adapter,
        **model.prompt_settings(),
        **generation.as_dict(),
        "transformers": package_version("transformers"),
    }
    return {"generation": settings, "generation_signature": make_signature("generation", settings)}


def inference_pools(pool: dict, val_f: Features, train_f: Features) -> list[list[str]]:
    """Each val query's candidate ids under `infer.pool` (see the module docstring)."""
    if pool["kind"] == "all":
        return [list(train_f.ids)] * len(val_f.ids)
    return retrieve(pool["by"], val_f, train_f, pool["k"])


def infer(*, input, output, params, wildcards, threads):
    from leverplus.tracks.vqa.icd.selectors import load_selector

    start = time.perf_counter()  # the results file records what this job cost (`cost.wall_s`)
    train = load_split(dataset_dir(input.train), "train")
    val = _val(input, params)
    shot = int(wildcards["shot"])
    train_f = load_features(input.train_features)
    val_f = _subset(load_features(input.val_features), list(val["id"]))
    pool = params["infer"]["pool"]
    pool_ids = inference_pools(pool, val_f, train_f)
    selector_dir = Path(input.selector).parent
    uses_encoder = "encoder_dir" in read_json(selector_dir / "selector.json").get("init", {})
    selector = load_selector(selector_dir, encoder_dir=input.encoder if uses_encoder else None)
    picks = selector.select(
        val_f, pool_ids, train_f, shot, batch_size=params["infer"]["batch_size"], query_table=val, pool_table=train
    )
    prompt_ids = [list(reversed(p)) if params["order"] == "left" else list(p) for p in picks]
    meta = {
        "kind": "selector",
        "version": wildcards["version"],
        "model": wildcards["model"],
        "sampler": wildcards["sampler"],
        "sample_num": int(wildcards["sample_num"]),
        **({"seed": int(wildcards["seed"])} if "seed" in wildcards else {}),  # the selector's training seed
        "shot": shot,
        "pool": pool,
        "construct_order": params["order"],
    }
    _answer_and_score(input, output, params, val, train, prompt_ids, meta, start)


def baseline(*, input, output, params, wildcards, threads):
    start = time.perf_counter()
    train = load_split(dataset_dir(input.train), "train")
    val = _val(input, params)
    retriever = wildcards.get("retriever", "zero_shot")
    shot = int(wildcards.get("shot", 0))
    train_f = load_features(input.train_features)
    val_f = _subset(load_features(input.val_features), list(val["id"]))
    if retriever == "zero_shot":
        picks = [[] for _ in range(len(val))]
    elif retriever == "random":
        picks = random_choice(val_f, train_f, shot, int(params["seed"]))
    elif retriever == "pool_random":  # the selectors' own pool, picked at random: what a selector adds beyond it
        picks = random_from_pools(inference_pools(params["pool"], val_f, train_f), shot, list(val_f.ids), int(params["seed"]))
    elif retriever == "oracle":  # reads the query's answers: the headroom any selector could reach, not a method
        by_id = dict(zip(train["id"], train["answers"]))
        picks = oracle_choice(val_f, train_f, list(val["answers"]), [by_id[i] for i in train_f.ids], shot)
    else:
        picks = retrieve(retriever, val_f, train_f, shot)
    prompt_ids = [list(reversed(p)) for p in picks]  # most similar next to the query
    meta = {"kind": "baseline", "retriever": retriever, "model": wildcards["model"], "shot": shot}
    if retriever == "pool_random":
        meta["pool"] = params["pool"]
    _answer_and_score(input, output, params, val, train, prompt_ids, meta, start)
