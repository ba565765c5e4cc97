"""Stages: aggregate one selector version over the grid; compare the versions."""
from __future__ import annotations

from pathlib import Path

from leverplus.tracks.vqa.data.records import load_split
from leverplus.tracks.vqa.report.aggregate import aggregate as build


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
        selector_jsons=list(input.get("selectors", [])) if hasattr(input, "get") else None,
        out_training_png=getattr(output, "training", None),
    )


def compare_versions(*, input, output, params, wildcards, threads):
    from leverplus.tracks.vqa.report.versions import compare_versions as build

    build(
        dataset=wildcards["dataset"],
        pairs=[tuple(p) for p in params["pairs"]],
        infer_jsons=list(input.infer),
        baseline_jsons=list(getattr(input, "baselines", None) or []),
        val=load_split(Path("data") / wildcards["dataset"], "val"),
        out_json=output.json,
        out_md=output.md,
        metrics=params.get("metrics"),
        out_png=getattr(output, "png", None),
    )
