from leverplus.tracks.vqa.stages.beam import beam_search
from leverplus.core.runner import run_stage

run_stage(snakemake, beam_search, gpu=True)  # noqa: F821 (snakemake is injected)
