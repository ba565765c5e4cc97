from leverplus.tracks.audio.stages import generate_api
from leverplus.core.runner import run_stage

run_stage(snakemake, generate_api, gpu=snakemake.resources.get("gpu", 0) > 0)  # noqa: F821
