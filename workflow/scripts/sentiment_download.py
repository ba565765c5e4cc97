from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import download

run_stage(snakemake, download)  # noqa: F821 (snakemake is injected)
