from leverplus.stages.audio import cascade
from leverplus.stages.runner import run_stage

run_stage(snakemake, cascade, gpu=True)  # noqa: F821
