from leverplus.tracks.vqa.stages.infer import infer
from leverplus.core.runner import run_stage

run_stage(snakemake, infer, gpu=True)  # noqa: F821 (snakemake is injected)
