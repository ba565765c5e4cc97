from leverplus.tracks.mt.stages import score
from leverplus.core.runner import run_stage

run_stage(snakemake, score, gpu=False)  # noqa: F821 (snakemake is injected)
