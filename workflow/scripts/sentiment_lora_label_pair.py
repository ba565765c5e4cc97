from leverplus.stages.runner import run_stage
from leverplus.stages.sentiment import lora_label_pair

run_stage(snakemake, lora_label_pair, gpu=True)  # noqa: F821 (snakemake is injected)
