"""Tables of docs/methods.md section 6: per-run metrics aggregated over seeds.

Each row is one dataset x model x regime x estimator; each metric gets its mean and standard deviation
over seeds, the number of seeds, and a 95% bootstrap interval over examples: for every bootstrap
resample (the same example indices in every seed, see labeldist.metrics.bootstrap_indices) the metric is
averaged over seeds, and the interval is the 2.5 and 97.5 percentiles of those averages.
Rendered as CSV (machine-readable), Markdown and HTML (the report).
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import DataError
from .artifacts.metrics import KEYS, read_metric_files
from .artifacts.tables import write_table_csv
from .io import atomic_path
from .metrics import ALIGNMENT_METRICS, CLASSIFICATION_METRICS, GENERATION_COUNTS

log = logging.getLogger(__name__)

TABLE_METRICS = {"alignment": ALIGNMENT_METRICS, "classification": CLASSIFICATION_METRICS}
METRIC_NAMES = {
    "l1": "L1", "mse": "MSE (Brier)", "bce": "soft BCE", "nll": "NLL of gold", "ece_p_ref": "ECE vs p_ref",
    "f1_micro": "micro F1", "f1_macro": "macro F1", "f1_example": "example F1",
    "jaccard_micro": "micro Jaccard", "jaccard_macro": "macro Jaccard", "jaccard_example": "example Jaccard",
    "auc_micro": "micro AUC", "ece": "ECE",
}
CI_LEVEL = 95.0


def metric_label(metric: str) -> str:
    """Return the display name of a metric column (e.g. 'micro F1 (tuned t)')."""
    if metric.endswith("_tuned"):
        return f"{METRIC_NAMES.get(metric[:-6], metric[:-6])} (tuned t)"
    return METRIC_NAMES.get(metric, metric)


def seed_rows(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Return one row per metrics file: keys, seed, p_ref_source, task, n_examples, tuned_threshold,
    every scalar metric and the generation counts (gen_* columns, NaN where the estimator reads none).
    """
    rows = []
    for res in results:
        row = {k: res[k] for k in [*KEYS, "seed"]}
        row.update(p_ref_source=res.get("p_ref_source"), task=res.get("task"),
                   n_examples=res.get("n_examples"), tuned_threshold=res.get("tuned_threshold"))
        for group in ("alignment", "classification"):
            row.update({k: (math.nan if v is None else v) for k, v in res[group].items()})
        gen = res.get("generation") or {}
        row.update({f"gen_{k}": gen.get(k, math.nan) for k in GENERATION_COUNTS})
        rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_interval(samples: Sequence[Sequence[float | None]], level: float = CI_LEVEL) \
        -> tuple[float, float]:
    """Return the percentile interval of the seed-mean over bootstrap resamples.

    `samples`: one list of resample values per seed (equal lengths; None = undefined, ignored).
    Returns (NaN, NaN) when there are no resamples.
    """
    arr = np.array([[math.nan if v is None else v for v in s] for s in samples], dtype=float)
    if arr.size == 0 or arr.shape[1] == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples are expected (e.g. AUC)
        per_resample = np.nanmean(arr, axis=0)
        if np.isnan(per_resample).all():
            return math.nan, math.nan
        low, high = np.nanpercentile(per_resample, [(100 - level) / 2, 100 - (100 - level) / 2])
    return float(low), float(high)


def _ordered(frame: pd.DataFrame, order: Mapping[str, Sequence[str]] | None) -> pd.DataFrame:
    """Return the rows sorted by KEYS, each in the given order (unlisted values last, alphabetically)."""
    order = order or {}

    def rank(key: str, value: Any) -> tuple[int, str]:
        listed = list(order.get(key, []))
        return (listed.index(value) if value in listed else len(listed), str(value))

    idx = sorted(range(len(frame)), key=lambda i: tuple(rank(k, frame[k].iloc[i]) for k in KEYS))
    return frame.iloc[idx].reset_index(drop=True)


