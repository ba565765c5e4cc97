from leverplus.tracks.mt.stages import download
from leverplus.core.runner import run_stage

run_stage(snakemake, download, gpu=False)  # noqa: F821 (snakemake is injected)
