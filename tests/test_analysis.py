"""Behavioural analyses on hand-made generation records with hand-computed answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from labeldist import analysis as A
from labeldist.artifacts.generations import parse_generation, read_generations
from labeldist.artifacts.paths import parse_generation_path
from labeldist.errors import DataError
from labeldist.metrics import LabelSet

LS = LabelSet("syn", ["a", "b", "c"])  # distributions are over a, b, c, none


def step(position, label, p):
    """A step whose first-token softmax is exactly p (logits = log p)."""
    return {"position": position, "label": label, "first_token_logits": np.log(p).tolist(),
            "whole_label_logprobs": (np.log(p) - 1.0).tolist()}


def raw(ex_id, steps, labels=None, **extra):
    """A generation record as the file holds it."""
    labels = labels if labels is not None else [s["label"] for s in steps if s["label"] not in (None, "none")]
    return {"id": ex_id, "labels": labels, "steps": steps, **extra}


def rec(ex_id, steps, labels=None, **extra):
    """The record as every reader gets it (labeldist.artifacts.generations)."""
    return parse_generation(raw(ex_id, steps, labels, **extra), LS.labels, LS.none_label)


# r1: a (.7) -> b (.6) -> c (.7); runner-ups b then c, both emitted next: same, same
RAW1 = raw("r1", [step(0, "a", [.7, .2, .05, .05]), step(2, "b", [.1, .6, .2, .1]), step(4, "c", [.1, .1, .7, .1])])
# r2: a (.5) -> c; step 1's runner-up is b, not c: not same
RAW2 = raw("r2", [step(0, "a", [.5, .3, .1, .1]), step(3, "c", [.2, .2, .5, .1])])
R1, R2 = (parse_generation(r, LS.labels) for r in (RAW1, RAW2))


def test_step_rows_by_hand():
    rows = A.step_rows(R1, LS.with_none)
    assert [r["position"] for r in rows] == ["intermediate", "intermediate", "last"]
    first, second, last = rows
    assert first["top_prob"] == pytest.approx(.7) and first["second_prob"] == pytest.approx(.2)
    assert first["runner_up"] == "b" and first["next_label"] == "b" and first["same"] is True
    assert first["p_next"] == pytest.approx(.2)  # p_1(b)
    assert first["p_runner_up_next"] == pytest.approx(.6)  # p_2(b)
    assert second["runner_up"] == "c" and second["p_next"] == pytest.approx(.2)
    assert second["p_runner_up_next"] == pytest.approx(.7)
    assert last["next_label"] is None and last["same"] is None and math.isnan(last["p_next"])
    assert last["step"] == 3 and last["n_steps"] == 3


def test_runner_up_summary_same_share():
    steps = A.step_table([R1, R2], LS)
    assert len(steps) == 5
    s = A.runner_up_summary(steps)
    assert s["n_intermediate"] == 3 and s["n_with_next"] == 3
    assert s["same"] == pytest.approx(2 / 3)
    assert s["p_next"] == pytest.approx((.2 + .2 + .1) / 3)
    assert s["p_runner_up_next"] == pytest.approx((.6 + .7 + .2) / 3)


def test_runner_up_is_the_best_label_other_than_the_emitted_one():
    # the emitted label (b) is not the argmax: the runner-up is a, the top label
    r = rec("x", [step(0, "b", [.5, .3, .1, .1]), step(1, "a", [.6, .2, .1, .1])])
    rows = A.step_rows(r, LS.with_none)
    assert rows[0]["runner_up"] == "a" and rows[0]["same"] is True and rows[0]["top_label"] == "a"


def test_unknown_next_slot_and_no_label_outputs():
    r = rec("u", [step(0, "a", [.7, .1, .1, .1]), step(2, None, [.25, .25, .25, .25]), step(5, "b", [.1, .8, .05, .05])])
    rows = A.step_rows(r, LS.with_none)
    assert rows[0]["same"] is None and math.isnan(rows[0]["p_next"])  # next slot held an unknown string
    assert rows[0]["p_runner_up_next"] == pytest.approx(.25)  # still measured at the unknown slot
    assert rows[1]["emitted"] is None and rows[1]["entropy_bits"] == pytest.approx(2.0)
    assert rows[1]["same"] is True  # unknown slot: runner-up = second (b by stable order), b emitted next
    empty = A.step_table([rec("e", [], no_label=True)], LS)
    assert empty.empty and list(empty.columns) == A.STEP_COLUMNS
    s = A.runner_up_summary(empty)
    assert s["n_intermediate"] == 0 and math.isnan(s["same"])


def test_entropy_bits():
    assert A.entropy_bits(np.array([.5, .25, .125, .125])) == pytest.approx(1.75)
    assert A.entropy_bits(np.array([1.0, 0, 0, 0])) == pytest.approx(0.0)


def test_steps_follow_position_not_list_order():
    shuffled = rec("s", list(reversed(RAW1["steps"])))
    assert [r["emitted"] for r in A.step_rows(shuffled, LS.with_none)] == ["a", "b", "c"]
    assert shuffled.slot_labels == ["a", "b", "c"]


def test_whole_label_distribution_is_normalised():
    p = A.step_distribution(R1.steps[0], "whole_label")
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(.7)


def test_first_step_ranks_sorted():
    ranks = A.first_step_ranks([R1, R2, rec("e", [])], LS)
    assert ranks["rank"].tolist() == [1, 2, 3, 4, 1, 2, 3, 4]
    assert ranks["prob"].tolist()[:4] == pytest.approx([.7, .2, .05, .05])
    assert ranks.groupby("id")["prob"].sum().tolist() == pytest.approx([1.0, 1.0])


def test_label_order_accuracy_by_hand():
    records = [
        rec("x", [step(0, "a", [.7, .1, .1, .1]), step(1, "c", [.1, .1, .7, .1])]),  # a right, c wrong
        rec("y", [step(0, "c", [.1, .1, .7, .1]), step(1, "c", [.1, .1, .7, .1]), step(2, "b", [.1, .7, .1, .1])]),
        rec("z", [step(0, "none", [.1, .1, .1, .7])]),  # none, gold empty -> right
        rec("w", [step(0, None, [.25] * 4), step(1, "b", [.1, .7, .1, .1])]),  # unknown skipped: b is 1st
    ]
    gold = {"x": {"a", "b"}, "y": {"b", "c"}, "z": set(), "w": {"a"}}
    rows = A.label_order_rows(records, gold)
    assert rows[["id", "order", "label", "correct"]].values.tolist() == [
        ["x", 1, "a", True], ["x", 2, "c", False], ["y", 1, "c", True], ["y", 2, "b", True],
        ["z", 1, "none", True], ["w", 1, "b", False]]
    acc = A.label_order_accuracy(rows)
    assert acc["accuracy"].tolist() == pytest.approx([3 / 4, 1 / 2]) and acc["n"].tolist() == [4, 2]
    with pytest.raises(DataError, match="not in the data split"):
        A.label_order_rows(records, {"x": set()})


def test_multi_label_share_per_ratio():
    records = [rec("1", [], labels=["a"], ratio=0.0), rec("2", [], labels=["a", "b"], ratio=0.0),
               rec("3", [], labels=["none"], ratio=0.0), rec("4", [], labels=["a", "b"], ratio=1.0),
               rec("5", [], labels=["a", "b", "c"], ratio=1.0)]
    counts = A.output_label_counts(records)
    assert counts["n_labels"].tolist() == [1, 2, 0, 2, 3]
    share = A.multi_label_share(counts)
    assert share.values.tolist() == [[0.0, 1 / 3, 3], [1.0, 1.0, 2]]
    with pytest.raises(DataError, match="ratio"):
        A.multi_label_share(A.output_label_counts([rec("6", [], labels=["a"])]))


def test_read_generation_checks_the_contract(tmp_path):
    path = tmp_path / "generations" / "syn" / "tiny" / "sft" / "baseline" / "main" / "seed3.jsonl"
    path.parent.mkdir(parents=True)
    good = json.dumps(RAW1)
    bad = dict(RAW2, steps=[dict(RAW2["steps"][0], first_token_logits=[0.0, 1.0])])
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"seed3.jsonl, line 2, field 'steps\[0\].first_token_logits'"):
        read_generations(path, LS.labels)
    inf = dict(RAW2, steps=[dict(RAW2["steps"][0], first_token_logits=[float("-inf")] * 4)])
    path.write_text(json.dumps(inf) + "\n")  # Python's json writes -Infinity, as the generator may
    with pytest.raises(DataError, match="every entry is -inf"):
        read_generations(path, LS.labels)
    partly = dict(RAW2, steps=[dict(RAW2["steps"][0], first_token_logits=[0.0, float("-inf"), 0.0, 0.0])])
    path.write_text(json.dumps(partly) + "\n")
    assert A.step_distribution(read_generations(path, LS.labels)[0].steps[0]).tolist() == pytest.approx([1/3, 0, 1/3, 1/3])
    unknown = dict(RAW2, steps=[dict(RAW2["steps"][0], label="zzz")])
    path.write_text(json.dumps(unknown) + "\n")
    with pytest.raises(DataError, match=r"line 1, field 'steps\[0\].label'"):
        read_generations(path, LS.labels)
    path.write_text(good + "\n")
    assert parse_generation_path(path) == {"dataset": "syn", "model": "tiny", "regime": "sft",
                                             "prompting": "baseline", "subset": "main", "seed": 3}
    frame = A.load_generation_frames([path], {"syn": LS}, A.step_table)
    assert len(frame) == 3 and set(frame["regime"]) == {"sft"} and set(frame["seed"]) == {3}


def test_training_log_long_keeps_what_is_present(tmp_path):
    from labeldist.artifacts.tables import read_training_log, write_training_log

    write_training_log(tmp_path, pd.DataFrame({"step": [1, 2, 3], "loss": [2.0, None, 1.0],
                                               "reward": [None, 0.5, None], "epoch": [0, 0, 1]}))
    long = A.training_log_long(read_training_log(tmp_path))
    assert long[["step", "metric", "value"]].values.tolist() == [[1, "loss", 2.0], [3, "loss", 1.0],
                                                                 [2, "reward", 0.5]]
    write_training_log(tmp_path, pd.DataFrame({"step": [1], "epoch": [0]}))
    with pytest.raises(DataError, match="none of the columns"):
        A.training_log_long(read_training_log(tmp_path), tmp_path / "training_log.csv")
    write_training_log(tmp_path, pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(DataError, match="training_log.csv, field 'step'"):
        read_training_log(tmp_path)
