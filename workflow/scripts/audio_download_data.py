from leverplus.tracks.audio.stages import download_data
from leverplus.stages.runner import run_stage

run_stage(snakemake, download_data)  # noqa: F821
