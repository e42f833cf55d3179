# labeldist: per-label confidence of LLM multi-label classifiers vs. annotator disagreement.
# Thin entry point: configuration, validation (common.smk), one include per stage, and `rule all`.
from snakemake.utils import min_version

min_version("9.0")

# The embedded default, unless config files are given with --configfile: those then define the whole
# configuration (Snakemake would otherwise merge them into config.yaml, adding its synthetic dataset
# and tiny model to e.g. config/study.yaml's grid).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/demux.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/findings.smk"


rule all:
    default_target: True
    input:
        final_targets(),
