"""Bad input: each case is a DataError naming the file, the 1-based physical line and the field, and
the data stage writes no output file."""

import json
import shutil
from pathlib import Path

import pytest

from labeldist.data import load_labelled_data, prepare_data
from labeldist.errors import DataError

FIX = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
EMO_HEADER = "ID\tTweet\tanger\tanticipation\tdisgust\tfear\tjoy\tlove\toptimism\tpessimism\tsadness\tsurprise\ttrust"


def expect(cfg, path, line, field=None, match=None):
    """Load `cfg`, expect a DataError at (path, line, field); return it."""
    with pytest.raises(DataError) as err:
        load_labelled_data("bad", cfg)
    e = err.value
    assert Path(e.path) == Path(path), str(e)
    assert e.line == line, str(e)
    assert e.field == field, str(e)
    if match:
        assert match in str(e), str(e)
    where = f"{path}, line {line}" if line is not None else str(path)
    assert str(e).startswith(where)
    return e


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def generic_rows(n=6):
    return [{"id": f"r{i}", "text": f"text {i}", "labels": ["a"] if i % 2 else ["b"],
             "split": ["train", "train", "train", "train", "dev", "test"][i % 6]} for i in range(n)]


def goemotions_folder(tmp_path, train=None, test=None):
    folder = tmp_path / "ge"
    folder.mkdir()
    (folder / "train.tsv").write_text(train or "I love it\t18\tid1\nso sad\t25\tid2\n", encoding="utf-8")
    (folder / "dev.tsv").write_text("what?\t26\tid3\n", encoding="utf-8")
    (folder / "test.tsv").write_text(test or "ok then\t27\tid4\n", encoding="utf-8")
    return folder


def semeval_folder(tmp_path, test_rows=None):
    folder = tmp_path / "se"
    folder.mkdir()
    row = "\t".join(["0"] * 11)
    (folder / "2018-E-c-En-train.txt").write_text(
        EMO_HEADER + "\n" + "".join(f"2018-En-{i:05d}\ttweet {i}\t{row}\n" for i in range(6)), encoding="utf-8")
    (folder / "2018-E-c-En-dev.txt").write_text(
        EMO_HEADER + "\n" + "".join(f"2018-En-1{i:04d}\ttweet {i}\t{row}\n" for i in range(4)), encoding="utf-8")
    if test_rows is not None:
        (folder / "2018-E-c-En-test.txt").write_text(EMO_HEADER + "\n" + "".join(test_rows), encoding="utf-8")
    return folder


# ---- malformed lines ----------------------------------------------------------------------------
def test_malformed_jsonl_line(tmp_path):
    rows = generic_rows()
    rows[2] = '{"id": "r2", "text": "broken'
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 3, match="malformed JSON")


def test_malformed_jsonl_line_in_mfrc_fractions(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [
        {"id": "1", "split": "train", "text": "t", "distribution": {"Care": 1.0}}, "[1, 2]"])
    expect({"loader": "mfrc_fractions", "path": str(path)}, path, 2, match="expected a JSON object")


def test_malformed_csv_row_wrong_field_count(tmp_path):
    src = (FIX / "mfrc" / "mfrc_annotations.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    src[4] = src[4].rstrip("\n") + ",extra\n"
    path = tmp_path / "m.csv"
    path.write_text("".join(src), encoding="utf-8")
    expect({"loader": "mfrc", "path": str(path)}, path, 5, match="7 fields, the header has 6")


def test_malformed_csv_unterminated_quote(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,annotator,annotation\nok,a1,Care\n"never closed,a2,Care\nmore,a3,Care\n', encoding="utf-8")
    expect({"loader": "mfrc", "path": str(path)}, path, 3, match="malformed CSV record")


def test_malformed_goemotions_tsv_line(tmp_path):
    folder = goemotions_folder(tmp_path, train="fine\t1\tid1\nno ids here\tid2\n")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "train.tsv", 2, match="2 tab-separated")


def test_malformed_rater_value(tmp_path):
    src = (FIX / "goemotions_raters" / "goemotions_1.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    src[3] = src[3].replace(",False,", ",maybe,", 1)
    (tmp_path / "goemotions_1.csv").write_text("".join(src), encoding="utf-8")
    expect({"loader": "goemotions_raters", "path": str(tmp_path)}, tmp_path / "goemotions_1.csv", 4,
           "example_very_unclear")


# ---- empty text ---------------------------------------------------------------------------------
def test_empty_text_generic(tmp_path):
    rows = generic_rows()
    rows[4]["text"] = "   "
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 5, "text", "empty text")


def test_empty_text_goemotions(tmp_path):
    folder = goemotions_folder(tmp_path, test="ok\t27\tid4\n\t3\tid5\n")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "test.tsv", 2, "text", "empty text")


