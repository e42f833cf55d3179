"""Figures of docs/methods.md section 7 (seaborn/matplotlib), one function per figure; and the findings
figure (section 8), which the findings stage draws.

`plot_*` functions take tidy frames (from labeldist.analysis, labeldist.metrics or labeldist.tables)
and return a matplotlib Figure. Facets are built only for combinations that have data (a `panel`
column with `col_wrap`), so no panel is empty; what had no data is named in a footnote instead.
Legends sit outside the axes. `render_figure(name, inputs, params)` reads a figure's input files
and draws it; `save_figure` writes PNG and PDF atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from . import analysis  # noqa: E402
from .artifacts.estimates import read_layer_estimates  # noqa: E402
from .artifacts import paths as layout  # noqa: E402
from .artifacts.generations import read_generations  # noqa: E402
from .artifacts.labels import LabelSet, read_label_set  # noqa: E402
from .artifacts.metrics import read_metric_files  # noqa: E402
from .artifacts.tables import TRAINING_LOG, read_table_csv, read_training_log  # noqa: E402
from .config import ESTIMATOR_FAMILIES, ESTIMATOR_FAMILY, REGIMES  # noqa: E402
from .errors import DataError  # noqa: E402
from .io import atomic_path  # noqa: E402
from .metrics import metrics_by_layer, read_reference  # noqa: E402
from .tables import metric_label  # noqa: E402

REGIME_PALETTE = dict(zip(REGIMES, sns.color_palette("colorblind", 3)))
HEADLINE = ["first_step", "max_over_steps", "first_step_whole", "max_over_steps_whole"]
SEED = 0  # seaborn's bootstrap error bars are seeded
MAX_RANKS = 12  # the spikiness figure shows the top ranks only (100+ label sets stay legible)

sns.set_theme(style="whitegrid", context="paper")


# ---- helpers ----------------------------------------------------------------------------------------
def _present(order: Sequence[str], values: pd.Series) -> list[str]:
    """Return the values of `order` that occur, then any others (sorted)."""
    seen = set(values.dropna().unique())
    return [v for v in order if v in seen] + sorted(seen - set(order))


def _panel_order(frame: pd.DataFrame, keys: Sequence[str], orders: Mapping[str, Sequence[str]]) -> list[str]:
    """Return the distinct `panel` values ordered by `keys`: each key in its given order, values not
    listed there in order of first appearance (input files come in config order).
    """
    firsts = frame.drop_duplicates("panel")
    seen = {k: list(dict.fromkeys(frame[k])) for k in keys}

    def rank(key: str, value: Any) -> int:
        listed = list(orders.get(key, []))
        return listed.index(value) if value in listed else len(listed) + seen[key].index(value)

    ranked = sorted(firsts.itertuples(index=False), key=lambda r: tuple(rank(k, getattr(r, k)) for k in keys))
    return [r.panel for r in ranked]


def _footnote(fig: Figure, lines: Sequence[str]) -> None:
    """Write what had no data under the figure (never silently left out); adds to an earlier note."""
    if not lines:
        return
    for text in fig.texts:
        if text.get_gid() == "footnote":
            text.set_text(text.get_text() + "\n" + "\n".join(lines))
            return
    fig.text(0.01, -0.01, "\n".join(lines), ha="left", va="top", fontsize=7, color="0.3", gid="footnote")


def _missing_runs(paths: Sequence[str], frame: pd.DataFrame, what: str) -> list[str]:
    """Notes for the dataset x model x regime runs among `paths` (generation files) with no row in `frame`."""
    runs = list(dict.fromkeys(tuple(layout.parse_generation_path(p)[k] for k in ("dataset", "model", "regime"))
                              for p in paths))
    present = set() if frame.empty else set(map(tuple, frame[["dataset", "model", "regime"]].drop_duplicates().values))
    return [f"{d} · {m} · {r}: {what}" for d, m, r in runs if (d, m, r) not in present]


def _require(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise DataError(what, "nothing to plot: the inputs hold no usable records")


def _regime_palette(regimes: Sequence[str]) -> dict[str, Any]:
    extra = [r for r in regimes if r not in REGIME_PALETTE]
    colors = dict(REGIME_PALETTE)
    colors.update(zip(extra, sns.color_palette("Set2", len(extra))))
    return {r: colors[r] for r in regimes}


def _estimator_palette(estimators: Sequence[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab20" if len(estimators) > 10 else "tab10", len(estimators))
    return dict(zip(estimators, colors))


def ordered_estimators(estimators: Sequence[str], order: Sequence[str] = ()) -> list[str]:
    """Return the estimators with the headline ones (first_step, max_over_steps and their whole-label
    variants) first, then the rest in `order` (config order), then any others alphabetically.
    """
    present = set(estimators)
    head = [e for e in HEADLINE if e in present]
    rest = [e for e in order if e in present and e not in head]
    return head + rest + sorted(present - set(head) - set(rest))


# ---- step figures -------------------------------------------------------------------------------
STEP_STATS = {"top_prob": "top", "second_prob": "second", "p_next": "p_r(next emitted label)",
              "p_runner_up_next": "p_r+1(runner-up of step r)"}


def plot_step_probabilities(steps: pd.DataFrame, regimes: Sequence[str] = REGIMES) -> Figure:
    """Top and second probability per label step, last vs intermediate steps, per regime (x), with the
    runner-up statistics of intermediate steps and 'same: X%' (runner-up of step r = label emitted at
    r + 1) above each bar group. One panel per dataset x model x step position.
    """
    _require(steps, "step_probabilities")
    frame = steps.assign(panel=steps["dataset"] + " · " + steps["model"] + " · " + steps["position"] + " steps")
    long = frame.melt(id_vars=["panel", "dataset", "model", "regime", "position"],
                      value_vars=list(STEP_STATS), var_name="statistic", value_name="probability")
    long = long.dropna(subset=["probability"])
    long["statistic"] = long["statistic"].map(STEP_STATS)
    order = _present(regimes, long["regime"])
    panels = _panel_order(long, ["dataset", "model", "position"],
                          {"position": ["intermediate", "last"]})
    g = sns.catplot(data=long, kind="bar", x="regime", y="probability", hue="statistic", col="panel",
                    col_wrap=min(2, len(panels)), col_order=panels, order=order,
                    hue_order=list(STEP_STATS.values()), errorbar=("ci", 95), seed=SEED,
                    height=3.2, aspect=1.3, sharex=False)
    g.set_titles("{col_name}")
    g.set(ylim=(0, 1.22), yticks=np.linspace(0, 1, 6), ylabel="probability")
    for panel, ax in g.axes_dict.items():
        if not panel.endswith("intermediate steps"):
            continue
        sub = frame[frame["panel"] == panel]
        for x, regime in enumerate(order):
            part = sub[sub["regime"] == regime]
            if part.empty:
                continue
            stats = analysis.runner_up_summary(part)
            text = "same: n/a" if math.isnan(stats["same"]) else f"same: {stats['same']:.0%}"
            ax.text(x, 1.08, f"{text}\n(n={stats['n_with_next']})", ha="center", va="bottom", fontsize=7)
    notes = []
    for (d, m), part in frame.groupby(["dataset", "model"]):
        for regime in order:
            if part[(part["regime"] == regime) & (part["position"] == "intermediate")].empty:
                notes.append(f"{d} · {m} · {regime}: no intermediate steps (no output had 2+ label slots)")
    _footnote(g.figure, notes)
    return g.figure


def plot_step_entropy(steps: pd.DataFrame, regimes: Sequence[str] = REGIMES,
                      max_bits: Mapping[str, float] | None = None) -> Figure:
    """Entropy (bits) of the per-step label distribution, intermediate vs last steps, per regime;
    one panel per dataset x model, with the uniform distribution's entropy as a dashed line.
    """
    _require(steps, "step_entropy")
    frame = steps.assign(panel=steps["dataset"] + " · " + steps["model"])
    panels = _panel_order(frame, ["dataset", "model"], {})
    g = sns.catplot(data=frame, kind="bar", x="regime", y="entropy_bits", hue="position",
                    hue_order=_present(["intermediate", "last"], frame["position"]),
                    order=_present(regimes, frame["regime"]), col="panel", col_order=panels,
                    col_wrap=min(3, len(panels)), errorbar=("ci", 95), seed=SEED, height=3.2, aspect=1.1,
                    palette="muted")
    g.set_titles("{col_name}")
    g.set(ylabel="entropy (bits)")
    for panel, ax in g.axes_dict.items():
        dataset = frame.loc[frame["panel"] == panel, "dataset"].iloc[0]
        if max_bits and dataset in max_bits:
            ax.axhline(max_bits[dataset], ls="--", c="0.5", lw=1)
            ax.text(ax.get_xlim()[0], max_bits[dataset], " uniform", va="bottom", fontsize=7, color="0.4")
    return g.figure


def plot_first_step_spikiness(ranks: pd.DataFrame, regimes: Sequence[str] = REGIMES,
                              max_rank: int = MAX_RANKS) -> Figure:
    """First-step label probabilities sorted high to low (x = rank), one dot per example, per regime;
    one panel per dataset x model.
    """
    _require(ranks, "first_step_spikiness")
    frame = ranks[ranks["rank"] <= max_rank].assign(panel=ranks["dataset"] + " · " + ranks["model"])
    panels = _panel_order(frame, ["dataset", "model"], {})
    order = _present(regimes, frame["regime"])
    g = sns.catplot(data=frame, kind="strip", x="rank", y="prob", hue="regime", hue_order=order,
                    palette=_regime_palette(order), dodge=True, alpha=0.4, size=2.5, jitter=0.2,
                    col="panel", col_order=panels, col_wrap=min(3, len(panels)), height=3.2, aspect=1.2)
    g.set_titles("{col_name}")
    g.set(ylim=(-0.02, 1.02), ylabel="first-step probability",
          xlabel="label rank at the first step" + (f" (top {max_rank})" if ranks["rank"].max() > max_rank else ""))
    return g.figure


def plot_label_order_accuracy(rows: pd.DataFrame, regimes: Sequence[str] = REGIMES) -> Figure:
    """Accuracy (label in the gold set) of the 1st and 2nd emitted label per regime, on the multi-label
    subset; one panel per dataset x model.
    """
    _require(rows, "label_order_accuracy")
    names = {1: "1st label", 2: "2nd label", 3: "3rd label"}
    frame = rows.assign(panel=rows["dataset"] + " · " + rows["model"],
                        emitted=rows["order"].map(lambda k: names.get(k, f"{k}th label")),
                        accuracy=rows["correct"].astype(float))
    panels = _panel_order(frame, ["dataset", "model"], {})
    order = _present(regimes, frame["regime"])
    g = sns.catplot(data=frame, kind="bar", x="emitted", y="accuracy", hue="regime", hue_order=order,
                    order=[names.get(k, f"{k}th label") for k in sorted(frame["order"].unique())],
                    palette=_regime_palette(order), errorbar=("ci", 95), seed=SEED, col="panel",
                    col_order=panels, col_wrap=min(3, len(panels)), height=3.2, aspect=1.1)
    g.set_titles("{col_name}")
    g.set(ylim=(0, 1.05), xlabel="")
    notes = [f"{d} · {m} · {r}: no output emitted a 2nd label"
             for (d, m, r), part in frame.groupby(["dataset", "model", "regime"]) if (part["order"] < 2).all()]
    _footnote(g.figure, notes)
    return g.figure


def plot_icl_sweep(counts: pd.DataFrame, regimes: Sequence[str] = REGIMES) -> Figure:
    """Share of outputs with more than one label vs share of multi-label demonstrations, per regime
    (hue) and model (style); one panel per dataset.
    """
    _require(counts, "icl_sweep")
    frame = counts.assign(multi=counts["multi"].astype(float))
    order = _present(regimes, frame["regime"])
    g = sns.relplot(data=frame, kind="line", x="ratio", y="multi", hue="regime", hue_order=order,
                    palette=_regime_palette(order), style="model", markers=True, dashes=False,
                    errorbar=("ci", 95), seed=SEED, col="dataset", col_wrap=min(3, frame["dataset"].nunique()),
                    height=3.2, aspect=1.2)
    g.set_titles("{col_name}")
    g.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="share of multi-label demonstrations",
          ylabel="share of outputs with >1 label")
    return g.figure


# ---- estimator figures ----------------------------------------------------------------------------
def plot_by_estimator(table: pd.DataFrame, metrics: Sequence[str], estimators: Sequence[str] = (),
                      regimes: Sequence[str] = REGIMES, title: str = "") -> Figure:
    """Horizontal bars of each metric (columns) per model · estimator (rows of bars), bars per regime,
    error bars = the table's 95% bootstrap interval; one row of panels per dataset. Headline estimators
    (first_step, max_over_steps) come first, in bold.

    Seaborn cannot draw precomputed intervals, so the grouped bars are placed with matplotlib.
    """
    _require(table, title or "by_estimator")
    datasets = list(dict.fromkeys(table["dataset"]))
    regime_order = _present(regimes, table["regime"])
    est_order = ordered_estimators(table["estimator"].unique(), estimators)
    models = list(dict.fromkeys(table["model"]))
    panels = [(d, m) for d in datasets for m in metrics
              if table.loc[table["dataset"] == d, f"{m}_mean"].notna().any()]
    skipped = [f"{d}: {metric_label(m)} undefined for every run" for d in datasets for m in metrics
               if (d, m) not in panels]
    if not panels:
        raise DataError(title or "by_estimator", "every metric is undefined (NaN) for every run")
    rows_per_dataset = {d: [(mo, e) for mo in models for e in est_order
                            if ((table["dataset"] == d) & (table["model"] == mo) & (table["estimator"] == e)).any()]
                        for d in datasets}
    n_rows = max(len(v) for v in rows_per_dataset.values())
    fig, axes = plt.subplots(len(datasets), len(metrics), squeeze=False, layout="constrained",
                             figsize=(3.3 * len(metrics) + 1.6, 0.32 * n_rows * len(regime_order) * len(datasets) + 1.2))
    palette = _regime_palette(regime_order)
    width = 0.8 / len(regime_order)
    for i, d in enumerate(datasets):
        src = table.loc[table["dataset"] == d, "p_ref_source"].iloc[0]
        ys = rows_per_dataset[d]
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            if (d, m) not in panels:
                fig.delaxes(ax)
                continue
            for k, regime in enumerate(regime_order):
                sub = table[(table["dataset"] == d) & (table["regime"] == regime)]
                pos, mean, low, high = [], [], [], []
                for y, (mo, e) in enumerate(ys):
                    hit = sub[(sub["model"] == mo) & (sub["estimator"] == e)]
                    if hit.empty or pd.isna(hit[f"{m}_mean"].iloc[0]):
                        continue
                    r = hit.iloc[0]
                    pos.append(y - 0.4 + width * (k + 0.5))
                    mean.append(r[f"{m}_mean"])
                    lo, hi = r[f"{m}_ci_low"], r[f"{m}_ci_high"]
                    low.append(0.0 if pd.isna(lo) else max(r[f"{m}_mean"] - lo, 0.0))
                    high.append(0.0 if pd.isna(hi) else max(hi - r[f"{m}_mean"], 0.0))
                if pos:
                    ax.barh(pos, mean, height=width, color=palette[regime], label=regime,
                            xerr=[low, high], error_kw={"elinewidth": 0.8, "capsize": 1.5})
            ax.set_yticks(range(len(ys)))
            labels = [e if len(models) == 1 else f"{mo} · {e}" for mo, e in ys]
            first = min(k for k in range(len(metrics)) if (d, metrics[k]) in panels)
            ax.set_yticklabels(labels if j == first else [], fontsize=7)  # row labels once per dataset
            for tick, (_, e) in zip(ax.get_yticklabels(), ys):
                if e in HEADLINE:
                    tick.set_fontweight("bold")
            ax.set_ylim(len(ys) - 0.5, -0.5)
            ax.set_xlabel(metric_label(m))
            gold = " (p_ref = gold)" if src == "gold" else ""
            ax.set_title(f"{d}{gold}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[r]) for r in regime_order]
    fig.legend(handles, regime_order, title="regime", loc="outside right upper")
    if title:
        fig.suptitle(title)
    _footnote(fig, skipped)
    return fig


def reliability_frame(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Return reliability bins pooled over seeds: dataset, model, regime, estimator, bin, count,
    mean_q, frac_pos (count-weighted means), from metrics JSON objects; empty bins are left out.
    """
    rows = []
    for res in results:
        rel = res.get("reliability")
        if not rel:
            raise DataError(res.get("_path", "metrics"), "missing reliability bins", field="reliability")
        for b, (n, mq, mt) in enumerate(zip(rel["count"], rel["mean_q"], rel["mean_target"])):
            if n:
                rows.append({**{k: res[k] for k in ("dataset", "model", "regime", "estimator")},
                             "bin": b, "count": n, "sum_q": mq * n, "sum_t": mt * n})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    pooled = frame.groupby(["dataset", "model", "regime", "estimator", "bin"], as_index=False)[
        ["count", "sum_q", "sum_t"]].sum()
    return pooled.assign(mean_q=pooled["sum_q"] / pooled["count"],
                         frac_pos=pooled["sum_t"] / pooled["count"]).drop(columns=["sum_q", "sum_t"])


