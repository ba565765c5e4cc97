from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import aggregate

run_stage(snakemake, aggregate)  # noqa: F821 (snakemake is injected)
