"""labeldist.artifacts: each file kind between stages has one writer and one reader; a round trip keeps
every row, and a malformed file raises a DataError naming the file, line and field (docs/formats.md)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from labeldist.artifacts.estimates import (
    ESTIMATE_COLUMNS, LAYER_COLUMNS, OWN_LABEL_COLUMNS, estimate_frame, read_estimate_table, read_estimates,
    read_layer_estimates, write_estimates, write_layer_estimates, write_own_labels,
)
from labeldist.artifacts.hidden import read_hidden_states, write_hidden
from labeldist.artifacts.labels import LabelSet, read_label_set, write_label_set
from labeldist.artifacts.metrics import read_metric_files, write_metrics
from labeldist.errors import DataError

LABELS = ["joy", "fear", "anger"]


def frame(ids, q):
    return estimate_frame(ids, LABELS + ["none"], np.asarray(q, dtype=float))


@pytest.fixture
def parts():
    rng = np.random.default_rng(0)
    return {(subset, seed): frame([f"{subset}{i}" for i in (3, 1, 2)], rng.random((3, 4)))
            for seed in (1, 0) for subset in ("dev", "main")}


def test_estimate_frame_sorts_ids_and_keeps_label_order():
    out = estimate_frame(["b", "a"], ["x", "y"], [[0.1, 0.2], [0.3, 0.4]])
    assert list(out["id"]) == ["a", "a", "b", "b"] and list(out["label"]) == ["x", "y", "x", "y"]
    assert list(out["q"]) == [0.3, 0.4, 0.1, 0.2] and out["q"].dtype == np.float64
    with pytest.raises(ValueError, match="unique"):
        estimate_frame(["a", "a"], ["x"], [[0.1], [0.2]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate_frame(["a"], ["x"], [[1.5]])


def test_estimate_file_round_trip(tmp_path, parts):
    path = tmp_path / "first_step.parquet"
    written = write_estimates(path, parts)
    back = read_estimate_table(path)
    assert list(back.columns) == ESTIMATE_COLUMNS
    pd.testing.assert_frame_equal(back, written, check_dtype=False)
    # seeds ascending, then main before dev, each part's rows as given
    assert list(dict.fromkeys(zip(back["seed"], back["subset"]))) == [(0, "main"), (0, "dev"), (1, "main"), (1, "dev")]
    for (subset, seed), part in parts.items():
        ids, q = read_estimates(path, LABELS, subset, seed)
        assert ids == sorted(part["id"].unique())
        want = part[part["label"] != "none"].pivot(index="id", columns="label", values="q").loc[ids, LABELS]
        assert np.array_equal(q, want.to_numpy())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_layer_and_own_label_files_round_trip(tmp_path, parts):
    layers = {key: pd.concat([part.assign(layer=layer) for layer in (0, 2)]) for key, part in parts.items()}
    path = tmp_path / "linear_probe.layers.csv"
    written = write_layer_estimates(path, layers)
    back = read_layer_estimates(path)
    assert list(back.columns) == LAYER_COLUMNS and len(back) == len(written) == 2 * 4 * 12
    pd.testing.assert_frame_equal(back, written, check_dtype=False)
    own = {seed: pd.DataFrame({"variant": ["all"], "label": ["joy"], "f1": [0.5], "accuracy": [0.9], "n_pos": [3]})
           for seed in (1, 0)}
    path = tmp_path / "linear_probe.own_labels.csv"
    write_own_labels(path, own)
    back = pd.read_csv(path)
    assert list(back.columns) == OWN_LABEL_COLUMNS and list(back["seed"]) == [0, 1]


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.drop(columns="subset"), "x.parquet, field 'subset': missing column"),
    (lambda f: f[f["seed"] != 0], "x.parquet, field 'seed': no rows for subset 'main' and seed 0"),
    (lambda f: f.assign(q=f["q"].where(f.index != 1, 1.5)),
     "x.parquet (subset main, seed 0), field 'q': q must be a number in [0, 1], got 1.5"),
    (lambda f: f.drop(index=2), "x.parquet (subset main, seed 0), field 'q': no q for id"),
])
def test_malformed_estimate_files_name_file_and_field(tmp_path, parts, damage, message):
    path = tmp_path / "x.parquet"
    write_estimates(path, parts)
    damage(pd.read_parquet(path)).to_parquet(path, index=False)
    with pytest.raises(DataError, match=re.escape(message)):
        read_estimates(path, LABELS, "main", 0)


def test_unreadable_estimate_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=re.escape("missing.parquet: file not found")):
        read_estimate_table(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=re.escape("bad.parquet: not a readable parquet file")):
        read_estimate_table(bad)


def test_malformed_layer_files_name_line_and_field(tmp_path, parts):
    path = tmp_path / "linear_probe.layers.csv"
    write_layer_estimates(path, {key: part.assign(layer=0) for key, part in parts.items()})
    rows = path.read_text().splitlines()
    rows[3] = rows[3].replace(",0,", ",x,", 1)  # seed, subset, layer: the layer of line 4
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=re.escape("linear_probe.layers.csv, line 4, field 'layer'")):
        read_layer_estimates(path)
    pd.read_csv(tmp_path / "linear_probe.layers.csv").drop(columns="seed").to_csv(path, index=False)
    with pytest.raises(DataError, match=re.escape("field 'seed': missing column")):
        read_layer_estimates(path)


# ---- labels.json -------------------------------------------------------------------------------------
def test_label_set_round_trip(tmp_path):
    path = tmp_path / "labels.json"
    write_label_set(path, {"dataset": "toy", "labels": LABELS, "none_label": "none", "task": "multilabel",
                           "p_ref_source": "gold", "counts": {"train": 3}})
    ls = read_label_set(path)
    assert ls == LabelSet("toy", LABELS, "none", "multilabel", "gold")
    assert ls.with_none == [*LABELS, "none"]


@pytest.mark.parametrize("payload, message", [
    (["joy"], "labels.json: expected a JSON object"),
    ({"labels": LABELS}, "labels.json, field 'dataset': missing field"),
    ({"dataset": "toy", "labels": []}, "labels.json, field 'labels': expected a non-empty list of label names"),
    ({"dataset": "toy", "labels": ["joy", ""]}, "labels.json, field 'labels': expected a non-empty list"),
    ({"dataset": "toy", "labels": ["joy", "fear", "joy"]}, "labels.json, field 'labels': label 'joy' listed twice"),
    # one label to the output parsers, which match names case-insensitively; `none` reserved in any case
    ({"dataset": "toy", "labels": ["Anger", "fear", "anger"]},
     "labels.json, field 'labels': labels 'Anger' (entry 1) and 'anger' (entry 3) are one label"),
    ({"dataset": "toy", "labels": ["joy", "None"]}, "field 'labels': label 'None' (entry 2) is the reserved 'none'"),
    ({"dataset": "toy", "labels": LABELS, "none_label": "joy"}, "field 'none_label': must be a string that is not"),
    ({"dataset": "toy", "labels": LABELS, "task": 1}, "labels.json, field 'task': expected a string"),
])
def test_malformed_label_sets_name_file_and_field(tmp_path, payload, message):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=re.escape(message)):
        read_label_set(path)


# ---- metrics files -----------------------------------------------------------------------------------
def metrics_object(estimator, seed, model="tiny"):
    return {"dataset": "syn", "model": model, "regime": "base", "estimator": estimator, "seed": seed,
            "alignment": {"l1": 0.1}, "classification": {"f1_micro": 0.5}}


def test_metrics_file_round_trip(tmp_path):
    path = tmp_path / "base.json"
    objs = [metrics_object("first_step", 0), metrics_object("output", 0)]
    write_metrics(path, objs)
    back = read_metric_files([path])
    assert [{k: v for k, v in o.items() if k != "_path"} for o in back] == objs
    assert {o["_path"] for o in back} == {str(path)}


@pytest.mark.parametrize("content, message", [
    ({"estimator": "first_step"}, "base.json: expected a JSON list of metrics objects, found dict"),
    ([1], "base.json, field '[0]': expected a metrics object, found int"),
    ([{"dataset": "syn"}], "base.json, field '[0].model': missing key"),
])
def test_read_metric_files_names_file_and_field(tmp_path, content, message):
    path = tmp_path / "base.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=re.escape(message)):
        read_metric_files([path])


def test_read_metric_files_flattens_files_in_order(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([metrics_object("first_step", 0), metrics_object("output", 0)]))
    second.write_text(json.dumps([metrics_object("demux", 0, "encoder")]))
    objs = read_metric_files([first, second])
    assert [o["estimator"] for o in objs] == ["first_step", "output", "demux"]
    assert [o["_path"] for o in objs] == [str(first), str(first), str(second)]




# ---- hidden states -----------------------------------------------------------------------------------
def test_hidden_states_round_trip_and_bad_files(tmp_path):
    import torch
    from safetensors.numpy import save_file

    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    path = tmp_path / "seed0.hidden.safetensors"
    write_hidden(path, hidden, ["b", "a"], [0, 1, 2])
    back = read_hidden_states(path)
    assert back.ids == ["b", "a"] and back.n_layers == 3 and np.array_equal(back.hidden, hidden.numpy())
    first = path.read_bytes()
    write_hidden(path, hidden, ["b", "a"], [0, 1, 2])
    assert path.read_bytes() == first  # deterministic bytes
    save_file({"hidden": hidden.numpy()}, str(path), metadata={"ids": json.dumps(["a"])})
    with pytest.raises(DataError, match=re.escape("seed0.hidden.safetensors, field 'ids': metadata 'ids' must list 2")):
        read_hidden_states(path)
    save_file({"other": hidden.numpy()}, str(path), metadata={"ids": "[]"})
    with pytest.raises(DataError, match=re.escape("field 'hidden': no tensor named 'hidden'")):
        read_hidden_states(path)


# ---- data splits and subsets.json --------------------------------------------------------------------
SPLIT_LS = LabelSet("syn", LABELS)


def split_record(ex_id, labels, annotations=None):
    p_ref = {l: float(l in labels) for l in LABELS} | {"none": float(not labels)}
    return {"id": ex_id, "text": f"text {ex_id}", "labels": labels, "annotations": annotations, "p_ref": p_ref}


def test_split_round_trip_and_derived_views(tmp_path):
    from labeldist.artifacts.splits import gold_matrix, p_ref_matrix, read_split, write_split

    records = [split_record("a", ["joy", "anger"], [["joy"], ["joy", "anger"]]), split_record("b", []),
               dict(split_record("c", ["fear"]), intensity={"fear": 0.9})]
    path = tmp_path / "test.jsonl"
    assert write_split(path, records) == 3
    back = read_split(path, SPLIT_LS)
    assert back == [{k: r[k] for k in ("id", "text", "labels", "annotations", "p_ref")} for r in records]
    assert p_ref_matrix(back, SPLIT_LS.with_none).tolist() == [[1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    assert gold_matrix(back, LABELS).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("damage, line, field", [
    (lambda r: r.pop("text"), 2, "text"),
    (lambda r: r.update(id=7), 2, "id"),
    (lambda r: r.update(labels=["joy", "surprise"]), 2, "labels"),
    (lambda r: r.update(annotations=[["joy"], ["nope"]]), 2, "annotations[1]"),
    (lambda r: r["p_ref"].pop("none"), 2, "p_ref.none"),
    (lambda r: r["p_ref"].update(fear=1.5), 2, "p_ref.fear"),
    (lambda r: r.update(p_ref=None), 2, "p_ref"),
    (lambda r: r.update(id="a"), 2, "id"),  # the id of line 1 again
])
def test_malformed_splits_name_file_line_and_field(tmp_path, damage, line, field):
    from labeldist.artifacts.splits import read_split, write_split

    bad = split_record("b", ["fear"])
    damage(bad)
    path = tmp_path / "dev.jsonl"
    write_split(path, [split_record("a", ["joy"]), bad])
    with pytest.raises(DataError, match=rf"dev.jsonl, line {line}, field '{re.escape(field)}'"):
        read_split(path, SPLIT_LS)


def test_subsets_round_trip_selection_and_demo_pool(tmp_path):
    from labeldist.artifacts.splits import demo_pool, read_subsets, select_records, write_subsets

    path = tmp_path / "subsets.json"
    write_subsets(path, {"main": ["c", "a"], "multi": [], "dev": ["x"], "train": ["b"]})
    subsets = read_subsets(path, required=("main", "train"))
    assert subsets == {"main": ["c", "a"], "multi": [], "dev": ["x"], "train": ["b"]}
    records = [split_record(i, []) for i in "abc"]
    assert [r["id"] for r in select_records(records, subsets["main"], path, "main")] == ["c", "a"]
    assert [r["id"] for r in demo_pool(records, subsets)] == ["a", "c"]
    assert demo_pool(records[1:2], subsets) == []  # one meaning everywhere: no fallback to the whole split
    with pytest.raises(DataError, match="subsets.json, field 'dev'"):
        select_records(records, subsets["dev"], path, "dev")
    with pytest.raises(DataError, match="subsets.json, field 'extra'"):
        read_subsets(path, required=("extra",))
    path.write_text(json.dumps({"main": ["a", 3]}))
    with pytest.raises(DataError, match="subsets.json, field 'main'"):
        read_subsets(path)


# ---- generation records -----------------------------------------------------------------------------
def generation_record(ex_id, steps, **extra):
    labels = list(dict.fromkeys(lab for _, lab in sorted(steps) if lab not in (None, "none")))
    return {"id": ex_id, "demo_ids": [], "output_text": ", ".join(labels), "labels": labels, "unknown": [],
            "repeated": [], "n_tokens": 4, "hit_max_tokens": False, "no_label": not steps,
            "steps": [{"position": pos, "label": lab, "first_token_logits": [0.0, 1.0, 2.0, 3.0],
                       "whole_label_logprobs": [-1.0, -2.0, -3.0, -0.5], "label_logprob": -1.0}
                      for pos, lab in steps], **extra}


def test_generation_files_round_trip(tmp_path):
    from labeldist.artifacts.generations import (read_generations, read_pairwise, read_unary,
                                                  write_generation_records)

    path = tmp_path / "seed0.jsonl"
    records = [generation_record("a", [(3, "fear"), (0, "joy"), (5, None), (7, "fear"), (9, "none")],
                                 marginal=[0.1, 0.2, 0.3, 0.4]),
               generation_record("b", [], hit_max_tokens=True, unknown=["xyz"], repeated=["joy"])]
    assert write_generation_records(path, records) == 2
    a, b = read_generations(path, LABELS)
    assert a.id == "a" and a.labels == ("joy", "fear") and [s.position for s in a.steps] == [0, 3, 5, 7, 9]
    assert a.slot_labels == ["joy", "fear", "none"]  # generation order, unknown and repeat left out
    assert a.steps[0].first_token_logits.tolist() == [0.0, 1.0, 2.0, 3.0] and a.marginal.tolist()[3] == 0.4
    assert (b.no_label, b.hit_max_tokens, b.unknown, b.repeated, b.steps) == (True, True, ("xyz",), ("joy",), ())
    sweep = [dict(generation_record("a", [(0, "joy")]), ratio=r) for r in (0.0, 0.5)]
    write_generation_records(path, sweep)
    assert [g.ratio for g in read_generations(path, LABELS)] == [0.0, 0.5]  # an id once per ratio
    write_generation_records(path, [{"id": "a", "demo_ids": [], "p_reasonable": {"joy": 0.9, "fear": 0.1,
                                                                                 "anger": 0.5}}])
    assert read_unary(path, LABELS)[0].p_reasonable.tolist() == [0.9, 0.1, 0.5]
    write_generation_records(path, [{"id": "a", "demo_ids": [], "pairs": [{"a": "joy", "b": "none", "p_a": 0.7},
                                                                          {"a": "none", "b": "joy", "p_a": 0.2}]}])
    pairs = read_pairwise(path, LABELS)[0]
    assert pairs.a.tolist() == [0, 3] and pairs.b.tolist() == [3, 0] and pairs.p_a.tolist() == [0.7, 0.2]


@pytest.mark.parametrize("damage, field", [
    (lambda r: r["steps"][1].update(position="x"), "steps[1].position"),
    (lambda r: r["steps"][0].update(first_token_logits=[0.0]), "steps[0].first_token_logits"),
    (lambda r: r["steps"][0].update(label="surprise"), "steps[0].label"),
    (lambda r: r.update(ratio=2), "ratio"),
    (lambda r: r.update(unknown="xyz"), "unknown"),
    (lambda r: r.update(no_label="no"), "no_label"),
    (lambda r: r.update(id="a"), "id"),  # the id of line 1 again
])
def test_malformed_generation_files_name_file_line_and_field(tmp_path, damage, field):
    from labeldist.artifacts.generations import read_generations, write_generation_records

    bad = generation_record("b", [(0, "joy"), (2, "fear")])
    damage(bad)
    path = tmp_path / "seed1.jsonl"
    write_generation_records(path, [generation_record("a", [(0, "joy")]), bad])
    with pytest.raises(DataError, match=rf"seed1.jsonl, line 2, field '{re.escape(field)}'"):
        read_generations(path, LABELS)


# ---- CSV tables and training logs ---------------------------------------------------------------------
def test_csv_tables_round_trip_and_bad_files(tmp_path):
    from labeldist.artifacts.tables import read_table_csv, write_table_csv

    table = pd.DataFrame({"dataset": ["d", "d"], "estimator": ["a", "b"], "l1_mean": [0.25, float("nan")]})
    path = tmp_path / "alignment.csv"
    write_table_csv(path, table)
    pd.testing.assert_frame_equal(read_table_csv(path, required=("dataset", "estimator")), table)
    with pytest.raises(DataError, match="alignment.csv, field 'model'"):
        read_table_csv(path, required=("dataset", "model"))
    with pytest.raises(DataError, match="missing.csv: file not found"):
        read_table_csv(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: not a readable CSV"):
        read_table_csv(tmp_path / "empty.csv")


# ---- one owner per file kind ----------------------------------------------------------------------------
FILE_KINDS = {  # docs/formats.md file kind -> (module of labeldist.artifacts, writer, reader)
    "{split}.jsonl": ("splits", "write_split", "read_split"),
    "subsets.json": ("splits", "write_subsets", "read_subsets"),
    "labels.json": ("labels", "write_label_set", "read_label_set"),
    "generation records": ("generations", "write_generation_records", "read_generations"),
    "hidden states": ("hidden", "write_hidden", "read_hidden_states"),
    "estimates": ("estimates", "write_estimates", "read_estimates"),
    "probe layer estimates": ("estimates", "write_layer_estimates", "read_layer_estimates"),
    "metrics": ("metrics", "write_metrics", "read_metric_files"),
    "CSV tables": ("tables", "write_table_csv", "read_table_csv"),
    "training_log.csv": ("tables", "write_training_log", "read_training_log"),
}
READ_CALLS = re.compile(r"\b(iter_jsonl|read_jsonl|read_json|read_csv|read_parquet|safe_open|load_file|json\.load)\(")
# Files a module writes and reads back itself (no other stage reads them): models' model_ref.json,
# Demux's saved model (demux.json and its head). The data stage's loaders read the raw datasets.
OWN_FILES = {"models.py": {"read_json"}, "demux.py": {"read_json", "load_file"}}


def test_every_file_kind_has_its_writer_and_reader_in_artifacts_and_in_formats_md():
    import importlib
    from pathlib import Path

    formats = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    for kind, (module, writer, reader) in FILE_KINDS.items():
        mod = importlib.import_module(f"labeldist.artifacts.{module}")
        assert callable(getattr(mod, writer)) and callable(getattr(mod, reader)), kind
        assert writer in formats and reader in formats, f"docs/formats.md does not name {writer}/{reader} ({kind})"


def test_no_stage_module_parses_another_stages_file():
    """Outside labeldist.artifacts (and io, the data stage's raw-data loaders), no module reads a file
    format itself, except the files in OWN_FILES; a new private reader fails here."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "labeldist"
    found = {}
    for path in sorted(src.glob("*.py")):
        if path.name == "io.py":  # the generic, atomic JSON/JSONL helpers the artifacts build on
            continue
        calls = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith(("from ", "import ", "#")):
                continue
            calls |= {m.group(1) for m in READ_CALLS.finditer(line)}
        if calls:
            found[path.name] = calls
    assert found == OWN_FILES
