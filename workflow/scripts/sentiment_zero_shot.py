from leverplus.stages.runner import run_stage
from leverplus.stages.sentiment import zero_shot

run_stage(snakemake, zero_shot, gpu=True)  # noqa: F821 (snakemake is injected)
