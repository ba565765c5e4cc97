from leverplus.stages.consistency import embed_rerank_local
from leverplus.stages.runner import run_stage

run_stage(snakemake, embed_rerank_local)  # noqa: F821 (snakemake is injected)
