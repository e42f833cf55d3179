"""Figures: every figure function renders real data from fixture records, and the workflow targets every
configured figure.

The fixture tree below is built from docs/formats.md (data, generation, estimate, probe-layer and
training-log files), so the figure and metrics rules are checked against the stage contracts without
the upstream stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from labeldist import analysis, plots
from labeldist.artifacts.generations import parse_generation
from labeldist.artifacts.estimates import write_estimates, write_layer_estimates
from labeldist.config import load_schema, validate_config
from labeldist.metrics import LabelSet

from .conftest import REPO

LABELS = ["joy", "fear", "anger", "surprise"]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


# ---- fixture tree (docs/formats.md) -----------------------------------------------------------------
def fake_example(rng: np.random.Generator, ex_id: str, labels=LABELS) -> dict:
    """A data record with 3-5 simulated annotators, p_ref and the gold set (share >= 0.5)."""
    n_ann = int(rng.integers(3, 6))
    intensity = rng.beta(0.6, 1.2, len(labels))
    annotations = [[l for l, p in zip(labels, intensity) if rng.random() < p] for _ in range(n_ann)]
    p_ref = {l: sum(l in a for a in annotations) / n_ann for l in labels}
    p_ref["none"] = sum(not a for a in annotations) / n_ann
    gold = [l for l in labels if p_ref[l] >= 0.5]
    return {"id": ex_id, "text": f"text {ex_id}", "labels": gold, "annotations": annotations, "p_ref": p_ref}


def fake_generation(rng: np.random.Generator, example: dict, labels=LABELS, ratio: float | None = None) -> dict:
    """A baseline/icl_sweep generation record: 0-3 label steps with spiky first-token logits."""
    names = [*labels, "none"]
    n_steps = int(rng.choice([0, 1, 1, 2, 2, 3]))
    pool = list(example["labels"]) + [l for l in labels if l not in example["labels"]]
    if rng.random() < 0.3:  # sometimes a wrong label first, so label-order accuracy is not trivially 1
        pool = pool[len(example["labels"]):] + pool[:len(example["labels"])]
    emitted = pool[:n_steps] if n_steps else []
    if n_steps and not example["labels"] and rng.random() < 0.5:
        emitted = ["none"]
    steps = []
    for t, label in enumerate(emitted):
        logits = rng.normal(0.0, 1.0, len(names))
        logits[names.index(label)] += 4.0
        logprobs = logits - np.log(np.exp(logits).sum()) - 0.3
        steps.append({"position": 3 * t, "label": label, "first_token_logits": logits.round(4).tolist(),
                      "whole_label_logprobs": logprobs.round(4).tolist(), "label_logprob": -0.2})
    rec = {"id": example["id"], "demo_ids": ["d1", "d2"], "output_text": ", ".join(emitted),
           "labels": [l for l in emitted if l != "none"], "unknown": ["xyz"] if rng.random() < 0.1 else [],
           "repeated": [], "n_tokens": 3 * len(emitted) + 1, "hit_max_tokens": bool(rng.random() < 0.05),
           "no_label": not emitted, "steps": steps}
    if ratio is not None:
        rec["ratio"] = ratio
    return rec


def write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def fake_estimates(rng: np.random.Generator, examples: list[dict], labels=LABELS) -> pd.DataFrame:
    """Long id/label/q rows: a noisy copy of p_ref (so metrics are informative but imperfect)."""
    rows = []
    for ex in examples:
        for l in [*labels, "none"]:
            q = float(np.clip(ex["p_ref"][l] + rng.normal(0, 0.2), 0.0, 1.0))
            rows.append({"id": ex["id"], "label": l, "q": q})
    return pd.DataFrame(rows)


def build_results(root: Path, cfg: dict, n_test: int = 24, n_dev: int = 16, seed: int = 0) -> None:
    """Write, under `root`, every upstream file the metrics and figure rules read for a validated `cfg`:
    data files, base and finetuned model folders (training_log.csv), generation files for every planned
    prompting/subset, estimates (main and dev) for every planned estimator, and probe layer files.
    """
    rng = np.random.default_rng(seed)
    for d in cfg["datasets"]:
        data = root / "data" / d
        splits = {s: [fake_example(rng, f"{d}-{s}-{i:03d}") for i in range(n)]
                  for s, n in (("train", 20), ("dev", n_dev), ("test", n_test))}
        for s, recs in splits.items():
            write_jsonl(data / f"{s}.jsonl", recs)
        (data / "labels.json").write_text(json.dumps({
            "dataset": d, "labels": LABELS, "none_label": "none", "task": "multilabel",
            "p_ref_source": "annotators", "counts": {s: len(v) for s, v in splits.items()},
            "skipped": {s: 0 for s in splits}}))
        test, dev = splits["test"], splits["dev"]
        multi = [ex for ex in test if len(ex["labels"]) >= 2] or test[:3]
        subsets = {"main": [ex["id"] for ex in test], "multi": [ex["id"] for ex in multi],
                   "dev": [ex["id"] for ex in dev], "train": [ex["id"] for ex in splits["train"]]}
        (data / "subsets.json").write_text(json.dumps(subsets))
        by_subset = {"main": test, "multi": multi, "dev": dev, "train": splits["train"]}
        for m in cfg["models"]:
            for r in cfg["regimes"]:
                if r != "base":
                    folder = root / "models" / d / m / r
                    folder.mkdir(parents=True, exist_ok=True)
                    steps = np.arange(1, 21)
                    log = {"step": steps, "loss": 2.0 / steps, "learning_rate": 1e-3 * (1 - steps / 21)}
                    if r == "rl":
                        log["reward"] = 0.2 + 0.03 * steps
                    pd.DataFrame(log).to_csv(folder / "training_log.csv", index=False)
                for seed_ in cfg["seeds"]:
                    gen = root / "generations" / d / m / r
                    for s in ("main", "dev", "multi", "train"):
                        write_jsonl(gen / "baseline" / s / f"seed{seed_}.jsonl",
                                    [fake_generation(rng, ex) for ex in by_subset[s]])
                    ratios = cfg["generation"]["icl_sweep_ratios"]
                    write_jsonl(gen / "icl_sweep" / "main" / f"seed{seed_}.jsonl",
                                [fake_generation(rng, ex, ratio=ratio) for ratio in ratios for ex in test])
                    for p in ("unary", "pairwise"):
                        for s in ("main", "dev"):
                            write_jsonl(gen / p / s / f"seed{seed_}.jsonl", [{"id": ex["id"]} for ex in by_subset[s]])
        for m in [*cfg["models"], "encoder"]:
            for r in cfg["regimes"]:
                for est in cfg["estimators"]:
                    est_dir = root / "estimates" / d / m / r
                    write_estimates(est_dir / f"{est}.parquet", {(s, seed_): fake_estimates(rng, exs)
                                                                for seed_ in cfg["seeds"]
                                                                for s, exs in (("main", test), ("dev", dev))})
                    if est == "linear_probe":
                        write_layer_estimates(est_dir / "linear_probe.layers.csv", {
                            ("main", seed_): pd.concat([fake_estimates(rng, test).assign(layer=layer)
                                                        for layer in range(5)])
                            for seed_ in cfg["seeds"]})
    for m in cfg["models"]:
        (root / "models" / m / "base").mkdir(parents=True, exist_ok=True)
        (root / "models" / m / "base" / "config.json").write_text("{}")


def small_config(results: Path) -> dict:
    """The embedded default config, shrunk: one dataset, regimes base/sft/rl, two seeds, every figure."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["results"] = str(results)
    cfg["seeds"] = [0, 1]
    cfg["estimators"] = ["first_step", "max_over_steps", "output", "linear_probe", "demux"]
    cfg["metrics"]["bootstrap"] = 20
    cfg["figures"] = list(load_schema()["properties"]["figures"]["items"]["enum"])
    return validate_config(cfg, base_dir=REPO)


