from leverplus.tracks.vqa.stages.infer import infer
from leverplus.stages.runner import run_stage

run_stage(snakemake, infer, gpu=True)  # noqa: F821 (snakemake is injected)
