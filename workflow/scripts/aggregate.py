from leverplus.tracks.vqa.stages.aggregate import aggregate
from leverplus.core.runner import run_stage

run_stage(snakemake, aggregate, gpu=False)  # noqa: F821 (snakemake is injected)
