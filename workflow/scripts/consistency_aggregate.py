from leverplus.tracks.consistency.report import aggregate
from leverplus.core.runner import run_stage

run_stage(snakemake, aggregate)  # noqa: F821 (snakemake is injected)
