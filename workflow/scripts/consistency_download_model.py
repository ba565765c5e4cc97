from leverplus.tracks.consistency.stages import download_model
from leverplus.core.runner import run_stage

run_stage(snakemake, download_model)  # noqa: F821 (snakemake is injected)
