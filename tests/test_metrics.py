"""Metrics and tables: hand-computed values on tiny arrays, scikit-learn as the reference, the
bootstrap pairing across seeds, and the run-level JSON on a small file tree."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, jaccard_score, log_loss, roc_auc_score

from labeldist import metrics as M
from labeldist.artifacts.estimates import (
    estimates_matrix, read_estimates, read_layer_estimates, write_estimates, write_layer_estimates,
)
from labeldist import tables as T
from labeldist.errors import DataError

LABELS = ["a", "b", "c"]


# ---- single metrics --------------------------------------------------------------------------------
def test_alignment_metrics_by_hand():
    q = np.array([[0.5, 0.8], [0.1, 0.2]])
    p = np.array([[0.5, 0.5], [0.0, 0.4]])
    gold = np.array([[1, 0], [0, 1]])
    out = M.alignment_metrics(q, p, gold)
    assert out["l1"] == pytest.approx((0 + 0.3 + 0.1 + 0.2) / 4)
    assert out["mse"] == pytest.approx((0 + 0.09 + 0.01 + 0.04) / 4)
    bce = -(0.5 * math.log(0.5) + 0.5 * math.log(0.5) + 0.5 * math.log(0.8) + 0.5 * math.log(0.2)
            + math.log(0.9) + 0.4 * math.log(0.2) + 0.6 * math.log(0.8)) / 4
    assert out["bce"] == pytest.approx(bce)
    assert out["nll"] == pytest.approx(-(math.log(0.5) + math.log(0.2) + math.log(0.9) + math.log(0.2)) / 4)


def test_soft_bce_reduces_to_log_loss_on_hard_targets():
    rng = np.random.default_rng(0)
    q = rng.uniform(0.01, 0.99, (20, 4))
    y = (rng.random((20, 4)) < 0.4).astype(int)
    assert M.soft_bce(q, y) == pytest.approx(log_loss(y.ravel(), q.ravel()))
    assert M.soft_bce(np.full((3, 3), 0.5), rng.random((3, 3))) == pytest.approx(math.log(2))
    # q = 0 or 1 is clipped, not infinite
    assert math.isfinite(M.soft_bce(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])))


def test_threshold_metrics_by_hand():
    gold = np.array([[1, 0, 1], [0, 0, 0]])
    q = np.array([[0.9, 0.6, 0.2], [0.1, 0.1, 0.1]])
    out = M.threshold_metrics(q, gold, 0.5)
    assert out["f1_micro"] == pytest.approx(0.5)
    assert out["f1_macro"] == pytest.approx(1 / 3)
    assert out["f1_example"] == pytest.approx((0.5 + 1.0) / 2)  # an empty/empty example counts as 1
    assert out["jaccard_micro"] == pytest.approx(1 / 3)
    assert out["jaccard_macro"] == pytest.approx(1 / 3)
    assert out["jaccard_example"] == pytest.approx((1 / 3 + 1.0) / 2)


def test_threshold_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    q = rng.random((40, 5))
    gold = (rng.random((40, 5)) < 0.3).astype(int)
    out = M.threshold_metrics(q, gold, 0.4)
    pred = (q >= 0.4).astype(int)
    assert out["f1_micro"] == pytest.approx(f1_score(gold, pred, average="micro"))
    assert out["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert out["jaccard_example"] == pytest.approx(jaccard_score(gold, pred, average="samples", zero_division=1))


def test_tune_threshold_picks_best_and_breaks_ties_towards_default():
    gold = np.array([[1, 0], [1, 0], [0, 1]])
    q = np.array([[0.3, 0.1], [0.35, 0.1], [0.1, 0.32]])
    # every t in (0.1, 0.3] separates perfectly; the tie is broken towards 0.5 -> 0.30
    assert M.tune_threshold(q, gold, default=0.5) == pytest.approx(0.30)
    assert M.tune_threshold(q, gold, default=0.0) == pytest.approx(0.11)


def test_micro_auc_and_undefined_case():
    rng = np.random.default_rng(1)
    q = rng.random((15, 3))
    gold = (rng.random((15, 3)) < 0.5).astype(int)
    assert M.micro_auc(q, gold) == pytest.approx(roc_auc_score(gold.ravel(), q.ravel()))
    assert math.isnan(M.micro_auc(q, np.zeros_like(gold)))


def test_ece_and_reliability_bins_by_hand():
    q = np.array([[0.1, 0.1], [0.9, 0.9]])
    y = np.array([[0, 1], [1, 1]])
    # bin [0, .5): mean q .1, share .5 -> .4 x 2/4; bin [.5, 1]: .9 vs 1 -> .1 x 2/4
    assert M.expected_calibration_error(q, y, 2) == pytest.approx(0.25)
    rel = M.reliability_bins(q, y, 2)
    assert rel["count"] == [2, 2]
    assert rel["mean_q"] == pytest.approx([0.1, 0.9])
    assert rel["mean_target"] == pytest.approx([0.5, 1.0])
    # q == 1.0 falls in the last bin; empty bins are null
    rel = M.reliability_bins(np.array([1.0, 0.95]), np.array([1, 0]), 4)
    assert rel["count"] == [0, 0, 0, 2] and rel["mean_q"][0] is None


def test_bootstrap_metrics_equal_sklearn_per_resample():
    rng = np.random.default_rng(7)
    q = rng.random((25, 4))
    q[q < 0.35] = 0.0
    gold = (rng.random((25, 4)) < 0.3).astype(int)
    gold[:6] = 0  # examples with no gold label (example-based zero division)
    gold[:, 0] = 0  # a label never gold (macro zero division)
    ref = M.Reference([], rng.random((25, 4)), gold)
    boot = M.bootstrap_metrics(q, ref, 0.5, 0.3, 5, n_resamples=30, chunk=7)
    indices = M.bootstrap_indices(25, 30)
    assert set(boot) == set(M.ALIGNMENT_METRICS + M.CLASSIFICATION_METRICS)
    for b, rows in enumerate(indices):
        ref_b = M.Reference([], ref.p_ref[rows], gold[rows])
        expected = M.scalar_metrics(q[rows], ref_b, 0.5, 0.3, 5)
        for key, value in expected.items():
            assert boot[key][b] == pytest.approx(value, abs=1e-12, nan_ok=True), (key, b)
    # seeded: the same resamples every time
    assert np.array_equal(indices, M.bootstrap_indices(25, 30))


def test_generation_counts():
    from labeldist.artifacts.generations import parse_generation

    raw = [{"no_label": True, "unknown": [], "repeated": [], "hit_max_tokens": False},
           {"no_label": False, "unknown": ["xyz", "w"], "repeated": ["a"], "hit_max_tokens": True},
           {"no_label": False, "unknown": [], "repeated": [], "hit_max_tokens": False, "truncated": True}]
    recs = [parse_generation({"id": str(i), "labels": [], "steps": [], **r}, ["a", "b"]) for i, r in enumerate(raw)]
    assert M.generation_counts(recs) == {"n_outputs": 3, "no_label": 1, "unknown": 1, "repeated": 1,
                                         "hit_max_tokens": 1, "truncated": 1}


# ---- reading files ---------------------------------------------------------------------------------
def test_estimates_matrix_pivots_and_rejects_bad_rows():
    frame = pd.DataFrame({"id": ["x", "x", "y", "y", "x"], "label": ["b", "a", "a", "b", "none"],
                          "q": [0.2, 0.9, 0.1, 0.4, 0.5]})
    ids, q = estimates_matrix(frame, ["a", "b"])
    assert ids == ["x", "y"] and q.tolist() == [[0.9, 0.2], [0.1, 0.4]]
    with pytest.raises(DataError, match="no q for id 'y', label 'b'"):
        estimates_matrix(frame.drop(index=3), ["a", "b"], source="est.parquet")
    with pytest.raises(DataError, match="field 'q'"):
        estimates_matrix(frame.assign(q=[0.2, 1.5, 0.1, 0.4, 0.5]), ["a", "b"])
    with pytest.raises(DataError, match="duplicate"):
        estimates_matrix(pd.concat([frame, frame.iloc[:1]]), ["a", "b"])


def write_data(tmp_path, n=12, seed=0):
    """A tiny data folder (labels.json, test/dev splits, subsets) and estimates for it."""
    rng = np.random.default_rng(seed)
    data = tmp_path / "data" / "syn"
    data.mkdir(parents=True)
    (data / "labels.json").write_text(json.dumps({"dataset": "syn", "labels": LABELS, "none_label": "none",
                                                  "task": "multilabel", "p_ref_source": "gold"}))
    splits = {}
    for split in ("test", "dev"):
        recs = []
        for i in range(n):
            p = {l: float(rng.choice([0.0, 1 / 3, 2 / 3, 1.0])) for l in LABELS}
            p["none"] = 0.0
            recs.append({"id": f"{split}{i}", "text": "t", "labels": [l for l in LABELS if p[l] >= 0.5],
                         "annotations": None, "p_ref": p})
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        splits[split] = recs
    (data / "subsets.json").write_text(json.dumps({"main": [r["id"] for r in splits["test"]],
                                                   "dev": [r["id"] for r in splits["dev"]], "multi": [], "train": []}))
    parts = {}
    for split, subset in (("test", "main"), ("dev", "dev")):
        parts[(subset, 0)] = pd.DataFrame(
            [{"id": r["id"], "label": l, "q": float(np.clip(r["p_ref"][l] + rng.normal(0, .2), 0, 1))}
             for r in splits[split] for l in [*LABELS, "none"]])
    write_estimates(tmp_path / "est.parquet", parts)
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"id": r["id"], "labels": [], "no_label": i % 4 == 0, "unknown": [],
                                       "repeated": ["a"] if i == 1 else [], "hit_max_tokens": False,
                                       "steps": []}) + "\n" for i, r in enumerate(splits["test"])))
    return data, splits


def test_read_reference_names_line_and_field(tmp_path):
    data, _ = write_data(tmp_path)
    ls = M.read_label_set(data / "labels.json")
    ref = M.read_reference(data / "test.jsonl", ls, ids=["test3", "test1"])
    assert ref.ids == ["test1", "test3"] and ref.p_ref.shape == (2, 3)
    lines = (data / "test.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    del bad["p_ref"]["b"]
    lines[2] = json.dumps(bad)
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl, line 3, field 'p_ref.b'"):
        M.read_reference(data / "test.jsonl", ls)


def run(tmp_path, data, **kw):
    args = dict(estimates=tmp_path / "est.parquet", seed=0,
                test_data=data / "test.jsonl", dev_data=data / "dev.jsonl", labels=data / "labels.json",
                subsets=data / "subsets.json", generation=tmp_path / "gen.jsonl",
                meta={"dataset": "syn", "model": "tiny", "regime": "base", "estimator": "first_step", "seed": 0},
                threshold=0.5, ece_bins=4, n_bootstrap=25)
    args.update(kw)
    return M.run_metrics(**args)


def test_run_metrics_json(tmp_path):
    data, splits = write_data(tmp_path)
    res = run(tmp_path, data)
    json.dumps(res, allow_nan=False)  # strict JSON: NaN became null
    assert res["n_examples"] == 12 and res["dev_n_examples"] == 12 and res["p_ref_source"] == "gold"
    assert res["generation"] == {"n_outputs": 12, "no_label": 3, "unknown": 0, "repeated": 1, "hit_max_tokens": 0,
                                "truncated": 0}
    assert res["tuned_threshold"] in M.THRESHOLD_GRID
    assert set(res["alignment"]) == set(M.ALIGNMENT_METRICS)
    assert set(res["classification"]) == set(M.CLASSIFICATION_METRICS)
    assert all(len(v) == 25 for v in res["bootstrap"]["values"].values())
    # the point estimate is the sklearn value on the same arrays
    ls = M.read_label_set(data / "labels.json")
    ids, q = read_estimates(tmp_path / "est.parquet", LABELS, "main", 0)
    ref = M.read_reference(data / "test.jsonl", ls, ids).subset(ids)
    assert res["classification"]["f1_micro"] == pytest.approx(f1_score(ref.gold, (q >= 0.5).astype(int), average="micro"))
    assert sum(res["reliability"]["count"]) == 12 * 3
    assert run(tmp_path, data, generation=None)["generation"] is None


def test_run_metrics_refuses_estimates_not_covering_the_subset(tmp_path):
    data, _ = write_data(tmp_path)
    frame = pd.read_parquet(tmp_path / "est.parquet")
    frame[frame["id"] != "test5"].to_parquet(tmp_path / "est.parquet", index=False)
    with pytest.raises(DataError, match=r"1 missing \(e.g. \['test5'\]\)"):
        run(tmp_path, data)


def test_metrics_by_layer(tmp_path):
    data, splits = write_data(tmp_path)
    ls = M.read_label_set(data / "labels.json")
    ref = M.read_reference(data / "test.jsonl", ls)
    rows = []
    for layer in (0, 1):
        for r in splits["test"]:
            for l in LABELS:
                q = r["p_ref"][l] if layer == 1 else 0.5  # layer 1 is perfect
                rows.append({"layer": layer, "id": r["id"], "label": l, "q": q})
    path = tmp_path / "linear_probe.layers.csv"
    write_layer_estimates(path, {("main", 0): pd.DataFrame(rows)})
    out = M.metrics_by_layer(read_layer_estimates(path), ref, LABELS, threshold=0.5)
    assert out["layer"].tolist() == [0, 1]
    assert out.loc[1, "l1"] == pytest.approx(0.0) and out.loc[1, "f1_micro"] == pytest.approx(1.0)
    assert out.loc[0, "l1"] == pytest.approx(np.abs(ref.p_ref - 0.5).mean())
    pd.DataFrame(rows).assign(seed=0, subset="main").drop(columns="layer").to_csv(path, index=False)
    with pytest.raises(DataError, match="field 'layer'"):
        read_layer_estimates(path)


# ---- tables ----------------------------------------------------------------------------------------
def fake_result(estimator, seed, l1, boot_l1, regime="base", source="annotators"):
    align = {m: 0.1 for m in M.ALIGNMENT_METRICS} | {"l1": l1}
    cls = {m: 0.5 for m in M.CLASSIFICATION_METRICS} | {"auc_micro": None}
    values = {m: [0.1] * len(boot_l1) for m in M.ALIGNMENT_METRICS} | {"l1": boot_l1}
    values |= {m: [0.5] * len(boot_l1) for m in M.CLASSIFICATION_METRICS} | {"auc_micro": [None] * len(boot_l1)}
    return {"dataset": "syn", "model": "tiny", "regime": regime, "estimator": estimator, "seed": seed,
            "task": "multilabel", "p_ref_source": source, "n_examples": 10, "ids_sha1": "x",
            "tuned_threshold": 0.4, "alignment": align, "classification": cls,
            "generation": {"n_outputs": 10, "no_label": seed, "unknown": 1, "repeated": 0, "hit_max_tokens": 0},
            "bootstrap": {"n": len(boot_l1), "seed": 0, "values": values}}


def test_summarise_mean_std_and_paired_bootstrap_interval():
    results = [fake_result("first_step", 0, 0.2, [0.0, 1.0]), fake_result("first_step", 1, 0.4, [1.0, 0.0]),
               fake_result("max_over_steps", 0, 0.1, [0.1, 0.3])]
    table = T.summarise(results, M.ALIGNMENT_METRICS, order={"estimator": ["max_over_steps", "first_step"]})
    assert table["estimator"].tolist() == ["max_over_steps", "first_step"]
    row = table.iloc[1]
    assert row["n_seeds"] == 2 and row["l1_mean"] == pytest.approx(0.3)
    assert row["l1_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    # resamples are paired across seeds: both resample means are 0.5, so the interval collapses
    assert (row["l1_ci_low"], row["l1_ci_high"]) == pytest.approx((0.5, 0.5))
    one = table.iloc[0]
    assert math.isnan(one["l1_std"])  # one seed: no spread
    assert (one["l1_ci_low"], one["l1_ci_high"]) == pytest.approx(tuple(np.percentile([0.1, 0.3], [2.5, 97.5])))


def test_summarise_counts_and_undefined_metrics():
    results = [fake_result("first_step", 0, 0.2, [0.2]), fake_result("first_step", 1, 0.4, [0.4])]
    results.append(fake_result("demux", 0, 0.3, [0.3]) | {"generation": None, "model": "encoder"})
    table = T.summarise(results, M.CLASSIFICATION_METRICS, counts=True)
    fs = table[table["estimator"] == "first_step"].iloc[0]
    assert fs["gen_no_label"] == 1 and fs["gen_unknown"] == 2 and fs["gen_n_outputs"] == 20
    assert pd.isna(table[table["estimator"] == "demux"].iloc[0]["gen_n_outputs"])
    assert math.isnan(fs["auc_micro_mean"]) and math.isnan(fs["auc_micro_ci_low"])
    with pytest.raises(DataError, match="seed listed twice"):
        T.summarise(results + [fake_result("first_step", 0, 0.2, [0.2])], M.ALIGNMENT_METRICS)


def test_truncated_prompts_are_summed_and_shown_only_where_some_were():
    """Data that fits leaves the displayed table as it was; a shortened prompt adds a column (issue 24)."""
    results = [fake_result("first_step", seed, 0.2, [0.2]) for seed in (0, 1)]
    for res in results:
        res["generation"]["truncated"] = 0
    columns = T.display_frame(T.summarise(results, M.CLASSIFICATION_METRICS, counts=True),
                              M.CLASSIFICATION_METRICS).columns
    assert not [c for c in columns if "truncated" in c]
    results[1]["generation"]["truncated"] = 3
    table = T.summarise(results, M.CLASSIFICATION_METRICS, counts=True)
    assert table.iloc[0]["gen_truncated"] == 3
    shown = T.display_frame(table, M.CLASSIFICATION_METRICS)
    assert shown["prompts truncated to fit the context"].tolist() == ["3 of 20"]


def test_write_table_renders_csv_markdown_html(tmp_path):
    paths = [tmp_path / "base.json"]  # a run's metrics file: one object per estimator x seed
    paths[0].write_text(json.dumps([fake_result("first_step", 0, 0.25, [0.2, 0.3], source="gold"),
                                    fake_result("first_step", 1, 0.35, [0.3, 0.4], source="gold")]))
    out = {k: tmp_path / f"alignment.{k}" for k in ("csv", "md", "html")}
    T.write_table(paths, "alignment", out["csv"], out["md"], out["html"])
    table = pd.read_csv(out["csv"])
    assert table.loc[0, "p_ref_source"] == "gold" and table.loc[0, "l1_mean"] == pytest.approx(0.3)
    md = out["md"].read_text()
    assert "| dataset | model | regime | estimator | p_ref source |" in md
    assert "gold (alignment not meaningful)" in md
    low, high = np.percentile([0.25, 0.35], [2.5, 97.5])  # per-resample seed means: 0.25, 0.35
    assert f"0.300 ± {np.std([0.25, 0.35], ddof=1):.3f} [{low:.3f}, {high:.3f}]" in md
    html = out["html"].read_text()
    assert "<table" in html and "gold (alignment not meaningful)" in html and "L1" in html
    cls = {k: tmp_path / f"classification.{k}" for k in ("csv", "md", "html")}
    T.write_table(paths, "classification", cls["csv"], cls["md"], cls["html"])
    assert "1 / 2 / 0 / 0 of 20" in cls["md"].read_text()  # generation counts are shown, not dropped


def test_headline_table_and_readme_block(tmp_path):
    """The headline: per dataset, estimators ordered by best L1, one L1/BCE/F1/AUC group per model, base
    regime only, then per model with several regimes their side-by-side comparison; gold-only datasets show
    F1 and AUC only. update_readme swaps the marked block."""
    results = [fake_result("first_step", 0, 0.30, [0.3]), fake_result("max_over_steps", 0, 0.10, [0.1]),
               fake_result("max_over_steps", 0, 0.99, [0.99], regime="sft"),
               fake_result("first_step", 0, 0.20, [0.2]) | {"model": "big"},
               fake_result("first_step", 0, 0.5, [0.5], source="gold") | {"dataset": "semeval"}]
    order = {"dataset": ["syn", "semeval"], "model": ["tiny", "big"]}  # the config's order
    align = T.summarise(results, M.ALIGNMENT_METRICS, order)
    cls = T.summarise(results, M.CLASSIFICATION_METRICS, order, counts=True)
    md = T.headline_markdown(align, cls)
    syn, gold = md.split("**semeval**")
    lines = [line for line in syn.splitlines() if line.startswith("| ")]
    assert lines[0] == ("| estimator | tiny: L1 ↓ | tiny: soft BCE ↓ | tiny: F1 ↑ | tiny: AUC ↑ | big: L1 ↓ "
                        "| big: soft BCE ↓ | big: F1 ↑ | big: AUC ↑ |")
    assert lines[1].startswith("| max_over_steps | 0.100 | 0.100 | 0.500 |  |")  # AUC undefined: empty
    assert lines[2].startswith("| first_step | 0.300 |") and "| 0.200 |" in lines[2]
    base_block, regime_block = syn.split("**syn · tiny by regime**")
    assert "0.990" not in base_block  # sft rows are not in the base table...
    regime_lines = [line for line in regime_block.splitlines() if line.startswith("| ")]
    # ...but in the model's regime comparison: the estimators both regimes ran, base and sft side by side
    assert regime_lines[0].startswith("| estimator | base: L1 ↓ | base: soft BCE ↓ | base: F1 ↑ | base: AUC ↑ | "
                                      "sft: L1 ↓ |")
    assert len(regime_lines) == 2 and regime_lines[1].startswith("| max_over_steps | 0.100 | 0.100 | 0.500 |  | 0.990 |")
    assert "big by regime" not in md  # big ran base only
    assert "L1" not in gold and "gold labels only" in gold
    path = tmp_path / "headline.md"
    T.write_headline(align, cls, path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- headline:start -->\nold table\n<!-- headline:end -->\nmiddle\n"
                      "<!-- findings:start -->\nold verdicts\n<!-- findings:end -->\noutro\n")
    assert T.update_readme(readme, path) is True
    text = readme.read_text()
    assert "old table" not in text and md in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "old verdicts" in text  # other blocks untouched
    assert T.update_readme(readme, path) is False
    verdicts = tmp_path / "findings_headline.md"
    verdicts.write_text("| claim |\n")
    assert T.update_readme(readme, verdicts, "findings") is True
    text = readme.read_text()
    assert "old verdicts" not in text and "| claim |" in text and md in text
    readme.write_text("no markers")
    with pytest.raises(DataError, match="markers"):
        T.update_readme(readme, path)
