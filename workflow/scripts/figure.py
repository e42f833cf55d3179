"""Thin wrapper: one figure as PNG and PDF (labeldist.plots.render_figure)."""

from labeldist.plots import render_figure, save_figure
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (the object Snakemake injects)
    params = dict(snakemake.params.items())
    fig = render_figure(params.pop("figure"), dict(snakemake.input.items()), params)
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)
