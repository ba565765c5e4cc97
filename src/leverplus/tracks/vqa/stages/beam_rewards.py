"""Stage: the GRPO groups of v3/v4 (every kept beam + random pool sequences), each scored by InfoScore and by the VQA
accuracy of the generated answer; resumable per anchor (``leverplus.tracks.vqa.icd.rl_rewards``)."""
from __future__ import annotations

import pandas as pd

from leverplus.core.download import file_digest
from leverplus.tracks.vqa.data.records import examples, load_split
from leverplus.tracks.vqa.icd.rl_rewards import run_beam_rewards
from leverplus.models.generation import GenerationSettings
from leverplus.tracks.vqa.stages.common import dataset_dir, load_model, prompt_settings


def beam_rewards(*, input, output, params, wildcards, threads):
    train = load_split(dataset_dir(input.train), "train")
    by_id = dict(zip(train["id"], examples(train)))
    answers = {str(i): [str(a) for a in ans] for i, ans in zip(train["id"], train["answers"])}
    model = load_model(params["model"], input.model, prompt_settings(params))
    m = params["metrics"]
    group = params["group"]
    pools = pd.read_parquet(input.pools)
    beam = pd.read_parquet(input.beam)
    per_anchor = int(group["beams"] or beam.groupby("anchor").size().max()) + int(group["random"])
    run_beam_rewards(
        model,
        beam,
        by_id,
        answers,
        output[0],
        generation=GenerationSettings.from_config(params["generation"]),
        pools={str(a): [str(c) for c in cands] for a, cands in zip(pools["anchor"], pools["candidates"])},
        group=group,
        shot_num=int(params["shot_num"]),
        order=params["order"],
        seed=int(params["seed"]),
        vqa_eval=m["vqa_eval"],
        stem=bool(m["vqa_stem"]),
        chunk=max(1, int(params["model"].get("batch_size", 16)) // max(1, per_anchor)),
        # every param (model, prompt…) and the input files' bytes: a resume never mixes settings
        settings={"params": params, "beam_sha256": file_digest(input.beam), "pools_sha256": file_digest(input.pools)},
    )
