# Lever-Plus: learn to select in-context demonstrations, measure how much they help.
# Default target: the demo (config/vqa_demo.yaml). config/config.yaml holds the real runs; the target selects the run:
#   snakemake --cores 8 results/okvqa/v2_lora.json   (overrides: --configfile, see config/config.yaml)
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"
configfile: "config/vqa_demo.yaml"
configfile: "config/mt_demo.yaml"
configfile: "config/consistency_demo.yaml"
configfile: "config/sentiment_demo.yaml"
configfile: "config/audio_demo.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/vqa.smk"
include: "rules/sentiment.smk"
include: "rules/audio.smk"
include: "rules/mt.smk"
include: "rules/consistency.smk"


rule all:
    default_target: True
    input:
        all_targets(),
