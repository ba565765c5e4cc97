from leverplus.tracks.audio.stages import download_model
from leverplus.stages.runner import run_stage

run_stage(snakemake, download_model)  # noqa: F821
