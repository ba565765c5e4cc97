from leverplus.tracks.vqa.stages.beam import candidates
from leverplus.core.runner import run_stage

run_stage(snakemake, candidates, gpu=False)  # noqa: F821 (snakemake is injected)
