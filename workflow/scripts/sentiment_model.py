from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import model

run_stage(snakemake, model)  # noqa: F821 (snakemake is injected)
