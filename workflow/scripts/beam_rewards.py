from leverplus.tracks.vqa.stages.beam_rewards import beam_rewards
from leverplus.core.runner import run_stage

run_stage(snakemake, beam_rewards, gpu=True)  # noqa: F821 (snakemake is injected)
