"""The hub code path of the data stage, offline: small files written in the hub repositories' layout
(GoEmotions: parquet under raw/ and simplified/ with the repository card's `configs`; MFRC:
final_mfrc_data.csv) and read through `datasets.load_dataset` exactly as a hub id is; p_ref checked by
hand. No network: conftest sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from labeldist.data import load_labelled_data, prepare_data
from labeldist.data.goemotions import EMOTIONS
from labeldist.data.mfrc import text_id
from labeldist.errors import DataError

@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path, monkeypatch):
    """A fresh `datasets` cache per test: load_dataset must read these files, not an earlier test's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


GO_CARD = """---
configs:
- config_name: raw
  data_files:
  - split: train
    path: raw/train-*
- config_name: simplified
  data_files:
  - split: train
    path: simplified/train-*
  - split: validation
    path: simplified/validation-*
  - split: test
    path: simplified/test-*
---
# GoEmotions (test copy in the hub layout)
"""

# comment id -> (text, [(very_unclear, [emotions])] one per rater)
RATINGS = {
    "c1": ("I love this, thank you!", [(False, ["love", "gratitude"]), (False, ["joy"]), (False, ["admiration"])]),
    "c2": ("Why would you do that?", [(False, ["confusion"]), (False, ["anger", "neutral"]), (True, [])]),
    "c3": ("ok", [(False, ["neutral"]), (False, ["neutral"])]),
    "c4": ("This is scary and sad", [(False, ["fear", "sadness"]), (False, ["nervousness"]),
                                     (False, ["remorse"]), (False, [])]),
    "c5": ("Best day ever", [(False, ["excitement"]), (False, ["joy"])]),
    "c6": ("Not rated in any split", [(False, ["joy"])]),
    "c7": ("All unclear", [(True, [])]),
}
SPLITS = {"train": ["c1", "c5"], "validation": ["c2", "c7"], "test": ["c3", "c4"]}


def write_go_emotions_hub(root: Path, splits=SPLITS) -> Path:
    """A local folder in the layout of the hub repository google-research-datasets/go_emotions."""
    import datasets

    (root / "raw").mkdir(parents=True)
    (root / "simplified").mkdir()
    (root / "README.md").write_text(GO_CARD)
    rows = {c: [] for c in ["text", "id", "author", "subreddit", "link_id", "parent_id", "created_utc",
                            "rater_id", "example_very_unclear"] + EMOTIONS}
    for rater, (cid, (text, ratings)) in enumerate((c, r) for c, r in RATINGS.items()):
        for k, (unclear, chosen) in enumerate(ratings):
            for col, val in (("text", text), ("id", cid), ("author", "a"), ("subreddit", "s"), ("link_id", "l"),
                             ("parent_id", "p"), ("created_utc", 1.5e9), ("rater_id", rater * 10 + k),
                             ("example_very_unclear", unclear)):
                rows[col].append(val)
            for e in EMOTIONS:
                rows[e].append(int(e in chosen))
    datasets.Dataset.from_dict(rows).to_parquet(str(root / "raw" / "train-00000-of-00001.parquet"))
    feats = datasets.Features({"text": datasets.Value("string"),
                               "labels": datasets.Sequence(datasets.ClassLabel(names=EMOTIONS)),
                               "id": datasets.Value("string")})
    for split, ids in splits.items():
        simple = {"text": [RATINGS[c][0] for c in ids], "labels": [[EMOTIONS.index("joy")] for _ in ids], "id": ids}
        datasets.Dataset.from_dict(simple, features=feats).to_parquet(
            str(root / "simplified" / f"{split}-00000-of-00001.parquet"))
    return root


def go_cfg(hub: Path, **extra) -> dict:
    return {"loader": "goemotions", "hub": str(hub), "p_ref_source": "annotators", "pooling": "clusters", **extra}


