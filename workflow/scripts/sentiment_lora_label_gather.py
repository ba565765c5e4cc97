from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import lora_label_gather

run_stage(snakemake, lora_label_gather)  # noqa: F821 (snakemake is injected)
