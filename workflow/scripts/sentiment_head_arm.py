from leverplus.stages.runner import run_stage
from leverplus.stages.sentiment import head_arm

run_stage(snakemake, head_arm, gpu=True)  # noqa: F821 (snakemake is injected)
