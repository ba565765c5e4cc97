from leverplus.tracks.consistency.stages import embed_rerank_api
from leverplus.core.runner import run_stage

# a GPU slot only when the rule claims the gpu resource (consistency.compute.gpu)
run_stage(snakemake, embed_rerank_api, gpu=snakemake.resources.get("gpu", 0) > 0)  # noqa: F821 (snakemake is injected)
