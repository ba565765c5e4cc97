from leverplus.tracks.audio.stages import cascade
from leverplus.core.runner import run_stage

run_stage(snakemake, cascade, gpu=True)  # noqa: F821