def summarise(results: Sequence[Mapping[str, Any]], metrics: Sequence[str],
              order: Mapping[str, Sequence[str]] | None = None, counts: bool = False) -> pd.DataFrame:
    """Return one row per dataset x model x regime x estimator with, per metric, `{m}_mean`, `{m}_std`
    (over seeds; NaN with one seed), `{m}_ci_low`, `{m}_ci_high` (bootstrap over examples), plus
    p_ref_source, task, n_seeds, n_examples and, when `counts`, tuned_threshold_mean and the generation
    counts summed over seeds (gen_*; empty where the estimator reads no generation file).
    """
    if not results:
        raise DataError("metrics", "no metrics files to tabulate")
    per_seed = seed_rows(results)
    rows = []
    for key, group in per_seed.groupby(KEYS, sort=False):
        members = [r for r in results if tuple(r[k] for k in KEYS) == key]
        seeds = sorted(group["seed"])
        if len(set(seeds)) != len(seeds):
            raise DataError(members[0]["_path"] if "_path" in members[0] else "metrics",
                            f"seed listed twice for {dict(zip(KEYS, key))}", field="seed")
        if len({r.get("ids_sha1") for r in members}) > 1:
            log.warning("%s: seeds were scored on different example sets; bootstrap resamples are not "
                        "paired across seeds", dict(zip(KEYS, key)))
        row: dict[str, Any] = dict(zip(KEYS, key))
        row.update(p_ref_source=group["p_ref_source"].iloc[0], task=group["task"].iloc[0],
                   n_seeds=len(seeds), n_examples=int(group["n_examples"].max()))
        for metric in metrics:
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = float(values.mean()) if values.notna().any() else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan
            boots = [r.get("bootstrap", {}).get("values", {}).get(metric, []) for r in members]
            lengths = {len(b) for b in boots}
            if len(lengths) > 1:
                raise DataError(members[0].get("_path", "metrics"),
                                f"bootstrap sizes differ across seeds: {sorted(lengths)}", field="bootstrap")
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = bootstrap_interval(boots)
        if counts:
            row["tuned_threshold_mean"] = float(group["tuned_threshold"].astype(float).mean())
            for name in GENERATION_COUNTS:
                col = group[f"gen_{name}"]
                row[f"gen_{name}"] = int(col.sum()) if col.notna().all() else pd.NA
        rows.append(row)
    return _ordered(pd.DataFrame(rows), order)


