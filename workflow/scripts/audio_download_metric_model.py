from leverplus.stages.audio import download_metric_model
from leverplus.stages.runner import run_stage

run_stage(snakemake, download_metric_model)  # noqa: F821
