from leverplus.stages.consistency import compare
from leverplus.stages.runner import run_stage

run_stage(snakemake, compare)  # noqa: F821 (snakemake is injected)
