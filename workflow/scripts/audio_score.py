from leverplus.stages.audio import score_arm
from leverplus.stages.runner import run_stage

run_stage(snakemake, score_arm)  # noqa: F821
