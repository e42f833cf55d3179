"""Every loader on the real files in ../shared/data (skipped when absent) or on fixtures written in
the real layouts (tests/fixtures/), with p_ref checked by hand on small cases."""

import json
import shutil
from pathlib import Path

import pytest

from labeldist.data import input_files, load_labelled_data, prepare_data
from labeldist.data import goemotions as ge
from labeldist.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
FIX = REPO / "tests" / "fixtures"
T, TT = 1 / 3, 2 / 3


def shared(sub):
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (only CI and the dev machine have ../shared/data)")
    return str(path)


def by_id(data):
    return {ex.id: (split, ex) for split, exs in data.splits.items() for ex in exs}


def nonzero(p):
    return {k: pytest.approx(v) for k, v in p.items() if v}


# ---- real files ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def goemotions_clusters():
    return load_labelled_data("goemotions", {"loader": "goemotions", "path": shared("goemotions"),
                                             "pooling": "clusters"})


def test_goemotions_real_clusters(goemotions_clusters):
    data = goemotions_clusters
    assert data.labels == ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"]
    assert data.labels_json()["counts"] == {"train": 43410, "dev": 5426, "test": 5427}
    assert data.p_ref_source == "gold" and data.task == "multilabel"
    # train.tsv line 1: "My favourite food is ...\t27\teebbqej" -> neutral -> none
    ex = data.splits["train"][0]
    assert ex.id == "eebbqej" and ex.labels == [] and ex.p_ref["none"] == 1.0 and ex.annotations is None
    # line 3: "WHY THE FUCK IS BAYLESS ISOING\t2" -> anger (index 2) -> anger cluster
    assert data.splits["train"][2].labels == ["anger"] and data.splits["train"][2].origin.line == 3
    multi = sum(len(ex.labels) >= 2 for ex in data.splits["test"])
    assert multi > 100


def test_goemotions_real_unpooled():
    data = load_labelled_data("ge", {"loader": "goemotions", "path": shared("goemotions"), "pooling": "none"})
    assert len(data.labels) == 27 and "neutral" not in data.labels and data.labels[0] == "admiration"
    assert data.splits["train"][2].labels == ["anger"]


def test_mfrc_fractions_real():
    path = shared("mfrc/mfrc_annotator_fractions.jsonl")
    data = load_labelled_data("mfrc", {"loader": "mfrc_fractions", "path": path})
    assert data.labels == ["Authority", "Care", "Equality", "Loyalty", "Proportionality", "Purity"]
    assert data.labels_json()["counts"] == {"train": 15486, "dev": 800, "test": 1600}
    assert data.p_ref_source == "distribution"
    first = data.splits["train"][0]  # {"Purity": 1/3, "none": 2/3}
    assert first.id == "0" and first.labels == [] and nonzero(first.p_ref) == {"Purity": T, "none": TT}
    ex = by_id(data)["7"][1]  # Equality 2/3, Loyalty 1/3, Purity 1/3
    assert ex.labels == ["Equality"] and ex.p_ref["Equality"] == pytest.approx(TT)


def test_semeval_real_carves_test_from_dev():
    cfg = {"loader": "semeval2018_ec", "path": shared("semeval2018_ec")}
    data = load_labelled_data("se", cfg)
    counts = data.labels_json()["counts"]
    assert counts == {"train": 6838, "dev": 443, "test": 443}
    assert len(data.labels) == 11 and data.p_ref_source == "gold"
    ex = data.splits["train"][0]  # 2017-En-21441: anticipation, optimism, trust
    assert ex.id == "2017-En-21441" and ex.labels == ["anticipation", "optimism", "trust"]
    again = load_labelled_data("se", cfg)
    assert [e.id for e in again.splits["test"]] == [e.id for e in data.splits["test"]]
    other = load_labelled_data("se", {**cfg, "split_seed": 1})
    assert [e.id for e in other.splits["test"]] != [e.id for e in data.splits["test"]]
    assert not {e.id for e in data.splits["test"]} & {e.id for e in data.splits["dev"]}


def test_semeval_labelled_test_file_is_used(tmp_path):
    for f in ("2018-E-c-En-train.txt", "2018-E-c-En-dev.txt"):
        shutil.copy(Path(shared("semeval2018_ec")) / f, tmp_path / f)
    lines = (tmp_path / "2018-E-c-En-dev.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "2018-E-c-En-test-gold.txt").write_text(
        "\n".join([lines[0]] + [ln.replace("2018-En-", "2018-Test-", 1) for ln in lines[1:6]]) + "\n",
        encoding="utf-8")
    data = load_labelled_data("se", {"loader": "semeval2018_ec", "path": str(tmp_path)})
    assert data.labels_json()["counts"] == {"train": 6838, "dev": 886, "test": 5}
    assert str(tmp_path / "2018-E-c-En-test-gold.txt") in input_files({"loader": "semeval2018_ec",
                                                                       "path": str(tmp_path)})


