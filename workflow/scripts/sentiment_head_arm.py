from leverplus.core.runner import run_stage
from leverplus.tracks.sentiment.stages import head_arm

# a GPU slot only when the rule claims the gpu resource (models.<name>.gpu)
run_stage(snakemake, head_arm, gpu=snakemake.resources.get("gpu", 0) > 0)  # noqa: F821 (snakemake is injected)