def test_goemotions_raw_p_ref_from_raters_by_hand(tmp_path):
    data = load_labelled_data("go", go_cfg(write_go_emotions_hub(tmp_path / "go")))
    assert data.p_ref_source == "annotators"
    by_id = {ex.id: ex for split in data.splits.values() for ex in split}
    assert set(by_id) == {"c1", "c2", "c3", "c4", "c5"}  # c6 in no split, c7 every rating very unclear
    assert [ex.id for ex in data.splits["train"]] == ["c1", "c5"]
    # c1: raters {love, gratitude} -> {joy, admiration}; {joy} -> {joy}; {admiration} -> {admiration}
    p = by_id["c1"].p_ref
    assert p["joy"] == pytest.approx(2 / 3) and p["admiration"] == pytest.approx(2 / 3)
    assert p["none"] == 0.0 and p["anger"] == 0.0
    assert by_id["c1"].labels == ["joy", "admiration"]
    # c2: the very-unclear rating dropped; {confusion} -> surprise, {anger, neutral} -> anger
    p = by_id["c2"].p_ref
    assert (p["surprise"], p["anger"], p["none"]) == (0.5, 0.5, 0.0)
    assert by_id["c2"].labels == ["surprise", "anger"]
    # c3: two neutral raters -> none = 1
    assert by_id["c3"].p_ref["none"] == 1.0 and by_id["c3"].labels == []
    # c4: {fear, sadness}, {fear}, {sadness}, {} -> fear 1/2, sadness 1/2, none 1/4
    p = by_id["c4"].p_ref
    assert (p["fear"], p["sadness"], p["none"]) == (0.5, 0.5, 0.25)
    info = data.labels_json()
    assert info["skipped"] == {"train": 0, "dev": 1, "test": 0}          # c7
    assert info["skipped_annotations"] == {"train": 0, "dev": 2, "test": 0}  # c2's and c7's unclear ratings
    assert info["rule_counts"]["neutral_with_emotion"] == {"train": 0, "dev": 1, "test": 0}
    assert any("neutral together with an emotion" in n for n in info["notes"])
    assert any("1 rated comment(s) in none of the official splits" in n for n in info["notes"])


def test_goemotions_27_emotions_from_raters(tmp_path):
    data = load_labelled_data("go", go_cfg(write_go_emotions_hub(tmp_path / "go"), pooling="none"))
    assert len(data.labels) == 27 and "neutral" not in data.labels
    c1 = next(ex for ex in data.splits["train"] if ex.id == "c1")
    assert c1.p_ref["love"] == pytest.approx(1 / 3) and c1.p_ref["joy"] == pytest.approx(1 / 3)
    assert c1.labels == []  # no emotion reaches half of the raters


def test_goemotions_hub_gold_from_simplified(tmp_path):
    data = load_labelled_data("go", go_cfg(write_go_emotions_hub(tmp_path / "go"), p_ref_source="gold"))
    assert data.p_ref_source == "gold"
    assert [ex.id for ex in data.splits["test"]] == ["c3", "c4"]
    assert data.splits["test"][0].labels == ["joy"]


def test_goemotions_empty_official_split_names_it(tmp_path):
    hub = write_go_emotions_hub(tmp_path / "go", splits={**SPLITS, "validation": []})
    with pytest.raises(DataError, match=r"simplified/validation\], field 'datasets.go.hub': empty official split"):
        load_labelled_data("go", go_cfg(hub))


def test_missing_hub_dataset_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(DataError) as err:
        load_labelled_data("go", go_cfg(tmp_path / "nowhere" / "go_emotions"))
    msg = str(err.value)
    assert "datasets.go.hub" in msg and "HF_HOME" in msg and "\n" not in msg


# ---- MFRC, per annotator ----------------------------------------------------------------------------
MFRC_ROWS = [  # text, annotator, annotation
    ("Be kind to each other.", "a1", "Care"),
    ("Be kind to each other.", "a2", "Care,Purity"),
    ("Be kind to each other.", "a3", "Non-Moral"),
    ("Respect the rules.", "a1", "Authority"),
    ("Respect the rules.", "a2", "Thin Morality"),
    ("Respect the rules.", "a3", "Authority,Non-Moral"),
    ("Loyal to the end.", "a1", "Loyalty"),
    ("Loyal to the end.", "a2", "Loyalty"),
    ("Not in the split file.", "a1", "Care"),
]


