from leverplus.tracks.mt.stages import meta_evaluate
from leverplus.core.runner import run_stage

run_stage(snakemake, meta_evaluate, gpu=False)  # noqa: F821 (snakemake is injected)
