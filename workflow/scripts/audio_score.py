from leverplus.tracks.audio.stages import score_arms
from leverplus.core.runner import run_stage

run_stage(snakemake, score_arms)  # noqa: F821