def write_mfrc_hub(root: Path) -> tuple[Path, Path]:
    """A folder in the layout of USC-MOLA-Lab/MFRC (final_mfrc_data.csv) and a split file by text id."""
    root.mkdir(parents=True)
    with open(root / "final_mfrc_data.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "subreddit", "bucket", "annotator", "annotation", "confidence"])
        for text, ann, lab in MFRC_ROWS:
            w.writerow([text, "r/x", "French politics", ann, lab, "Confident"])
    split_file = root.parent / "splits.csv"
    split_file.write_text("id,split\n" + "".join(
        f"{text_id(t)},{s}\n" for t, s in (("Be kind to each other.", "train"), ("Respect the rules.", "dev"),
                                           ("Loyal to the end.", "test"))))
    return root, split_file


def test_mfrc_hub_per_annotator_with_split_file(tmp_path):
    hub, split_file = write_mfrc_hub(tmp_path / "mfrc")
    data = load_labelled_data("mfrc", {"loader": "mfrc", "hub": str(hub), "split_file": str(split_file),
                                       "p_ref_source": "annotators"})
    (kind,), (rules,), (loyal,) = data.splits["train"], data.splits["dev"], data.splits["test"]
    # kind: {Care}, {Care, Purity}, {} (lone Non-Moral) -> Care 2/3, Purity 1/3, none 1/3
    assert kind.p_ref["Care"] == pytest.approx(2 / 3) and kind.p_ref["Purity"] == pytest.approx(1 / 3)
    assert kind.p_ref["none"] == pytest.approx(1 / 3) and kind.labels == ["Care"]
    assert kind.id == text_id("Be kind to each other.")
    # rules: {Authority}, {} (Thin Morality), mixed annotation dropped -> Authority 1/2, none 1/2
    assert (rules.p_ref["Authority"], rules.p_ref["none"]) == (0.5, 0.5)
    assert loyal.p_ref["Loyalty"] == 1.0
    info = data.labels_json()
    assert info["skipped_annotations"] == {"train": 0, "dev": 1, "test": 0}
    assert any("1 comment(s) not in the split file" in n for n in info["notes"])


def test_mfrc_local_file_same_layout(tmp_path):
    hub, split_file = write_mfrc_hub(tmp_path / "mfrc")
    local = load_labelled_data("m", {"loader": "mfrc", "path": str(hub / "final_mfrc_data.csv"),
                                     "split_file": str(split_file)})
    from_hub = load_labelled_data("m", {"loader": "mfrc", "hub": str(hub), "split_file": str(split_file)})
    assert [[e.to_record() for e in local.splits[s]] for s in ("train", "dev", "test")] == \
           [[e.to_record() for e in from_hub.splits[s]] for s in ("train", "dev", "test")]


def test_mfrc_empty_split_file_names_the_file(tmp_path):
    hub, split_file = write_mfrc_hub(tmp_path / "mfrc")
    split_file.write_text("id,split\n")
    with pytest.raises(DataError, match=rf"{split_file.name}: empty split file"):
        load_labelled_data("m", {"loader": "mfrc", "hub": str(hub), "split_file": str(split_file)})


def test_study_split_file_matches_the_shared_fractions(shared_data):
    """data/mfrc/study_splits.csv is the study's split of every text of the shared fractions file."""
    from .conftest import REPO

    listed = dict(row for row in csv.reader(open(REPO / "data" / "mfrc" / "study_splits.csv")))
    with open(shared_data / "mfrc" / "mfrc_annotator_fractions.jsonl") as fh:
        for line in fh:
            obj = json.loads(line)
            assert listed[text_id(obj["text"])] == obj["split"]


def test_p_ref_source_mismatch_stops_the_data_job(tmp_path):
    hub, split_file = write_mfrc_hub(tmp_path / "mfrc")
    with pytest.raises(DataError, match="p_ref_source is 'gold'"):
        load_labelled_data("m", {"loader": "mfrc", "hub": str(hub), "split_file": str(split_file),
                                 "p_ref_source": "gold"})


def test_missing_local_data_names_key_and_where_to_get_it(tmp_path):
    outputs = {k: str(tmp_path / "out" / f"{k}.json") for k in ("train", "dev", "test", "labels", "subsets")}
    with pytest.raises(DataError) as err:
        prepare_data("hx", {"loader": "hatexplain", "path": str(tmp_path / "hatexplain")}, outputs)
    msg = str(err.value)
    assert "datasets.hx.path" in msg and "github.com/hate-alert/HateXplain" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_goemotions_local_rater_files_keep_working():
    """Loader goemotions with `path` and `p_ref_source: annotators` reads the local rater CSVs exactly as
    loader goemotions_raters does."""
    folder = Path(__file__).parent / "fixtures" / "goemotions_raters"
    a = load_labelled_data("g", {"loader": "goemotions", "path": str(folder), "p_ref_source": "annotators"})
    b = load_labelled_data("g", {"loader": "goemotions_raters", "path": str(folder)})
    assert a.p_ref_source == b.p_ref_source == "annotators"
    assert [[e.to_record() for e in a.splits[s]] for s in a.splits] == \
           [[e.to_record() for e in b.splits[s]] for s in b.splits]
    assert sum(len(v) for v in a.splits.values()) > 0