def test_empty_text_semeval(tmp_path):
    folder = semeval_folder(tmp_path)
    path = folder / "2018-E-c-En-dev.txt"
    lines = path.read_text().splitlines()
    lines[3] = "2018-En-10002\t \t" + "\t".join(["1"] * 11)
    path.write_text("\n".join(lines) + "\n")
    expect({"loader": "semeval2018_ec", "path": str(folder)}, path, 4, "Tweet", "empty text")


def test_empty_text_mfrc(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,annotator,annotation\nok,a1,Care\n"",a2,Care\n', encoding="utf-8")
    expect({"loader": "mfrc", "path": str(path)}, path, 3, "text", "empty text")


def test_empty_text_hatexplain(tmp_path):
    posts = json.loads((FIX / "hatexplain" / "dataset.json").read_text())
    posts["13851720_gab"]["post_tokens"] = []
    (tmp_path / "dataset.json").write_text(json.dumps(posts, indent=4))
    shutil.copy(FIX / "hatexplain" / "post_id_divisions.json", tmp_path)
    line = json.dumps(posts, indent=4).splitlines().index('    "13851720_gab": {') + 1
    expect({"loader": "hatexplain", "path": str(tmp_path)}, tmp_path / "dataset.json", line, "post_tokens")


# ---- labels outside the label set ---------------------------------------------------------------
def test_unknown_label_generic_with_configured_labels(tmp_path):
    rows = generic_rows()
    rows[3]["labels"] = ["a", "zzz"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path), "labels": ["a", "b"]}, path, 4, "labels", "'zzz'")


def test_unknown_label_in_annotations(tmp_path):
    rows = [{"id": f"r{i}", "text": "t", "annotations": [["a"], ["b"]]} for i in range(5)]
    rows[1]["annotations"] = [["a"], ["c"]]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path), "labels": ["a", "b"]}, path, 2, "annotations[1]", "'c'")


def test_unknown_goemotions_index(tmp_path):
    folder = goemotions_folder(tmp_path, train="fine\t1\tid1\nbad\t3,28\tid2\n")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "train.tsv", 2, "emotion ids", "'28'")


def test_unknown_mfrc_foundation(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,annotator,annotation\nok,a1,Care\nbad,a2,\"Care,Liberty\"\n", encoding="utf-8")
    expect({"loader": "mfrc", "path": str(path)}, path, 3, "annotation", "'Liberty'")


def test_unknown_key_in_fractions(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [
        {"id": "1", "split": "train", "text": "t", "distribution": {"Care": 1.0}},
        {"id": "2", "split": "test", "text": "t", "distribution": {"Liberty": 0.5, "none": 0.5}}])
    expect({"loader": "mfrc_fractions", "path": str(path)}, path, 2, "distribution", "'Liberty'")


def test_unknown_hatexplain_label(tmp_path):
    posts = json.loads((FIX / "hatexplain" / "dataset.json").read_text())
    posts["9735183_gab"]["annotators"][2]["label"] = "toxic"
    text = json.dumps(posts, indent=4)
    (tmp_path / "dataset.json").write_text(text)
    line = text.splitlines().index('    "9735183_gab": {') + 1
    expect({"loader": "hatexplain", "path": str(tmp_path / "dataset.json")}, tmp_path / "dataset.json", line,
           "annotators[2].label", "'toxic'")


def test_semeval_bad_value(tmp_path):
    folder = semeval_folder(tmp_path)
    path = folder / "2018-E-c-En-train.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: lines[2].rindex("\t")] + "\t2"
    path.write_text("\n".join(lines) + "\n")
    expect({"loader": "semeval2018_ec", "path": str(folder)}, path, 3, "trust", "expected 0 or 1")