# ---- fixtures in the real layouts ---------------------------------------------------------------
def test_goemotions_raters_fixture_clusters():
    data = load_labelled_data("gr", {"loader": "goemotions_raters", "path": str(FIX / "goemotions_raters")})
    assert data.p_ref_source == "annotators" and data.labels == list(ge.CLUSTERS)
    ids = by_id(data)
    # eefx001: amusement+gratitude / joy / gratitude -> {joy, admiration} / {joy} / {admiration}
    ex = ids["eefx001"][1]
    assert ex.annotations == [["joy", "admiration"], ["joy"], ["admiration"]]
    assert nonzero(ex.p_ref) == {"joy": TT, "admiration": TT} and ex.labels == ["joy", "admiration"]
    # eefx002: anger / disappointment / neutral -> anger 1/3, sadness 1/3, none 1/3, no gold label
    assert nonzero(ids["eefx002"][1].p_ref) == {"anger": T, "sadness": T, "none": T}
    assert ids["eefx002"][1].labels == []
    # eefx003: 4 ratings over two files, one very unclear (dropped): confusion+curiosity / surprise / neutral
    ex = ids["eefx003"][1]
    assert len(ex.annotations) == 3 and nonzero(ex.p_ref) == {"surprise": TT, "none": T}
    # eefx004: every rating very unclear -> example dropped
    assert "eefx004" not in ids
    info = data.labels_json()
    assert sum(info["skipped"].values()) == 1 and sum(info["skipped_annotations"].values()) == 4
    assert sum(info["counts"].values()) == 10


def test_goemotions_raters_fixture_unpooled_and_official_splits(tmp_path):
    data = load_labelled_data("gr", {"loader": "goemotions_raters", "path": str(FIX / "goemotions_raters"),
                                     "pooling": "none"})
    ex = by_id(data)["eefx003"][1]
    assert nonzero(ex.p_ref) == {"confusion": T, "curiosity": T, "surprise": T, "none": T} and ex.labels == []
    # with the aggregated TSVs beside the rater files, their split membership is used
    for f in ("goemotions_1.csv", "goemotions_2.csv"):
        shutil.copy(FIX / "goemotions_raters" / f, tmp_path / f)
    split_of = {"train": ["eefx001", "eefx002", "eefx003", "eefx004", "eefx005", "eefx006", "eefx007"],
                "dev": ["eefx008", "eefx009"], "test": ["eefx010"]}  # eefx011: in no official split
    for split, ids in split_of.items():
        (tmp_path / f"{split}.tsv").write_text("".join(f"text {i}\t27\t{i}\n" for i in ids), encoding="utf-8")
    data = load_labelled_data("gr", {"loader": "goemotions_raters", "path": str(tmp_path)})
    assert {s: [e.id for e in exs] for s, exs in data.splits.items()} == {
        "train": ["eefx001", "eefx002", "eefx003", "eefx005", "eefx006", "eefx007"],
        "dev": ["eefx008", "eefx009"], "test": ["eefx010"]}
    assert "1 rated comment(s) in none of the official splits: left out" in data.notes


def test_mfrc_fixture_drop_rule():
    cfg = {"loader": "mfrc", "path": str(FIX / "mfrc" / "mfrc_annotations.csv")}
    # the seeded split covers every text, dropped ones too (so drop rules never move other texts):
    # with split_seed 0 the only test text of this tiny file is the dropped one -> a clear error
    with pytest.raises(DataError, match="split 'test' has no examples \\(1 dropped"):
        load_labelled_data("mfrc", {**cfg, "split_seed": 0})
    data = load_labelled_data("mfrc", {**cfg, "split_seed": 1})
    texts = {ex.text: ex for exs in data.splits.values() for ex in exs}
    # Equality,Proportionality / Equality / Non-Moral
    ex = texts["Taxing the rich is the only fair thing to do."]
    assert nonzero(ex.p_ref) == {"Equality": TT, "Proportionality": T, "none": T} and ex.labels == ["Equality"]
    # Care / Care,Thin Morality (mixed: dropped) / Care,Authority -> 2 annotations: Care 1, Authority 1/2
    ex = texts["Protect the kids first, always."]
    assert ex.annotations == [["Care"], ["Authority", "Care"]]
    assert nonzero(ex.p_ref) == {"Care": 1.0, "Authority": 0.5} and ex.labels == ["Authority", "Care"]
    # lone Non-Moral / Thin Morality -> none
    ex = texts["Just a normal day at the office, nothing to report."]
    assert ex.annotations == [[], [], []] and ex.p_ref["none"] == 1.0 and ex.labels == []
    # both annotations mixed -> example dropped
    assert "Loyalty to your team matters more than winning." not in texts
    info = data.labels_json()
    assert sum(info["skipped"].values()) == 1 and sum(info["skipped_annotations"].values()) == 3
    # a quoted multi-line text keeps its newline and its first physical line
    ex = texts["The rules exist for a reason.\nRespect the referee."]
    assert ex.origin.line == 16 and ex.labels == ["Authority"]
    assert sum(info["counts"].values()) == 11 and all(v >= 1 for v in info["counts"].values())


