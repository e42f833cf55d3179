"""p_ref, gold and record checks of the data stage, computed by hand on small cases."""

import pytest

from labeldist.data import (Example, LabelledData, Origin, example_from_annotations, example_from_distribution,
                            example_from_gold, gold_from_shares, majority_label, p_ref_from_annotations,
                            p_ref_from_gold, p_ref_from_votes)
from labeldist.data.records import check_dataset, order_labels
from labeldist.errors import DataError

L = ["joy", "fear", "anger"]
HERE = Origin("file.jsonl", 7)


def test_three_annotators_give_thirds():
    p = p_ref_from_annotations([["joy"], ["joy", "fear"], []], L)
    assert p == {"joy": pytest.approx(2 / 3), "fear": pytest.approx(1 / 3), "anger": 0.0, "none": pytest.approx(1 / 3)}
    assert list(p) == L + ["none"]  # label order, then none
    assert sum(p.values()) > 1  # marginals, not a distribution


def test_annotator_choosing_a_label_twice_counts_once():
    assert p_ref_from_annotations([["joy", "joy"], ["fear"]], L)["joy"] == 0.5


def test_gold_is_share_at_least_half():
    ex = example_from_annotations("a", "t", [["joy"], ["joy", "fear"], ["fear", "anger"], []], L, HERE)
    assert ex.p_ref["joy"] == 0.5 and ex.p_ref["fear"] == 0.5 and ex.p_ref["anger"] == 0.25
    assert ex.labels == ["joy", "fear"]
    ex = example_from_annotations("b", "t", [["anger"], ["fear"], []], L, HERE)
    assert ex.labels == [] and ex.p_ref["none"] == pytest.approx(1 / 3)
    assert gold_from_shares({"joy": 2 / 3, "fear": 1 / 3, "anger": 0.4999}, L) == ["joy"]


def test_single_label_votes_sum_to_one_and_majority_is_gold():
    p = p_ref_from_votes(["normal", "normal", "offensive"], ["hatespeech", "normal", "offensive"])
    assert p == {"hatespeech": 0.0, "normal": pytest.approx(2 / 3), "offensive": pytest.approx(1 / 3), "none": 0.0}
    ex = example_from_annotations("p", "t", [["b"], ["c"], ["b"], ["b"]], ["a", "b", "c"], HERE, task="single_label")
    assert ex.labels == ["b"] and ex.p_ref["b"] == 0.75 and sum(ex.p_ref.values()) == pytest.approx(1.0)
    assert majority_label(["a", "b", "c"]) is None and majority_label(["a", "b", "a", "b"]) is None
    with pytest.raises(DataError, match="tie"):
        example_from_annotations("p", "t", [["a"], ["b"]], ["a", "b"], HERE, task="single_label")


def test_gold_only_and_distribution():
    assert p_ref_from_gold(["fear"], L) == {"joy": 0.0, "fear": 1.0, "anger": 0.0, "none": 0.0}
    assert p_ref_from_gold([], L)["none"] == 1.0
    ex = example_from_gold(12, "t", ["anger", "joy"], L, HERE)
    assert ex.id == "12" and ex.labels == ["joy", "anger"] and ex.annotations is None  # label order
    ex = example_from_distribution("d", "t", {"fear": 2 / 3, "none": 1 / 3}, L, HERE)
    assert ex.labels == ["fear"] and ex.p_ref == {"joy": 0.0, "fear": 2 / 3, "anger": 0.0, "none": 1 / 3}


def test_record_has_the_contract_fields_in_order():
    ex = example_from_annotations("x1", "some text", [["fear"], []], L, HERE)
    rec = ex.to_record()
    assert list(rec) == ["id", "text", "labels", "annotations", "p_ref"]
    assert rec["annotations"] == [["fear"], []] and list(rec["p_ref"]) == L + ["none"]


@pytest.mark.parametrize("call, field", [
    (lambda: example_from_annotations("a", "  ", [["joy"]], L, HERE), "text"),
    (lambda: example_from_annotations("a", "t", [], L, HERE), "annotations"),
    (lambda: example_from_annotations("a", "t", [["joy"], ["sad"]], L, HERE), "annotations[1]"),
    (lambda: example_from_gold("a", "t", ["love"], L, HERE), "labels"),
    (lambda: example_from_gold("", "t", ["joy"], L, HERE), "id"),
    (lambda: example_from_distribution("a", "t", {}, L, HERE), "distribution"),
    (lambda: example_from_distribution("a", "t", {"joy": 1.5}, L, HERE), "distribution"),
])
def test_bad_examples_name_file_line_and_field(call, field):
    with pytest.raises(DataError) as err:
        call()
    assert err.value.path == "file.jsonl" and err.value.line == 7 and err.value.field == field
    assert "file.jsonl, line 7" in str(err.value)


def test_none_label_cannot_be_combined():
    assert order_labels(["none"], L, HERE, "labels") == []
    with pytest.raises(DataError, match="combined"):
        order_labels(["none", "joy"], L, HERE, "labels")


def _data(splits):
    return LabelledData("d", "generic", L, "multilabel", "gold", splits)


def _ex(i, line):
    return Example(i, "t", [], None, p_ref_from_gold([], L), Origin("f.jsonl", line))


def test_duplicate_ids_within_and_across_splits():
    ok = {"train": [_ex("a", 1)], "dev": [_ex("b", 2)], "test": [_ex("c", 3)]}
    assert check_dataset(_data(ok)) is not None
    within = {"train": [_ex("a", 1), _ex("a", 4)], "dev": [_ex("b", 2)], "test": [_ex("c", 3)]}
    with pytest.raises(DataError, match="duplicate id 'a'") as err:
        check_dataset(_data(within))
    assert err.value.line == 4 and err.value.field == "id"
    across = {"train": [_ex("a", 1)], "dev": [_ex("b", 2)], "test": [_ex("a", 9)]}
    with pytest.raises(DataError, match="first seen in split 'train' at f.jsonl, line 1") as err:
        check_dataset(_data(across))
    assert err.value.line == 9


def test_empty_split_is_an_error():
    with pytest.raises(DataError, match="split 'dev' has no examples"):
        check_dataset(_data({"train": [_ex("a", 1)], "dev": [], "test": [_ex("c", 3)]}))