# ---- figure functions -----------------------------------------------------------------------------
def axes_with_data(fig) -> list:
    """Axes that draw something (lines, bars or point collections)."""
    return [ax for ax in fig.axes if ax.lines or ax.patches or ax.collections]


def assert_every_axis_has_data(fig) -> None:
    assert fig.axes, "figure has no axes"
    empty = [ax.get_title() for ax in fig.axes if not (ax.lines or ax.patches or ax.collections)]
    assert not empty, f"empty panels: {empty}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("results")
    cfg = small_config(root)
    build_results(root, cfg)
    return root, cfg


def test_every_schema_figure_has_a_builder():
    names = set(load_schema()["properties"]["figures"]["items"]["enum"])
    assert names == set(plots.FIGURE_BUILDERS)


def _inputs(root: Path, cfg: dict, name: str, tables_dir: Path | None = None) -> dict:
    d, m = "synthetic", "tiny"
    gens = lambda p, s: [str(root / "generations" / d / m / r / p / s / f"seed{k}.jsonl")
                         for r in cfg["regimes"] for k in cfg["seeds"]]
    common = {"labels": [str(root / "data" / d / "labels.json")], "test": [str(root / "data" / d / "test.jsonl")]}
    if name in ("step_probabilities", "step_entropy", "first_step_spikiness"):
        return {**common, "generations": gens("baseline", "main")}
    if name == "label_order_accuracy":
        return {**common, "generations": gens("baseline", "multi")}
    if name == "icl_sweep":
        return {**common, "generations": gens("icl_sweep", "main")}
    if name == "probe_layers":
        return {**common, "layers": [str(root / "estimates" / d / m / r / "linear_probe.layers.csv")
                                     for r in cfg["regimes"]]}
    if name == "training_curves":
        return {"models": [str(root / "models" / d / m / r) for r in cfg["regimes"] if r != "base"]}
    raise KeyError(name)


