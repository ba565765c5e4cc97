"""Stage: train one selector version on the gathered beam-search data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from leverplus.tracks.vqa.data.records import load_split
from leverplus.tracks.vqa.icd.features import load_features
from leverplus.tracks.vqa.stages.common import dataset_dir


def train_selector(*, input, output, params, wildcards, threads):
    from leverplus.tracks.vqa.icd.selectors import train_selector as train

    stats = train(
        wildcards["version"],
        beam=pd.read_parquet(input.beam),
        pools=pd.read_parquet(input.pools),
        train_features=load_features(input.features),
        cfg=params["selector"],
        out_dir=Path(output.weights).parent,
        encoder_dir=input.encoder,
        train_table=load_split(dataset_dir(input.train), "train"),
        seed=int(params["seed"]),
        rewards=pd.read_parquet(rewards) if (rewards := getattr(input, "rewards", None)) else None,  # v4 only
    )
    print(stats)
