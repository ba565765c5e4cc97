from leverplus.stages.mt import score
from leverplus.stages.runner import run_stage

run_stage(snakemake, score, gpu=False)  # noqa: F821 (snakemake is injected)
