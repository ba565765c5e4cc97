"""Stages: candidate pools, sharded InfoScore beam search, gather."""
from __future__ import annotations

import pandas as pd

from leverplus.core.download import file_digest
from leverplus.tracks.vqa.data.records import examples, load_split
from leverplus.tracks.vqa.icd.features import load_features
from leverplus.tracks.vqa.icd.infoscore import run_shard, shard_of
from leverplus.tracks.vqa.icd.ranking import INFOSCORE_TOL
from leverplus.tracks.vqa.icd.samplers import build_pools
from leverplus.core.io import write_parquet
from leverplus.tracks.vqa.stages.common import dataset_dir, load_model, prompt_settings


def candidates(*, input, output, params, wildcards, threads):
    feats = load_features(input.features)
    s = params["sampling"]
    table = build_pools(wildcards["sampler"], feats, int(wildcards["sample_num"]), s["cand_num"], s["seed"])
    write_parquet(output[0], table)


def beam_search(*, input, output, params, wildcards, threads):
    beam = params["beam"]
    train = load_split(dataset_dir(input.train), "train")
    by_id = dict(zip(train["id"], examples(train)))
    pools = pd.read_parquet(input.pools)
    rows = shard_of(list(pools.itertuples(index=False)), int(wildcards["shard"]), beam["shards"])
    model = load_model(params["model"], input.model, prompt_settings(params))
    run_shard(
        model,
        [by_id[r.anchor] for r in rows],
        [[by_id[c] for c in r.candidates] for r in rows],
        output[0],
        beam_size=beam["beam_size"],
        shot_num=beam["shot_num"],
        order=beam["construct_order"],
        tie_tolerance=beam.get("tie_tolerance", INFOSCORE_TOL),
        # What else decides the rows (every param: beam and model slices…, the pool file's bytes, the shard),
        # hashed into the checkpoint so that a resume never mixes settings.
        settings={"params": params, "pools_sha256": file_digest(input.pools),
                  "shard": [int(wildcards["shard"]), beam["shards"]]},
    )


def gather_beam(*, input, output, params, wildcards, threads):
    write_parquet(output[0], pd.concat([pd.read_parquet(p) for p in input], ignore_index=True))
