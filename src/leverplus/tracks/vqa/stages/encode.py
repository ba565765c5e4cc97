"""Stage: encoder features of a split, computed once per dataset."""
from __future__ import annotations

from leverplus.tracks.vqa.data.records import load_split
from leverplus.tracks.vqa.icd.encode import encode_table
from leverplus.tracks.vqa.icd.features import save_features
from leverplus.tracks.vqa.stages.common import dataset_dir, device


def encode(*, input, output, params, wildcards, threads):
    table = load_split(dataset_dir(input.split), wildcards["split"])
    spec = params["encoder"]  # run_stage has parsed the canonical JSON
    feats = encode_table(table, input.encoder, device=device(), dtype=spec["dtype"])
    save_features(output[0], feats, meta={"encoder": wildcards["encoder"], "split": wildcards["split"]})
