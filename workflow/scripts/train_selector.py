from leverplus.tracks.vqa.stages.selector import train_selector
from leverplus.core.runner import run_stage

run_stage(snakemake, train_selector, gpu=True)  # noqa: F821 (snakemake is injected)