# ---- renderings ---------------------------------------------------------------------------------------
def _cell(mean: float, std: float, low: float, high: float) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    text = f"{mean:.3f}"
    if not pd.isna(std):
        text += f" ± {std:.3f}"
    if not pd.isna(low):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def display_frame(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Return the human-readable table: keys, p_ref source (gold flagged), seeds, n, then one
    'mean ± std [CI low, CI high]' cell per metric, the generation counts where present, and, when some
    prompt had its query text shortened to fit the model's context, how many (labeldist.context).
    """
    out = pd.DataFrame({k: table[k] for k in KEYS})
    out["p_ref source"] = [
        f"{src} (alignment not meaningful)" if src == "gold" else src for src in table["p_ref_source"]
    ]
    out["seeds"] = table["n_seeds"]
    out["n"] = table["n_examples"]
    for m in metrics:
        out[metric_label(m)] = [
            _cell(*vals) for vals in zip(table[f"{m}_mean"], table[f"{m}_std"],
                                         table[f"{m}_ci_low"], table[f"{m}_ci_high"])
        ]
    if "tuned_threshold_mean" in table:
        out["tuned t"] = [f"{t:.2f}" for t in table["tuned_threshold_mean"]]
    if "gen_n_outputs" in table:
        out["outputs: no label / unknown / repeated / max tokens"] = [
            "—" if pd.isna(r["gen_n_outputs"]) else
            f"{r['gen_no_label']} / {r['gen_unknown']} / {r['gen_repeated']} / {r['gen_hit_max_tokens']} "
            f"of {r['gen_n_outputs']}"
            for _, r in table.iterrows()
        ]
    if "gen_truncated" in table and (pd.to_numeric(table["gen_truncated"], errors="coerce").fillna(0) > 0).any():
        # only where some prompt was shortened: for data that fits, the table is what it always was
        out["prompts truncated to fit the context"] = [
            "—" if pd.isna(r["gen_n_outputs"]) or pd.isna(r["gen_truncated"]) else
            f"{r['gen_truncated']} of {r['gen_n_outputs']}"
            for _, r in table.iterrows()
        ]
    return out


def to_markdown(display: pd.DataFrame, title: str, note: str = "") -> str:
    """Return a GitHub-flavoured Markdown table of a display frame, under a heading.

    Hand-written: pandas' to_markdown needs `tabulate`, which the pinned environment does not carry.
    """
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    return "\n".join(lines) + "\n" + markdown_table(display)


def markdown_table(display: pd.DataFrame) -> str:
    """Return the rows of a display frame as a GitHub-flavoured Markdown table (no heading)."""
    def esc(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in display.columns) + " |",
             "|" + "|".join("---" for _ in display.columns) + "|"]
    for row in display.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_html(display: pd.DataFrame, title: str, note: str = "") -> str:
    """Return a standalone HTML page holding the display frame (pandas to_html) under a title."""
    body = display.to_html(index=False, border=0, classes="metrics", na_rep="n/a", escape=True)
    style = ("body{font-family:sans-serif;font-size:13px} table.metrics{border-collapse:collapse}"
             "table.metrics th,table.metrics td{padding:3px 8px;border-bottom:1px solid #ddd;"
             "text-align:left;white-space:nowrap}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h2>{html.escape(title)}</h2>\n"
            f"<p>{html.escape(note)}</p>\n{body}\n</body></html>\n")


TITLES = {
    "alignment": ("Alignment of q with p_ref",
                  "Mean over L labels (none excluded) and examples; lower is better. Cells: mean ± std "
                  "over seeds [95% bootstrap interval over examples]. Rows whose p_ref source is 'gold' "
                  "have no annotator data: p_ref is the gold set, so alignment there only restates accuracy."),
    "classification": ("Classification after thresholding q",
                       "F1 and Jaccard at the configured threshold and at a threshold tuned on the dev subset "
                       "(micro F1), micro ROC-AUC and ECE against gold. Cells: mean ± std over seeds "
                       "[95% bootstrap interval over examples]. Generation counts are summed over seeds "
                       "(outputs with no label, unknown labels, repeated labels, hitting max_new_tokens)."),
}


def write_table(metric_paths: Iterable[str | Path], kind: str, csv: str | Path, md: str | Path,
                html_path: str | Path, order: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Aggregate metrics files into the `kind` table ('alignment' or 'classification'), write it as
    CSV, Markdown and HTML atomically, and return the aggregated frame.
    """
    metrics = TABLE_METRICS[kind]
    table = summarise(read_metric_files(metric_paths), metrics, order, counts=(kind == "classification"))
    title, note = TITLES[kind]
    display = display_frame(table, metrics)
    write_table_csv(csv, table)
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(display, title, note), encoding="utf-8")
    with atomic_path(html_path) as tmp:
        tmp.write_text(to_html(display, title, note), encoding="utf-8")
    return table


# ---- the README's headline table ---------------------------------------------------------------------
HEADLINE_METRICS = [("l1", "L1 ↓"), ("bce", "soft BCE ↓"), ("f1_micro_tuned", "F1 ↑"), ("auc_micro", "AUC ↑")]


def _metric_cells(row: pd.DataFrame, metrics: Sequence[tuple[str, str]]) -> list[str]:
    """The formatted means of `metrics` of a one-row frame (empty cells for a missing row or value)."""
    values = [row[f"{m}_mean"].iloc[0] if len(row) else math.nan for m, _ in metrics]
    return ["" if pd.isna(v) else f"{v:.3f}" for v in values]


