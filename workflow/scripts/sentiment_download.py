from leverplus.stages.runner import run_stage
from leverplus.stages.sentiment import download

run_stage(snakemake, download)  # noqa: F821 (snakemake is injected)
