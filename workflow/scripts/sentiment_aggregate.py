from leverplus.stages.runner import run_stage
from leverplus.stages.sentiment import aggregate

run_stage(snakemake, aggregate)  # noqa: F821 (snakemake is injected)
