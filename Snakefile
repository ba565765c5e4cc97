# Lever-Plus: learn to select in-context demonstrations, measure how much they help.
# Default target: the demo (config/config.yaml). Real runs: --configfile config/okvqa.yaml results/okvqa/v2_lora.json
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/vqa.smk"


rule all:
    default_target: True
    input:
        all_targets(),