@pytest.mark.parametrize("name", ["step_probabilities", "step_entropy", "first_step_spikiness",
                                  "label_order_accuracy", "icl_sweep", "probe_layers", "training_curves"])
def test_generation_figures_render_with_data(tree, name, tmp_path):
    root, cfg = tree
    fig = plots.render_figure(name, _inputs(root, cfg, name), {"regimes": cfg["regimes"], "threshold": cfg["metrics"]["threshold"]})
    assert_every_axis_has_data(fig)
    plots.save_figure(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_step_probabilities_annotates_same_share(tree):
    root, cfg = tree
    fig = plots.render_figure("step_probabilities", _inputs(root, cfg, "step_probabilities"),
                              {"regimes": cfg["regimes"], "threshold": cfg["metrics"]["threshold"]})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("same: ") and "%" in t for t in texts), texts
    titles = [ax.get_title() for ax in fig.axes]
    assert any("intermediate" in t for t in titles) and any("last" in t for t in titles)
    # panels x regimes: the bar heights of 'top' are probabilities
    heights = [p.get_height() for ax in fig.axes for p in ax.patches if p.get_height() == p.get_height()]
    assert heights and all(0 <= h <= 1 for h in heights)


def test_step_probabilities_drops_panels_without_intermediate_steps(tree):
    root, cfg = tree
    label_set = LabelSet("synthetic", LABELS)
    # one record, one step: no intermediate step anywhere -> only the 'last' panel, and a footnote
    rec = parse_generation({"id": "a", "labels": ["joy"], "steps": [
        {"position": 0, "label": "joy", "first_token_logits": [3, 0, 0, 0, 0], "whole_label_logprobs": [0, -9, -9, -9, -9]}]},
        LABELS)
    steps = analysis.step_table([rec], label_set).assign(dataset="d", model="m", regime="base")
    fig = plots.plot_step_probabilities(steps)
    assert [ax.get_title() for ax in fig.axes] == ["d · m · last steps"]
    assert_every_axis_has_data(fig)
    assert any("no intermediate steps" in t.get_text() for t in fig.texts)


