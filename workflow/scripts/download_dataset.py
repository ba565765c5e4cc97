from leverplus.tracks.vqa.stages.download import download_dataset
from leverplus.core.runner import run_stage

run_stage(snakemake, download_dataset, gpu=False)  # noqa: F821 (snakemake is injected)
