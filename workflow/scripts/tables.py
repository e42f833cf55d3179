"""Thin wrapper: the alignment and classification tables (labeldist.tables.write_table) and the
README's headline table (labeldist.tables.write_headline)."""

from labeldist.runlog import rule_log
from labeldist.tables import write_headline, write_table

with rule_log(snakemake.log[0]):  # noqa: F821 (the object Snakemake injects)
    out = snakemake.output
    frames = {
        kind: write_table(list(snakemake.input), kind, csv=out[f"{kind}_csv"], md=out[f"{kind}_md"],
                          html_path=out[f"{kind}_html"], order=snakemake.params.order)
        for kind in ("alignment", "classification")
    }
    write_headline(frames["alignment"], frames["classification"], out["headline"])
