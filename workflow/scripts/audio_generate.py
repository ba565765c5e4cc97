from leverplus.tracks.audio.stages import generate_local
from leverplus.core.runner import run_stage

run_stage(snakemake, generate_local, gpu=snakemake.rule != "audio_edge_infer")  # noqa: F821
