from leverplus.tracks.mt.stages import judge_model
from leverplus.core.runner import run_stage

run_stage(snakemake, judge_model, gpu=False)  # noqa: F821 (snakemake is injected)
