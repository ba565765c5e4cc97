from leverplus.tracks.vqa.stages.aggregate import compare_versions
from leverplus.core.runner import run_stage

run_stage(snakemake, compare_versions, gpu=False)  # noqa: F821 (snakemake is injected)
