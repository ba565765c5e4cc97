from leverplus.tracks.vqa.stages.infer import baseline
from leverplus.core.runner import run_stage

run_stage(snakemake, baseline, gpu=True)  # noqa: F821 (snakemake is injected)
