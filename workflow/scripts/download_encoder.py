from leverplus.tracks.vqa.stages.download import download_encoder
from leverplus.core.runner import run_stage

run_stage(snakemake, download_encoder, gpu=False)  # noqa: F821 (snakemake is injected)
