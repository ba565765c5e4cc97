from leverplus.tracks.mt.stages import aggregate
from leverplus.core.runner import run_stage

run_stage(snakemake, aggregate, gpu=False)  # noqa: F821 (snakemake is injected)
