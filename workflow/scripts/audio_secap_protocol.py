from leverplus.tracks.audio.stages import secap_protocol_run
from leverplus.core.runner import run_stage

run_stage(snakemake, secap_protocol_run)  # noqa: F821