def test_runs_without_any_label_step_are_named_not_blank(tree, tmp_path):
    root, cfg = tree
    inputs = _inputs(root, cfg, "step_probabilities")
    silent = tmp_path / "generations" / "synthetic" / "tiny" / "rl" / "baseline" / "main" / "seed0.jsonl"
    silent.parent.mkdir(parents=True)
    silent.write_text("".join(json.dumps({"id": f"s{i}", "labels": [], "no_label": True, "steps": []}) + "\n"
                              for i in range(5)))
    inputs["generations"] = [p for p in inputs["generations"] if "/rl/" not in p] + [str(silent)]
    for name in ("step_probabilities", "step_entropy", "first_step_spikiness"):
        fig = plots.render_figure(name, inputs, {"regimes": cfg["regimes"], "threshold": cfg["metrics"]["threshold"]})
        assert_every_axis_has_data(fig)
        notes = "\n".join(t.get_text() for t in fig.texts)
        assert "synthetic · tiny · rl: no label step in any output" in notes, (name, notes)
        assert len([t for t in fig.texts if t.get_gid() == "footnote"]) == 1  # one footnote, notes appended


def test_by_estimator_figures_from_tables(tmp_path):
    rows = []
    for est, l1, f1 in (("first_step", 0.30, 0.5), ("max_over_steps", 0.2, 0.6), ("unary", 0.25, 0.55)):
        for regime in ("base", "sft"):
            row = {"dataset": "syn", "model": "tiny", "regime": regime, "estimator": est,
                   "p_ref_source": "annotators", "task": "multilabel", "n_seeds": 2, "n_examples": 10}
            for m, v in (("l1", l1), ("mse", l1 ** 2), ("bce", 2 * l1), ("f1_micro", f1), ("f1_macro", f1 - .1),
                         ("f1_example", f1), ("f1_micro_tuned", f1 + .05)):
                row.update({f"{m}_mean": v, f"{m}_std": 0.01, f"{m}_ci_low": v - 0.05, f"{m}_ci_high": v + 0.05})
            rows.append(row)
    table = pd.DataFrame(rows)
    fig = plots.plot_by_estimator(table, ["l1", "mse", "bce"], ["unary", "first_step"], ["base", "sft"])
    assert_every_axis_has_data(fig)
    ax = fig.axes[0]
    # headline first and bold, then the config order
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["first_step", "max_over_steps", "unary"]
    assert ax.get_yticklabels()[0].get_fontweight() == "bold"
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == sorted([0.3, 0.3, 0.2, 0.2, 0.25, 0.25])
    # the legend is a figure legend outside the axes, not inside a panel
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    fig2 = plots.render_figure("f1_by_estimator", {"table": str(path)}, {"estimators": ["unary"]})
    assert len(axes_with_data(fig2)) == 4


def test_by_estimator_drops_undefined_metric_panels():
    row = {"dataset": "syn", "model": "tiny", "regime": "base", "estimator": "output",
           "p_ref_source": "gold", "l1_mean": 0.3, "l1_ci_low": 0.2, "l1_ci_high": 0.4,
           "auc_micro_mean": float("nan"), "auc_micro_ci_low": float("nan"), "auc_micro_ci_high": float("nan")}
    fig = plots.plot_by_estimator(pd.DataFrame([row]), ["l1", "auc_micro"])
    assert len(fig.axes) == 1 and "p_ref = gold" in fig.axes[0].get_title()
    assert any("micro AUC undefined" in t.get_text() for t in fig.texts)


def test_calibration_figure_from_metric_files(tmp_path):
    from labeldist.metrics import reliability_bins

    rng = np.random.default_rng(1)
    objs = []
    for seed in (0, 1):
        for est in ("first_step", "max_over_steps"):
            q = rng.random((30, 4))
            y = (rng.random((30, 4)) < q).astype(int)
            objs.append({"dataset": "syn", "model": "tiny", "regime": "base", "estimator": est, "seed": seed,
                         "alignment": {}, "classification": {}, "reliability": reliability_bins(q, y, 5)})
    paths = [str(tmp_path / "base.json")]  # one metrics file per run: every estimator x seed
    Path(paths[0]).write_text(json.dumps(objs))
    bins = plots.reliability_frame(objs)
    # pooled over two seeds: counts add up to 2 x 30 x 4 per estimator
    assert bins.groupby("estimator")["count"].sum().tolist() == [240, 240]
    fig = plots.render_figure("calibration", {"metrics": paths}, {"estimators": ["first_step", "max_over_steps"]})
    assert_every_axis_has_data(fig)
    ax = fig.axes[0]
    assert len(ax.lines) >= 3  # two estimators + the diagonal


