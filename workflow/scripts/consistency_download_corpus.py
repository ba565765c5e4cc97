from leverplus.tracks.consistency.stages import download_corpus
from leverplus.core.runner import run_stage

run_stage(snakemake, download_corpus)  # noqa: F821 (snakemake is injected)
