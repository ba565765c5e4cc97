from leverplus.tracks.audio.stages import download_data
from leverplus.core.runner import run_stage

run_stage(snakemake, download_data)  # noqa: F821