def test_training_curves_plot_what_is_present(tmp_path):
    folder = tmp_path / "models" / "syn" / "tiny" / "sft"
    folder.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, None], "grad_norm": [1, 1, 1]}).to_csv(
        folder / "training_log.csv", index=False)
    fig = plots.render_figure("training_curves", {"models": [str(folder)]}, {})
    assert [ax.get_title() for ax in fig.axes] == ["syn · tiny · loss"]
    assert_every_axis_has_data(fig)


# ---- the workflow targets every configured figure --------------------------------------------------
SCRATCH_SNAKEFILE = """
configfile: "{config}"


include: "{repo}/workflow/rules/common.smk"
include: "{repo}/workflow/rules/metrics.smk"
include: "{repo}/workflow/rules/figures.smk"


rule all:
    input:
        final_targets(),
    default_target: True
"""


def _run(args, cwd, timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_metrics_and_figure_rules_plan_every_configured_figure(tree, tmp_path):
    """A dry run of common + metrics + figures rules over the contract-shaped fixture tree: every
    schema figure is built (PNG and PDF), every run gets a metrics file, both tables are built."""
    root, cfg = tree
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    (tmp_path / "Snakefile").write_text(SCRATCH_SNAKEFILE.format(config=config, repo=REPO))
    res = _run(["-n", "--summary", "--cores", "1"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [line.split("\t") for line in res.stdout.splitlines() if line.startswith(str(root))]
    by_rule: dict[str, list[str]] = {}
    for row in rows:
        by_rule.setdefault(row[2], []).append(row[0])
    for name in cfg["figures"]:
        assert sorted(by_rule.get(f"figure_{name}", [])) == [str(root / "figures" / f"{name}.{ext}")
                                                             for ext in ("pdf", "png")], name
    from labeldist.config import ESTIMATOR_PROMPTING, model_prompting, model_runs
    # one metrics file per planned (dataset, model, regime) with an estimator, and per dataset for Demux
    runs = {(d, "encoder", "base") for d in cfg["datasets"] if "demux" in cfg["estimators"]}
    for est in cfg["estimators"]:
        runs |= {(d, m, r) for d, m, r in model_runs(cfg)
                 if est != "demux" and not (est == "seq_cls_head" and r != "base")
                 and ESTIMATOR_PROMPTING[est] in (None, *model_prompting(cfg, m, r))}
    metric_paths = [p for rule, paths in by_rule.items() if rule.startswith("evaluate") for p in paths
                    if "/metrics/" in p]
    assert sorted(metric_paths) == sorted(str(root / "metrics" / d / m / f"{r}.json") for d, m, r in runs)
    assert sorted(Path(p).name for p in by_rule["tables"]) == sorted(
        [f"{t}.{ext}" for t in ("alignment", "classification") for ext in ("csv", "html", "md")] + ["headline.md"])


def test_repo_dry_run_targets_every_figure(tmp_path):
    """The real workflow (once every upstream stage is in): `rule all` plans every listed figure."""
    needed = ["data", "models", "generate", "metrics", "probes", "demux"]  # DESIGN.md's stage files
    rules = REPO / "workflow" / "rules"
    missing = [n for n in needed if not (rules / f"{n}.smk").exists()]
    if missing:
        pytest.skip(f"upstream rule files not present yet: {', '.join(m + '.smk' for m in missing)}")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["figures"] = list(load_schema()["properties"]["figures"]["items"]["enum"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    res = _run(["-n", "--quiet", "rules", "--configfile", str(config), "--directory", str(REPO)], cwd=REPO,
               timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    for name in cfg["figures"]:
        assert f"figure_{name} " in out, f"figure {name} is not a target of rule all"