def test_mfrc_split_column_is_used(tmp_path):
    src = (FIX / "mfrc" / "mfrc_annotations.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    import csv
    rows = list(csv.reader(src))
    texts = sorted({r[0] for r in rows[1:]})
    split = {t: ("test" if i == 0 else "dev" if i == 1 else "train") for i, t in enumerate(texts)}
    with open(tmp_path / "m.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(rows[0] + ["split"])
        for r in rows[1:]:
            w.writerow(r + [split[r[0]]])
    data = load_labelled_data("mfrc", {"loader": "mfrc", "path": str(tmp_path / "m.csv")})
    assert [e.text for e in data.splits["test"]] == [texts[0]]


def test_hatexplain_fixture():
    data = load_labelled_data("hx", {"loader": "hatexplain", "path": str(FIX / "hatexplain")})
    assert data.task == "single_label" and data.labels == ["hatespeech", "normal", "offensive"]
    ids = by_id(data)
    split, ex = ids["1179055004553900032_twitter"]  # normal, normal, offensive
    assert split == "train" and ex.labels == ["normal"]
    assert ex.p_ref == {"hatespeech": 0.0, "normal": pytest.approx(TT), "offensive": pytest.approx(T), "none": 0.0}
    assert ex.text.startswith("i dont think i am") and ex.origin.line == 2
    assert ids["13851720_gab"][0] == "test" and ids["13851720_gab"][1].p_ref["hatespeech"] == 1.0
    assert ids["9735183_gab"][0] == "dev"  # "val" -> dev
    for _, ex in ids.values():
        assert sum(ex.p_ref.values()) == pytest.approx(1.0) and len(ex.labels) == 1
    # hatespeech / offensive / normal: no majority -> undecided, dropped and counted
    assert "1179063826874032128_twitter" not in ids
    assert data.labels_json()["skipped"] == {"train": 1, "dev": 0, "test": 0}


def test_hatexplain_without_divisions_is_split_by_seed(tmp_path):
    posts = json.loads((FIX / "hatexplain" / "dataset.json").read_text())
    many = {f"{pid}_{k}": {**post, "post_id": f"{pid}_{k}"} for k in range(3) for pid, post in posts.items()}
    (tmp_path / "dataset.json").write_text(json.dumps(many))
    data = load_labelled_data("hx", {"loader": "hatexplain", "path": str(tmp_path / "dataset.json")})
    counts = data.labels_json()["counts"]
    assert sum(counts.values()) == 27 and sum(data.skipped.values()) == 3  # 3 copies of the undecided post
    assert min(counts.values()) >= 1 and data.splits["train"][0].origin.line == 1  # one-line JSON file


def test_generic_annotations_and_distribution_fixtures():
    a = load_labelled_data("g", {"loader": "generic", "path": str(FIX / "generic" / "annotations.jsonl")})
    d = load_labelled_data("g", {"loader": "generic", "path": str(FIX / "generic" / "distribution.csv")})
    assert a.labels == d.labels == ["damage", "quality", "refund", "shipping"]  # inferred, sorted
    assert a.p_ref_source == "annotators" and d.p_ref_source == "distribution"
    ea, ed = by_id(a), by_id(d)
    ex = ea["g002"][1]  # refund / refund+shipping / nothing
    assert nonzero(ex.p_ref) == {"refund": TT, "shipping": T, "none": T} and ex.labels == ["refund"]
    for i in ea:
        assert ea[i][0] == ed[i][0] and ea[i][1].labels == ed[i][1].labels
        for k, v in ea[i][1].p_ref.items():
            assert ed[i][1].p_ref[k] == pytest.approx(v, abs=1e-4)
    # a configured label order wins over the inferred one
    c = load_labelled_data("g", {"loader": "generic", "path": str(FIX / "generic" / "annotations.jsonl"),
                                 "labels": ["shipping", "refund", "damage", "quality"]})
    assert by_id(c)["g001"][1].labels == ["shipping", "damage"]


def test_generic_with_120_labels(tmp_path):
    labels = [f"class_{i:03d}" for i in range(120)]
    path = tmp_path / "many.jsonl"
    with open(path, "w") as fh:
        for i in range(240):
            gold = [labels[i % 120], labels[(i * 7 + 3) % 120]] if i % 3 else [labels[i % 120]]
            fh.write(json.dumps({"id": f"e{i}", "text": f"text number {i}", "labels": ",".join(gold)}) + "\n")
    cfg = {"loader": "generic", "path": str(path), "split_seed": 3,
           "subsets": {"main_size": 10, "multi_size": 10, "dev_size": 10, "train_size": 50, "seed": 0}}
    data = load_labelled_data("many", cfg)
    assert data.labels == labels and data.p_ref_source == "gold"
    assert data.labels_json()["counts"] == {"train": 192, "dev": 24, "test": 24}
    ex = by_id(data)["e1"][1]
    assert ex.labels == ["class_001", "class_010"] and len(ex.p_ref) == 121 and sum(ex.p_ref.values()) == 2.0
    out = {k: str(tmp_path / "out" / k) for k in ("train", "dev", "test", "labels", "subsets")}
    prepare_data("many", cfg, out)
    assert len(json.loads(Path(out["labels"]).read_text())["labels"]) == 120


def test_generic_folder_and_single_label(tmp_path):
    for split, rows in {"train": [("a", "x y", ["b"], [["b"], ["b"], ["c"]]),
                                  ("b", "y z", ["c"], [["c"], ["c"], ["b"]])],
                        "dev": [("c", "z w", ["b"], [["b"], ["c"], ["b"]])],
                        "test": [("d", "w v", ["c"], [["c"], ["b"], ["b"], ["c"]])]}.items():
        with open(tmp_path / f"{split}.jsonl", "w") as fh:
            for i, t, g, a in rows:
                fh.write(json.dumps({"id": i, "text": t, "labels": g, "annotations": a}) + "\n")
    cfg = {"loader": "generic", "path": str(tmp_path), "task": "single_label"}
    data = load_labelled_data("s", cfg)
    ex = by_id(data)["d"][1]  # 2-2 tie resolved by the labels field
    assert data.task == "single_label" and ex.labels == ["c"] and ex.p_ref == {"b": 0.5, "c": 0.5, "none": 0.0}
    assert sorted(input_files(cfg)) == sorted(str(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test"))


# ---- GoEmotions from the datasets hub: dispatch only (no hub here) -------------------------------
def test_goemotions_hub_id_dispatches_to_load_dataset(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    feats = Features({"text": Value("string"), "labels": List(ClassLabel(names=ge.EMOTIONS)), "id": Value("string")})
    rows = {"train": [("so funny and kind", [1, 5], "h1"), ("meh", [27], "h2")],
            "validation": [("scary", [14], "h3")], "test": [("wow thanks", [26, 15], "h4")]}
    fake = DatasetDict({s: Dataset.from_dict({"text": [r[0] for r in rs], "labels": [r[1] for r in rs],
                                              "id": [r[2] for r in rs]}, features=feats) for s, rs in rows.items()})
    calls = []

    def fake_load(path, name=None, **kw):
        calls.append((path, name))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = {"loader": "goemotions", "path": "google-research-datasets/go_emotions", "pooling": "clusters"}
    assert input_files(cfg) == []
    data = load_labelled_data("ge", cfg)
    assert calls == [("google-research-datasets/go_emotions", "simplified")]
    ids = by_id(data)
    assert ids["h1"] == ("train", ids["h1"][1]) and ids["h1"][1].labels == ["joy", "optimism"]
    assert ids["h2"][1].labels == [] and ids["h3"][0] == "dev" and ids["h4"][1].labels == ["admiration", "surprise"]


def test_goemotions_hub_failure_is_a_clear_data_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("offline mode")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="datasets.load_dataset failed.*offline mode") as err:
        load_labelled_data("ge", {"loader": "goemotions", "path": "someone/missing_dataset"})
    assert err.value.field == "datasets.ge.path"
