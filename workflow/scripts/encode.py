from leverplus.tracks.vqa.stages.encode import encode
from leverplus.core.runner import run_stage

run_stage(snakemake, encode, gpu=True)  # noqa: F821 (snakemake is injected)