# ---- zero annotators ----------------------------------------------------------------------------
def test_zero_annotators_generic(tmp_path):
    rows = [{"id": f"r{i}", "text": "t", "annotations": [["a"], []]} for i in range(5)]
    rows[2]["annotations"] = []
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 3, "annotations", "zero annotators")


def test_zero_annotators_hatexplain(tmp_path):
    posts = json.loads((FIX / "hatexplain" / "dataset.json").read_text())
    posts["24439295_gab"]["annotators"] = []
    text = json.dumps(posts, indent=4)
    (tmp_path / "dataset.json").write_text(text)
    line = text.splitlines().index('    "24439295_gab": {') + 1
    expect({"loader": "hatexplain", "path": str(tmp_path / "dataset.json")}, tmp_path / "dataset.json", line,
           "annotators", "zero annotators")


def test_zero_annotators_fractions(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [
        {"id": "1", "split": "train", "text": "t", "distribution": {}}])
    expect({"loader": "mfrc_fractions", "path": str(path)}, path, 1, "distribution", "zero annotators")


# ---- duplicate ids ------------------------------------------------------------------------------
def test_duplicate_id_within_a_split(tmp_path):
    rows = generic_rows(8)
    rows[6]["id"] = "r0"  # r0 and r6 are both train
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 7, "id", "duplicate id 'r0'")


def test_duplicate_id_across_splits(tmp_path):
    folder = goemotions_folder(tmp_path, test="ok then\t27\tid4\nagain\t2\tid1\n")
    e = expect({"loader": "goemotions", "path": str(folder)}, folder / "test.tsv", 2, "id", "duplicate id 'id1'")
    assert "first seen in split 'train'" in str(e) and "train.tsv, line 1" in str(e)


def test_duplicate_id_across_generic_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"id": "x", "text": "t", "labels": "a"}, {"id": "y", "text": "t", "labels": "b"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"id": "z", "text": "t", "labels": "a"}])
    write_jsonl(tmp_path / "test.jsonl", [{"id": "w", "text": "t", "labels": "a"}, {"id": "y", "text": "t", "labels": "a"}])
    expect({"loader": "generic", "path": str(tmp_path)}, tmp_path / "test.jsonl", 2, "id", "duplicate id 'y'")


# ---- SemEval's unlabeled test release -----------------------------------------------------------
def test_semeval_all_none_test_file(tmp_path):
    none_row = "\t".join(["NONE"] * 11)
    folder = semeval_folder(tmp_path, [f"2018-En-9{i:04d}\ttest tweet {i}\t{none_row}\n" for i in range(3)])
    expect({"loader": "semeval2018_ec", "path": str(folder)}, folder / "2018-E-c-En-test.txt", 2, "anger",
           "unlabeled test release")


# ---- missing files ------------------------------------------------------------------------------
def test_missing_files(tmp_path):
    folder = goemotions_folder(tmp_path)
    (folder / "test.tsv").unlink()
    expect({"loader": "goemotions", "path": str(folder)}, folder / "test.tsv", None, "datasets.bad.path",
           "file not found")
    missing = tmp_path / "nowhere.jsonl"
    for loader in ("generic", "mfrc", "mfrc_fractions", "hatexplain"):
        expect({"loader": loader, "path": str(missing)}, missing, None, "datasets.bad.path", "not found")
    se = semeval_folder(tmp_path)
    (se / "2018-E-c-En-dev.txt").unlink()
    expect({"loader": "semeval2018_ec", "path": str(se)}, se / "2018-E-c-En-dev.txt", None, "datasets.bad.path")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect({"loader": "goemotions_raters", "path": str(empty)}, empty, None, "datasets.bad.path",
           "no goemotions_*.csv")
    expect({"loader": "hatexplain", "path": str(empty)}, empty / "dataset.json", None, "datasets.bad.path")


# ---- no partial output --------------------------------------------------------------------------
def test_bad_input_leaves_no_output_file(tmp_path):
    rows = generic_rows(12)
    rows[11]["labels"] = ["c"]  # the last line is bad: everything before it was fine
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out_dir = tmp_path / "results" / "data" / "bad"
    out = {k: str(out_dir / k) for k in ("train", "dev", "test", "labels", "subsets")}
    with pytest.raises(DataError, match="line 12"):
        prepare_data("bad", {"loader": "generic", "path": str(path), "labels": ["a", "b"]}, out)
    assert not out_dir.exists() or not any(out_dir.iterdir())


