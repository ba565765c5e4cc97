"""Stage: end-to-end rewards of the gathered beams (v4's reward), resumable per anchor."""
from __future__ import annotations

import pandas as pd

from ..data.download import file_digest
from ..data.records import examples, load_split
from ..icd.rl_rewards import run_beam_rewards
from ..models.generation import GenerationSettings
from .common import dataset_dir, load_model, prompt_settings


def beam_rewards(*, input, output, params, wildcards, threads):
    train = load_split(dataset_dir(input.train), "train")
    by_id = dict(zip(train["id"], examples(train)))
    answers = {str(i): [str(a) for a in ans] for i, ans in zip(train["id"], train["answers"])}
    model = load_model(params["model"], input.model, prompt_settings(params))
    m = params["metrics"]
    run_beam_rewards(
        model,
        pd.read_parquet(input.beam),
        by_id,
        answers,
        output[0],
        generation=GenerationSettings.from_config(params["generation"]),
        beam_ranks=int(params["beam_ranks"]),
        vqa_eval=m["vqa_eval"],
        stem=bool(m["vqa_stem"]),
        chunk=max(1, int(params["model"].get("batch_size", 16)) // max(1, int(params["beam_ranks"]))),
        # every param (model, prompt…) and the beam file's bytes: a resume never mixes settings
        settings={"params": params, "beam_sha256": file_digest(input.beam)},
    )
