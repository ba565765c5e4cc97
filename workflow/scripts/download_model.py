from leverplus.tracks.vqa.stages.download import download_model
from leverplus.core.runner import run_stage

run_stage(snakemake, download_model, gpu=False)  # noqa: F821 (snakemake is injected)
