from leverplus.tracks.vqa.stages.beam import gather_beam
from leverplus.core.runner import run_stage

run_stage(snakemake, gather_beam, gpu=False)  # noqa: F821 (snakemake is injected)