# ---- label sets: duplicates from any source, edge spaces the same everywhere (issue 14) ------------
def test_duplicate_emotion_in_emotions_txt(tmp_path):
    folder = goemotions_folder(tmp_path)
    (folder / "emotions.txt").write_text("joy\nsadness \n\nneutral\n sadness\n", encoding="utf-8")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "emotions.txt", 5, "emotion",
           "duplicate label 'sadness'")


def test_duplicate_cluster_name_in_clustering_file(tmp_path):
    folder = goemotions_folder(tmp_path)
    (folder / "emotion_clustering.json").write_text(
        '{\n  "joy": ["joy", "love"],\n  "joy ": ["sadness"]\n}\n', encoding="utf-8")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "emotion_clustering.json", 3, "cluster names",
           "duplicate label 'joy'")


def test_duplicate_column_in_a_data_file_header(tmp_path):
    folder = semeval_folder(tmp_path)
    train = folder / "2018-E-c-En-train.txt"
    train.write_text(train.read_text().replace("\ttrust\n", "\tjoy \n", 1), encoding="utf-8")
    expect({"loader": "semeval2018_ec", "path": str(folder)}, train, 1, "joy", "duplicate column 'joy'")


def test_duplicate_label_in_a_distribution_after_edge_spaces(tmp_path):
    rows = [{"id": f"r{i}", "text": f"t{i}", "split": s, "distribution": {"a": 0.5, "b": 0.5}}
            for i, s in enumerate(["train", "train", "dev", "test"])]
    rows[2]["distribution"] = {"a": 0.5, " a": 0.2}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 3, "distribution", "duplicate label 'a'")