def plot_calibration(bins: pd.DataFrame, estimators: Sequence[str] = (),
                     regimes: Sequence[str] = REGIMES, models: Sequence[str] = ()) -> Figure:
    """Reliability curves (share of gold-positive labels vs mean q per bin, pooled over seeds), one line per
    estimator, each bin a dot whose area is its number of (example, label) pairs, so that a bin holding
    one pair reads as the noise it is; one panel per dataset x model x regime x estimator family
    (labeldist.config.ESTIMATOR_FAMILY: at most six lines a panel); the diagonal is perfect calibration.
    """
    _require(bins, "calibration")
    frame = bins.assign(family=bins["estimator"].map(ESTIMATOR_FAMILY).fillna("other"))
    frame["run"] = frame["dataset"] + " · " + frame["model"] + " · " + frame["regime"]
    frame["panel"] = frame["run"] + "\n" + frame["family"]
    families = [f for f in (*ESTIMATOR_FAMILIES, "other") if f in set(frame["family"])]
    frame["family"] = pd.Categorical(frame["family"], families, ordered=True)
    runs = _panel_order(frame.assign(panel=frame["run"]), ["dataset", "model", "regime"],
                        {"model": list(models), "regime": list(regimes)})
    present = set(frame["panel"])
    panels = [f"{r}\n{f}" for r in runs for f in families if f"{r}\n{f}" in present]
    hue_order = ordered_estimators(frame["estimator"].unique(), estimators)
    palette = _estimator_palette(hue_order)
    g = sns.relplot(data=frame, kind="scatter", x="mean_q", y="frac_pos", hue="estimator", hue_order=hue_order,
                    palette=palette, size="count", sizes=(8, 160), size_norm=(1, max(1, frame["count"].max())),
                    alpha=0.85, col="panel", col_order=panels, col_wrap=min(len(families), len(panels)),
                    height=2.6, aspect=1.0, facet_kws={"sharex": True, "sharey": True})
    for panel, ax in g.axes_dict.items():
        ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=1, zorder=0)
        for est, curve in frame[frame["panel"] == panel].groupby("estimator", observed=True):
            curve = curve.sort_values("mean_q")
            ax.plot(curve["mean_q"], curve["frac_pos"], c=palette[est], lw=1, alpha=0.8, zorder=1)
    g.set_titles("{col_name}", size=8)
    g.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="mean q in bin", ylabel="share of gold labels")
    if g.legend is not None:
        g.legend.set_title("estimator · pairs per bin")
    return g.figure


