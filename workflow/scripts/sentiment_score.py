from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import score

run_stage(snakemake, score)  # noqa: F821 (snakemake is injected)