def _markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def headline_markdown(alignment: pd.DataFrame, classification: pd.DataFrame, regime: str = "base") -> str:
    """Return the headline table as Markdown: per dataset, one row per estimator and, per model, L1 and
    soft BCE to p_ref, micro F1 at the dev-tuned threshold and micro ROC-AUC (means over seeds) in
    `regime`, rows in order of the best L1 any model reached. Datasets whose p_ref is the gold set show
    F1 and AUC only."""
    merged = alignment.merge(classification, on=KEYS, suffixes=("", "_c"))
    merged = merged[merged["regime"] == regime]
    blocks = []
    for dataset, frame in merged.groupby("dataset", sort=False):
        models = list(dict.fromkeys(frame["model"]))
        gold = (frame["p_ref_source"] == "gold").all()
        metrics = [(m, label) for m, label in HEADLINE_METRICS if not (gold and m in ("l1", "bce"))]
        columns = ["estimator"] + [f"{model}: {label}" for model in models for _, label in metrics]
        best = frame.groupby("estimator", sort=False)[f"{metrics[0][0]}_mean"]
        best = best.min() if metrics[0][0] in ("l1", "bce") else -best.max()
        rows = [[estimator] + [cell for model in models for cell in _metric_cells(
                    frame[(frame["model"] == model) & (frame["estimator"] == estimator)], metrics)]
                for estimator in best.sort_values(kind="stable").index]
        n = int(frame["n_examples"].max())
        seeds = int(frame["n_seeds"].max())
        source = "gold labels only (no annotator data)" if gold else f"p_ref from {frame['p_ref_source'].iloc[0]}"
        blocks.append(f"**{dataset}** ({source}; {n} test examples, {seeds} seed(s), {regime} regime)\n\n"
                      + _markdown_table(columns, rows))
        blocks += regime_blocks(alignment.merge(classification, on=KEYS, suffixes=("", "_c")), dataset, metrics)
    return "\n\n".join(blocks) + "\n"


def regime_blocks(merged: pd.DataFrame, dataset: str, metrics: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown blocks comparing the regimes of each model of `dataset` that ran more than one (base, sft,
    rl side by side: one group of `metrics` per regime, one row per estimator the finetuned runs share
    with base, in the order of base's first metric)."""
    blocks = []
    frame = merged[merged["dataset"] == dataset]
    for model, runs in frame.groupby("model", sort=False):
        regimes = list(dict.fromkeys(runs["regime"]))
        if len(regimes) < 2:
            continue
        shared = set.intersection(*(set(runs.loc[runs["regime"] == r, "estimator"]) for r in regimes))
        key = f"{metrics[0][0]}_mean"
        first = runs[(runs["regime"] == regimes[0]) & runs["estimator"].isin(shared)]
        order = first.sort_values(key, ascending=metrics[0][0] in ("l1", "bce"), kind="stable")["estimator"]
        columns = ["estimator"] + [f"{r}: {label}" for r in regimes for _, label in metrics]
        rows = [[estimator] + [cell for r in regimes for cell in _metric_cells(
                    runs[(runs["regime"] == r) & (runs["estimator"] == estimator)], metrics)]
                for estimator in order]
        blocks.append(f"**{dataset} · {model} by regime** ({', '.join(regimes)}; the estimators every regime "
                      "ran)\n\n" + _markdown_table(columns, rows))
    return blocks


def write_headline(alignment: pd.DataFrame, classification: pd.DataFrame, path: str | Path) -> None:
    """Write the headline Markdown (headline_markdown) atomically to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(headline_markdown(alignment, classification), encoding="utf-8")


def update_readme(readme: str | Path, source: str | Path, block: str = "headline") -> bool:
    """Replace the block between `<!-- {block}:start -->` and `<!-- {block}:end -->` in `readme` by the
    file `source`'s content; return True when the README changed (DataError when the markers are
    missing)."""
    start_marker, end_marker = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = Path(readme).read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise DataError(readme, f"markers {start_marker} ... {end_marker} not found")
    body = Path(source).read_text(encoding="utf-8")
    new = text[: start + len(start_marker)] + "\n" + body + text[end:]
    if new == text:
        return False
    with atomic_path(readme) as tmp:
        tmp.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m labeldist.tables README.md headline=results/tables/headline.md ...
    import sys

    for arg in sys.argv[2:]:
        name, _, path = arg.rpartition("=")
        name = name or "headline"
        changed = update_readme(sys.argv[1], path, name)
        print(f"{sys.argv[1]}: {name} {'updated' if changed else 'unchanged'} from {path}")
