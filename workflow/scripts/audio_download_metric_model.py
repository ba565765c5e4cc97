from leverplus.tracks.audio.stages import download_metric_model
from leverplus.core.runner import run_stage

run_stage(snakemake, download_metric_model)  # noqa: F821
