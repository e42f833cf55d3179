"""Wiring only: generations, metrics, labels.json files and the sft/rl model folders ->
tables/findings.{csv,md,html}, findings_headline.md and finetuning.md (labeldist.findings)."""

from labeldist.findings import Context, Settings, write_findings
from labeldist.plots import read_label_sets
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (the object Snakemake injects)
    inp, out = snakemake.input, snakemake.output  # noqa: F821
    write_findings(
        generations=list(inp.generations),
        icl_generations=list(inp.icl_generations),
        metric_paths=list(inp.metrics),
        label_sets=read_label_sets(list(inp.labels)),
        ctx=Context(**snakemake.params.context),  # noqa: F821
        settings=Settings.from_config(snakemake.params.settings),  # noqa: F821
        csv=out.csv,
        md=out.md,
        html=out.html,
        headline=out.headline,
        tuned_models=list(inp.tuned_models),
        finetuning=out.finetuning,
    )
