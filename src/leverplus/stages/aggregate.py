"""Stage: aggregate one selector version over the grid."""
from __future__ import annotations

from pathlib import Path

from ..data.records import load_split
from ..report.aggregate import aggregate as build


def aggregate(*, input, output, params, wildcards, threads):
    # the val split sits next to the beam data: data/{dataset}/
    val = load_split(Path("data") / wildcards["dataset"], "val")
    build(
        dataset=wildcards["dataset"],
        version=wildcards["version"],
        infer_jsons=list(input.infer),
        baseline_jsons=list(input.baselines),
        beam_tables=list(input.beams),
        val=val,
        out_json=output.json,
        out_md=output.md,
        out_png=output.png,
        out_parquet=output.parquet,
        metrics=params.get("metrics"),  # the config's metrics slice: n_resamples, seed, vqa_eval, vqa_stem
    )