def plot_probe_layers(layers: pd.DataFrame, regimes: Sequence[str] = REGIMES) -> Figure:
    """Linear-probe micro F1 and alignment (L1 to p_ref) by layer (0 = embeddings), per regime (hue)
    and model (style), mean over seeds with 95% intervals; one row of panels per dataset.
    """
    _require(layers, "probe_layers")
    long = layers.melt(id_vars=["dataset", "model", "regime", "seed", "layer"], value_vars=["f1_micro", "l1"],
                       var_name="metric", value_name="value").dropna(subset=["value"])
    long["metric"] = long["metric"].map({"f1_micro": "micro F1 (higher is better)",
                                         "l1": "L1 to p_ref (lower is better)"})
    order = _present(regimes, long["regime"])
    g = sns.relplot(data=long, kind="line", x="layer", y="value", hue="regime", hue_order=order,
                    palette=_regime_palette(order), style="model", markers=True, dashes=False,
                    errorbar=("ci", 95), seed=SEED, row="dataset", col="metric",
                    facet_kws={"sharey": False}, height=3.0, aspect=1.3)
    g.set_titles("{row_name} · {col_name}")
    g.set(ylabel="")
    for ax in g.axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
    return g.figure


def plot_training_curves(logs: pd.DataFrame, regimes: Sequence[str] = REGIMES) -> Figure:
    """Training curves against step (loss, reward, the dev F1 of the model's own outputs before (step 0)
    and after training, learning rate: whatever the logs hold), one panel per dataset x model x regime x
    logged quantity, so that each finetuned run of each model shows on its own; lines coloured by regime.
    """
    _require(logs, "training_curves")
    frame = logs.assign(run=logs["dataset"] + " · " + logs["model"] + " · " + logs["regime"])
    frame["panel"] = frame["run"] + "\n" + frame["metric"]
    runs = _panel_order(frame.assign(panel=frame["run"]), ["dataset", "model", "regime"], {"regime": list(regimes)})
    metrics = [m for m in analysis.TRAINING_METRICS if m in set(frame["metric"])]
    present = set(frame["panel"])
    panels = [f"{r}\n{m}" for r in runs for m in metrics if f"{r}\n{m}" in present]
    order = _present(regimes, frame["regime"])
    g = sns.relplot(data=frame, kind="line", x="step", y="value", hue="regime", hue_order=order,
                    palette=_regime_palette(order), errorbar=None, marker="o", markersize=3, col="panel",
                    col_order=panels, col_wrap=min(len(metrics), 4), facet_kws={"sharey": False, "sharex": False},
                    height=2.4, aspect=1.3)
    g.set_titles("{col_name}", size=8)
    g.set(ylabel="")
    return g.figure


