"""subsets.json and the written files of the data stage, as docs/formats.md describes them."""

import json
from pathlib import Path

import pytest

from labeldist.data import load_labelled_data, make_subsets, prepare_data


SIZES = {"main_size": 100, "multi_size": 30, "dev_size": 60, "train_size": 200, "seed": 0}
SYN = {"loader": "synthetic", "synthetic": {"labels": ["joy", "optimism", "admiration", "surprise", "fear",
                                                        "sadness", "anger"],
                                             "n_train": 800, "n_dev": 120, "n_test": 160,
                                             "annotators": [3, 5], "seed": 0}}


@pytest.fixture(scope="module")
def data():
    return load_labelled_data("synthetic", SYN)


def test_subsets_are_deterministic_and_seeded(data):
    a, b = make_subsets(data, SIZES), make_subsets(data, SIZES)
    assert a == b
    c = make_subsets(data, {**SIZES, "seed": 1})
    assert c["main"] != a["main"] and c["dev"] != a["dev"] and c["train"] != a["train"]
    # each subset has its own stream: resizing one leaves the others unchanged
    d = make_subsets(data, {**SIZES, "main_size": 50})
    assert d["dev"] == a["dev"] and d["train"] == a["train"] and d["main"] != a["main"][:50]


def test_subset_membership_and_sizes(data):
    s = make_subsets(data, SIZES)
    ids = {split: [ex.id for ex in exs] for split, exs in data.splits.items()}
    gold = {ex.id: ex.labels for exs in data.splits.values() for ex in exs}
    assert len(s["main"]) == 100 and set(s["main"]) <= set(ids["test"]) and len(set(s["main"])) == 100
    assert s["main"] == [i for i in ids["test"] if i in set(s["main"])]  # split-file order
    assert len(s["dev"]) == 60 and set(s["dev"]) <= set(ids["dev"])
    assert len(s["train"]) == 200 and set(s["train"]) <= set(ids["train"])
    n_multi = sum(len(gold[i]) >= 2 for i in ids["test"])
    assert n_multi > 30 and len(s["multi"]) == 30
    assert all(len(gold[i]) >= 2 for i in s["multi"]) and set(s["multi"]) <= set(ids["test"])
    everything = make_subsets(data, {**SIZES, "multi_size": 10_000, "main_size": 10_000})
    assert everything["main"] == ids["test"]
    assert everything["multi"] == [i for i in ids["test"] if len(gold[i]) >= 2]


def test_train_subset_leaves_demos(data):
    s = make_subsets(data, {**SIZES, "train_size": 10_000})
    assert len(s["train"]) == 400  # capped at half the train split


def test_written_files_follow_the_contract(tmp_path):
    out = {k: str(tmp_path / f"{k}.{'json' if k in ('labels', 'subsets') else 'jsonl'}")
           for k in ("train", "dev", "test", "labels", "subsets")}
    prepare_data("synthetic", {**SYN, "subsets": SIZES}, out)
    info = json.loads(Path(out["labels"]).read_text())
    assert info["dataset"] == "synthetic" and info["none_label"] == "none" and info["task"] == "multilabel"
    assert info["p_ref_source"] == "annotators" and info["counts"] == {"train": 800, "dev": 120, "test": 160}
    assert info["skipped"] == {"train": 0, "dev": 0, "test": 0}
    for split in ("train", "dev", "test"):
        lines = Path(out[split]).read_text().splitlines()
        assert len(lines) == info["counts"][split]
        rec = json.loads(lines[0])
        assert list(rec)[:5] == ["id", "text", "labels", "annotations", "p_ref"]
        assert list(rec["p_ref"]) == info["labels"] + ["none"]
        assert rec["id"] == f"syn-{split}-00000"
    subsets = json.loads(Path(out["subsets"]).read_text())
    assert set(subsets) == {"main", "multi", "dev", "train"} and len(subsets["main"]) == 100
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