def test_duplicate_label_in_configured_label_set(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", generic_rows())
    expect({"loader": "generic", "path": str(path), "labels": ["a", "b", "a "]}, "datasets.bad", None, "labels",
           "duplicate label 'a'")


# ---- label names that differ only in case are one label; `none` is reserved in any case (issue 24) ----
# Both output parsers (prompts.parse_labels, extraction.segment_label_slots) match names
# case-insensitively: of "Anger" and "anger" one could never be matched, and "None" would read as none.
def test_labels_differing_in_case_in_emotions_txt(tmp_path):
    folder = goemotions_folder(tmp_path)
    (folder / "emotions.txt").write_text("Joy\nsadness\n\nneutral\njoy\n", encoding="utf-8")
    e = expect({"loader": "goemotions", "path": str(folder)}, folder / "emotions.txt", 5, "emotion",
               "duplicate label 'joy': the same label as 'Joy'")
    assert f"{folder / 'emotions.txt'}, line 1" in str(e)  # both places


def test_cluster_name_none_in_another_case(tmp_path):
    folder = goemotions_folder(tmp_path)
    (folder / "emotion_clustering.json").write_text(
        '{\n  "joy": ["joy", "love"],\n  "None": ["sadness"]\n}\n', encoding="utf-8")
    expect({"loader": "goemotions", "path": str(folder)}, folder / "emotion_clustering.json", 3, "cluster names",
           "label 'None' is the reserved 'none'")


@pytest.mark.parametrize("labels, message", [
    (["Anger", "b", "anger"], "duplicate label 'anger': the same label as 'Anger' (entry 1 of the label set)"),
    (["a", "None", "b"], "label 'None' is the reserved 'none'"),
])
def test_configured_label_set_differing_in_case(tmp_path, labels, message):
    path = write_jsonl(tmp_path / "d.jsonl", generic_rows())
    expect({"loader": "generic", "path": str(path), "labels": labels}, "datasets.bad", None, "labels", message)


@pytest.mark.parametrize("field, value", [
    ("labels", lambda lab: [lab]),
    ("annotations", lambda lab: [[lab], []]),
    ("distribution", lambda lab: {lab: 1.0}),
])
def test_inferred_label_set_differing_in_case_names_both_records(tmp_path, field, value):
    rows = [{"id": f"r{i}", "text": f"t{i}", "split": s, field: value(lab)}
            for i, (s, lab) in enumerate([("train", "b"), ("train", "Anger"), ("dev", "b"), ("test", "anger")])]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    e = expect({"loader": "generic", "path": str(path)}, path, 4, field,
               "duplicate label 'anger': the same label as 'Anger'")
    assert f"({path}, line 2)" in str(e)  # where the other name was first seen


def test_inferred_none_in_another_case_is_reserved(tmp_path):
    rows = [{"id": f"r{i}", "text": f"t{i}", "split": s, "labels": labs}
            for i, (s, labs) in enumerate([("train", ["a"]), ("train", ["b"]), ("dev", ["None"]), ("test", ["a"])])]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    expect({"loader": "generic", "path": str(path)}, path, 3, "labels", "label 'None' is the reserved 'none'")
    # with a configured label set the record itself is at fault, and the message says what to write
    expect({"loader": "generic", "path": str(path), "labels": ["a", "b"]}, path, 3, "labels",
           "label 'None' is not in the label set (a, b); label names are case-sensitive in the data: write 'none'")


def test_synthetic_labels_differing_in_case(tmp_path):
    cfg = {"loader": "synthetic", "synthetic": {"labels": ["joy", "Joy", "fear"], "n_train": 10, "n_dev": 10,
                                                "n_test": 10}}
    expect(cfg, "datasets.bad", None, "labels", "duplicate label 'Joy': the same label as 'joy'")


def test_edge_spaces_are_the_same_label_in_every_field(tmp_path):
    """'a ' means 'a' in gold lists, annotations, distribution keys and the configured label set."""
    base = [("train", ["a"]), ("train", ["b"]), ("dev", ["a"]), ("test", ["b"])]
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        {"id": f"g{i}", "text": f"t{i}", "split": s, "labels": [f" {x[0]} "]} for i, (s, x) in enumerate(base)])
    anns = write_jsonl(tmp_path / "anns.jsonl", [
        {"id": f"n{i}", "text": f"t{i}", "split": s, "annotations": [[x[0] + " "], [x[0]]]}
        for i, (s, x) in enumerate(base)])
    dist = write_jsonl(tmp_path / "dist.jsonl", [
        {"id": f"d{i}", "text": f"t{i}", "split": s, "distribution": {f"{x[0]}  ": 1.0}}
        for i, (s, x) in enumerate(base)])
    for path in (gold, anns, dist):
        for labels in (None, [" a", "b "]):
            cfg = {"loader": "generic", "path": str(path), **({"labels": labels} if labels else {})}
            data = load_labelled_data("ok", cfg)
            assert data.labels == ["a", "b"], path
            assert [ex.labels for ex in data.splits["train"]] == [["a"], ["b"]], path
            assert data.splits["train"][0].p_ref["a"] == 1.0, path


def test_empty_official_split_file_names_the_file(tmp_path):
    hx = tmp_path / "hx"
    shutil.copytree(FIX / "hatexplain", hx)
    (hx / "post_id_divisions.json").write_text('{"train": [], "val": [], "test": []}', encoding="utf-8")
    expect({"loader": "hatexplain", "path": str(hx)}, hx / "post_id_divisions.json", None, "train",
           "empty official split file")
    (hx / "post_id_divisions.json").write_text("{}", encoding="utf-8")
    expect({"loader": "hatexplain", "path": str(hx)}, hx / "post_id_divisions.json", None, None,
           "empty official split file")
    raters = tmp_path / "raters"
    shutil.copytree(FIX / "goemotions_raters", raters)
    for split in ("train", "dev"):
        (raters / f"{split}.tsv").write_text("a\t1\tx1\n", encoding="utf-8")
    (raters / "test.tsv").write_text("\n", encoding="utf-8")
    expect({"loader": "goemotions_raters", "path": str(raters)}, raters / "test.tsv", None, None,
           "empty official split file")


def test_goemotions_neutral_with_an_emotion_is_counted(tmp_path):
    folder = goemotions_folder(tmp_path, train="I love it\t18,27\tid1\nso sad\t25\tid2\nmeh\t27,25,3\tid5\n")
    info = load_labelled_data("ge", {"loader": "goemotions", "path": str(folder)}).labels_json()
    assert info["rule_counts"]["neutral_with_emotion"] == {"train": 2, "dev": 0, "test": 0}
    assert any(n.startswith("2 comment(s) mark neutral together with an emotion") for n in info["notes"])