# ---- findings ----------------------------------------------------------------------------------------
VERDICT_COLORS = {"holds": "#1b9e77", "does not hold": "#d95f02", "inconclusive": "#7570b3",
                  "not testable here": "#bbbbbb"}


def plot_findings(frame: pd.DataFrame) -> Figure:
    """Effects with intervals, one panel per claim: each testable part of each setting is a row, its
    estimate minus the tested value signed so that right of 0 = the claimed direction, with the 95%
    bootstrap interval, coloured by verdict; parts that are not testable are counted in a footnote.
    """
    from .findings import CLAIMS

    _require(frame, "findings")
    sign = np.where(frame["direction"] == ">", 1.0, -1.0)
    data = frame.assign(effect=sign * (frame["estimate"] - frame["null"]),
                        low=np.minimum(sign * (frame["ci_low"] - frame["null"]), sign * (frame["ci_high"] - frame["null"])),
                        high=np.maximum(sign * (frame["ci_low"] - frame["null"]), sign * (frame["ci_high"] - frame["null"])))
    testable = data[data["verdict"] != "not testable here"].dropna(subset=["effect"])
    claims = [c for c in CLAIMS if c in set(frame["claim"])]
    sizes = [max(len(testable[testable["claim"] == c]), 1) for c in claims]
    fig, axes = plt.subplots(len(claims), 1, squeeze=False, layout="constrained",
                             figsize=(8.0, 0.8 * len(claims) + 0.16 * sum(sizes)),
                             gridspec_kw={"height_ratios": sizes})
    notes = []
    for ax, claim in zip(axes[:, 0], claims):
        part = testable[testable["claim"] == claim]
        untestable = frame[(frame["claim"] == claim) & (frame["verdict"] == "not testable here")]
        if len(untestable):
            reasons = "; ".join(sorted(set(untestable["reason"])))[:200]
            notes.append(f"{claim}: {len(untestable)} part(s) not testable here ({reasons})")
        ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_title(f"{claim}: {CLAIMS[claim]}", fontsize=8, loc="left")
        if part.empty:
            ax.text(0.5, 0.5, "not testable here", transform=ax.transAxes, ha="center", va="center",
                    color="0.4", fontsize=8)
            ax.set_yticks([])
            continue
        ys = np.arange(len(part))
        for y, (_, r) in zip(ys, part.iterrows()):
            color = VERDICT_COLORS[r["verdict"]]
            if np.isfinite(r["low"]):
                ax.plot([r["low"], r["high"]], [y, y], color=color, lw=1.6)
            ax.plot([r["effect"]], [y], "o", color=color, ms=4)
        labels = [" · ".join(str(v) for v in (r["dataset"], r["model"], r["regime"], r["setting"], r["part"]))
                  for _, r in part.iterrows()]
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=6)
        ax.set_ylim(len(part) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("effect in the claimed direction (estimate - tested value; > 0 supports the claim)")
    handles = [plt.Line2D([], [], marker="o", color=c, lw=1.6) for c in VERDICT_COLORS.values()]
    fig.legend(handles, list(VERDICT_COLORS), title="verdict", loc="outside right upper", fontsize=7)
    _footnote(fig, notes)
    return fig


def _figure_findings(inputs, params):
    return plot_findings(read_table_csv(_as_list(inputs["table"])[0], required=("claim", "verdict")))


# ---- reading inputs and drawing a named figure ------------------------------------------------------
def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def read_label_sets(paths: Sequence[str | Path]) -> dict[str, LabelSet]:
    """Return {dataset: LabelSet} for labels.json files."""
    sets = [read_label_set(p) for p in paths]
    return {s.dataset: s for s in sets}


def _by_dataset(paths: Sequence[str | Path]) -> dict[str, str]:
    """{dataset: path} for files under data/{dataset}/."""
    return {Path(p).parent.name: str(p) for p in paths}


def _step_frame(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> pd.DataFrame:
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    kind = params.get("kind", "first_token")
    return analysis.load_generation_frames(
        _as_list(inputs["generations"]), label_sets,
        lambda recs, ls: analysis.step_table(recs, ls, kind))


NO_STEPS = "no label step in any output (every output had no label)"


def _figure_step_probabilities(inputs, params):
    steps = _step_frame(inputs, params)
    fig = plot_step_probabilities(steps, params.get("regimes", REGIMES))
    _footnote(fig, _missing_runs(_as_list(inputs["generations"]), steps, NO_STEPS))
    return fig


def _figure_step_entropy(inputs, params):
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    max_bits = {d: math.log2(len(s.with_none)) for d, s in label_sets.items()}
    steps = _step_frame(inputs, params)
    fig = plot_step_entropy(steps, params.get("regimes", REGIMES), max_bits)
    _footnote(fig, _missing_runs(_as_list(inputs["generations"]), steps, NO_STEPS))
    return fig


def _figure_first_step_spikiness(inputs, params):
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    kind = params.get("kind", "first_token")
    ranks = analysis.load_generation_frames(
        _as_list(inputs["generations"]), label_sets,
        lambda recs, ls: analysis.first_step_ranks(recs, ls, kind))
    fig = plot_first_step_spikiness(ranks, params.get("regimes", REGIMES))
    _footnote(fig, _missing_runs(_as_list(inputs["generations"]), ranks, NO_STEPS))
    return fig


def _figure_label_order_accuracy(inputs, params):
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    gold = {d: analysis.read_gold_sets(p, label_sets[d]) for d, p in _by_dataset(_as_list(inputs["test"])).items()}
    frames = []
    for path in _as_list(inputs["generations"]):
        meta = layout.parse_generation_path(path)
        ls = label_sets[meta["dataset"]]
        recs = read_generations(path, ls.labels, ls.none_label)
        frames.append(analysis.label_order_rows(recs, gold[meta["dataset"]], ls.none_label,
                                                source=str(path)).assign(**meta))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    fig = plot_label_order_accuracy(rows, params.get("regimes", REGIMES))
    _footnote(fig, _missing_runs(_as_list(inputs["generations"]), rows,
                                 "no labelled output on the multi-label subset (empty subset or no labels)"))
    return fig


def _figure_icl_sweep(inputs, params):
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    counts = analysis.load_generation_frames(
        _as_list(inputs["generations"]), label_sets,
        lambda recs, ls: analysis.output_label_counts(recs, ls.none_label))
    if counts["ratio"].isna().any():
        raise DataError("icl_sweep generations", "records without a sweep ratio", field="ratio")
    return plot_icl_sweep(counts, params.get("regimes", REGIMES))


def _figure_alignment_by_estimator(inputs, params):
    table = read_table_csv(_as_list(inputs["table"])[0], required=("dataset", "model", "regime", "estimator"))
    return plot_by_estimator(table, ["l1", "mse", "bce"], params.get("estimators", ()),
                             params.get("regimes", REGIMES), "Alignment of q with p_ref (lower is better)")


def _figure_f1_by_estimator(inputs, params):
    table = read_table_csv(_as_list(inputs["table"])[0], required=("dataset", "model", "regime", "estimator"))
    return plot_by_estimator(table, ["f1_micro", "f1_macro", "f1_example", "f1_micro_tuned"],
                             params.get("estimators", ()), params.get("regimes", REGIMES),
                             "F1 after thresholding q (higher is better)")


def _figure_calibration(inputs, params):
    bins = reliability_frame(read_metric_files(_as_list(inputs["metrics"])))
    return plot_calibration(bins, params.get("estimators", ()), params.get("regimes", REGIMES),
                            params.get("models", ()))


def _figure_probe_layers(inputs, params):
    label_sets = read_label_sets(_as_list(inputs["labels"]))
    tests = _by_dataset(_as_list(inputs["test"]))
    refs: dict[str, Any] = {}
    frames = []
    for path in _as_list(inputs["layers"]):
        meta = layout.parse(layout.ESTIMATE, path, "probe layers estimate", estimator="linear_probe",
                           suffix=".layers.csv")
        ls = label_sets[meta["dataset"]]
        if meta["dataset"] not in refs:
            refs[meta["dataset"]] = read_reference(tests[meta["dataset"]], ls)
        table = read_layer_estimates(path)
        for seed, part in table[table["subset"] == "main"].groupby("seed", sort=True):
            per_layer = metrics_by_layer(part, refs[meta["dataset"]], ls.labels, params["threshold"],
                                         source=f"{path} (seed {seed})")
            frames.append(per_layer.assign(**meta, seed=int(seed)))
    return plot_probe_layers(pd.concat(frames, ignore_index=True), params.get("regimes", REGIMES))


def _figure_training_curves(inputs, params):
    frames = []
    for folder in _as_list(inputs["models"]):
        meta = layout.parse(layout.TUNED_MODEL, folder, "finetuned model folder")
        frames.append(analysis.training_log_long(read_training_log(folder), Path(folder) / TRAINING_LOG)
                      .assign(**meta))
    return plot_training_curves(pd.concat(frames, ignore_index=True), params.get("regimes", REGIMES))


FIGURE_BUILDERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Figure]] = {
    "step_probabilities": _figure_step_probabilities,
    "step_entropy": _figure_step_entropy,
    "first_step_spikiness": _figure_first_step_spikiness,
    "label_order_accuracy": _figure_label_order_accuracy,
    "icl_sweep": _figure_icl_sweep,
    "alignment_by_estimator": _figure_alignment_by_estimator,
    "f1_by_estimator": _figure_f1_by_estimator,
    "calibration": _figure_calibration,
    "probe_layers": _figure_probe_layers,
    "training_curves": _figure_training_curves,
}
"""The figures of config `figures` (one per name of the schema's enum), drawn by figures.smk."""

STAGE_FIGURE_BUILDERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Figure]] = {
    "findings": _figure_findings,
}
"""Figures a later stage draws itself (not listed in config `figures`): findings.smk draws `findings`."""


def render_figure(name: str, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Figure:
    """Return figure `name` drawn from its input files.

    `inputs` maps input names to a path or list of paths: generations, labels, test, table, metrics,
    layers, models (what each figure reads: see FIGURE_BUILDERS); `params` may hold regimes and
    estimators (display order), kind (first_token or whole_label) and threshold.
    """
    builders = {**FIGURE_BUILDERS, **STAGE_FIGURE_BUILDERS}
    if name not in builders:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(builders)}")
    return builders[name](inputs, dict(params or {}))


def save_figure(fig: Figure, png: str | Path, pdf: str | Path, dpi: int = 150) -> None:
    """Write `fig` as PNG and PDF (atomically, tight bounding box) and close it."""
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
