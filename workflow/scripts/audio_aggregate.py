from leverplus.tracks.audio.stages import aggregate
from leverplus.core.runner import run_stage

run_stage(snakemake, aggregate)  # noqa: F821
