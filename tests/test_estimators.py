"""Estimators on hand-made generation records whose answers are worked out by hand below.

Label set: joy, sad, sadness, anger (+ none). `sad` and `sadness` share their first sub-token, so their
first-token logits are identical; their whole-label log-probabilities differ (sadness is multi-token).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from labeldist import estimators as est
from labeldist.artifacts import generations as gen_files
from labeldist.errors import DataError

LABELS = ["joy", "sad", "sadness", "anger"]
NAMES = LABELS + ["none"]
EPS = 1e-8


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def step(label, logits, whole_probs, prob=None):
    """A step record as the generator writes it; whole_probs are full-vocabulary probabilities."""
    return {"position": 0, "label": label, "first_token_logits": list(logits),
            "whole_label_logprobs": [math.log(p) for p in whole_probs],
            "label_logprob": None if prob is None else math.log(prob)}


# Record "b": joy, then anger, then joy again (a repeat).
Z_B = [[2.0, 1.0, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 0.0, 0.0, 2.0]]
W_B = [[0.5, 0.1, 0.05, 0.05, 0.2], [0.05, 0.05, 0.05, 0.6, 0.1], [0.3, 0.02, 0.02, 0.02, 0.4]]
REC_B = {"id": "b", "demo_ids": [], "output_text": "joy, anger, joy", "labels": ["joy", "anger"],
         "unknown": [], "repeated": ["joy"], "n_tokens": 6, "hit_max_tokens": False, "no_label": False,
         "steps": [step("joy", Z_B[0], W_B[0], 0.5), step("anger", Z_B[1], W_B[1], 0.6),
                   step("joy", Z_B[2], W_B[2], 0.3)],
         "marginal": [0.7, 0.2, 0.1, 0.65, 0.15]}
# Record "a": "none" emitted first (and only).
W_A = [0.02, 0.01, 0.01, 0.01, 0.9]
REC_A = {"id": "a", "output_text": "none", "labels": [], "no_label": False,
         "steps": [step("none", [0.0, 0.0, 0.0, 0.0, 4.0], W_A, 0.9)],
         "marginal": [0.02, 0.01, 0.01, 0.01, 0.95]}
# Record "c": no label step at all.
REC_C = {"id": "c", "output_text": "", "labels": [], "no_label": True, "steps": [],
         "marginal": [0.1, 0.1, 0.1, 0.1, 0.8]}
# Record "d": one slot with an unknown string (label null), nothing else.
W_D = [0.1, 0.2, 0.1, 0.05, 0.05]
REC_D = {"id": "d", "labels": [], "unknown": ["xyz"], "no_label": True,
         "steps": [step(None, [0.0, 1.0, 1.0, 0.0, -1.0], W_D)], "marginal": [0.1, 0.2, 0.1, 0.05, 0.5]}


def gens(*records):
    return [gen_files.parse_generation(r, LABELS, "none", source="gen.jsonl", line=i + 1)
            for i, r in enumerate(records)]


def softmax_by_hand(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def table(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {i: dict(zip(g["label"], g["q"])) for i, g in frame.groupby("id", sort=False)}


def check_frame(frame: pd.DataFrame, ids: list[str], names: list[str]) -> None:
    assert list(frame.columns) == ["id", "label", "q"]
    assert frame["q"].dtype == np.float64
    assert list(frame["id"]) == [i for i in sorted(ids) for _ in names]
    assert list(frame["label"]) == names * len(ids)
    assert frame["q"].between(0.0, 1.0).all()


def test_first_step_is_the_first_steps_restricted_softmax_with_shared_subtokens_equal():
    frame = est.first_step(gens(REC_B, REC_A, REC_C), LABELS)
    check_frame(frame, ["b", "a", "c"], NAMES)
    q = table(frame)
    p = softmax_by_hand(Z_B[0])  # e^2, e^1, e^1, e^0, e^0.5 over their sum
    assert [q["b"][n] for n in NAMES] == pytest.approx(p, rel=1e-12)
    assert q["b"]["sad"] == q["b"]["sadness"]  # one first sub-token, one probability
    # "none" emitted first: the first step is that slot's distribution.
    e4 = math.exp(4.0)
    assert q["a"]["none"] == pytest.approx(e4 / (4 + e4))
    assert q["a"]["joy"] == pytest.approx(1 / (4 + e4))
    # No label step: EPS for labels, 1 - EPS for none.
    assert [q["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]


def test_first_step_whole_separates_labels_that_share_a_first_subtoken():
    q = table(est.first_step_whole(gens(REC_B), LABELS))["b"]
    total = sum(W_B[0])  # 0.9: the rest of the vocabulary is renormalised away
    assert [q[n] for n in NAMES] == pytest.approx([p / total for p in W_B[0]])
    assert q["sad"] == pytest.approx(0.1 / 0.9) and q["sadness"] == pytest.approx(0.05 / 0.9)


def test_max_over_steps_takes_each_labels_best_step_over_all_slots():
    q = table(est.max_over_steps(gens(REC_B, REC_C, REC_D), LABELS))
    per_step = [softmax_by_hand(z) for z in Z_B]
    for k, name in enumerate(LABELS):
        assert q["b"][name] == pytest.approx(max(p[k] for p in per_step))
    # anger peaks at step 2, joy at step 1: different steps.
    assert q["b"]["anger"] == pytest.approx(math.exp(3) / (3 + math.exp(3) + math.e))
    # none is p_1(none), not its max over the steps (step 3 has the larger e^2 / (e + 3 + e^2)).
    assert q["b"]["none"] == pytest.approx(per_step[0][4])
    assert q["b"]["none"] < math.exp(2) / (math.e + 3 + math.exp(2))
    assert [q["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]
    # A slot with an unknown string still is a label step.
    assert [q["d"][n] for n in NAMES] == pytest.approx(softmax_by_hand([0.0, 1.0, 1.0, 0.0, -1.0]))


def test_max_over_steps_floors_at_eps():
    rec = {"id": "x", "labels": ["joy"], "steps": [step("joy", [0.0, -40.0, -40.0, -40.0, -40.0],
                                                        [0.9, 0.01, 0.01, 0.01, 0.01], 0.9)]}
    q = table(est.max_over_steps(gens(rec), LABELS))["x"]
    assert q["sad"] == EPS and q["none"] == EPS
    assert q["joy"] == pytest.approx(1.0)


def test_max_over_steps_whole_uses_the_renormalised_whole_label_scores():
    q = table(est.max_over_steps_whole(gens(REC_B), LABELS))["b"]
    norm = [[p / sum(w) for p in w] for w in W_B]
    assert [q[n] for n in LABELS] == pytest.approx([max(w[k] for w in norm) for k in range(4)])
    assert q["none"] == pytest.approx(norm[0][4])
    assert q["sad"] != pytest.approx(q["sadness"])


def test_compare_to_none_default_is_p_l_over_p_l_plus_p_none():
    frame = est.compare_to_none(gens(REC_B, REC_C), LABELS)
    check_frame(frame, ["b", "c"], LABELS)  # no none row
    q = table(frame)
    p = softmax_by_hand(Z_B[0])
    for k, name in enumerate(LABELS):
        assert q["b"][name] == pytest.approx(sigmoid(Z_B[0][k] - 0.5))
        assert q["b"][name] == pytest.approx(p[k] / (p[k] + p[4]))
    assert all(q["c"][n] == EPS for n in LABELS)
    q2 = table(est.compare_to_none(gens(REC_B), LABELS, w=2.0, b=-1.0))["b"]
    assert q2["joy"] == pytest.approx(sigmoid(2.0 * 1.5 - 1.0))


def platt_records(xs, prefix):
    """Records whose first-step logits give z_l - z_none = xs[i][l] (z_none = 0)."""
    return [{"id": f"{prefix}{i}", "labels": [],
             "steps": [step("joy", list(x) + [0.0], [0.2] * 5, 0.2)]} for i, x in enumerate(xs)]


def test_platt_fit_recovers_the_slope_and_intercept_of_soft_targets():
    rng = np.random.default_rng(0)
    xs = rng.normal(0.0, 2.0, size=(60, 4))
    dev = gens(*platt_records(xs, "dev"), {**REC_C, "id": "dev-empty"})  # no step: left out of the fit
    p_ref = {f"dev{i}": 1 / (1 + np.exp(-(2.0 * x - 1.0))) for i, x in enumerate(xs)}
    p_ref["dev-empty"] = np.zeros(4)
    w, b = est.fit_platt(dev, p_ref, include_none=False)
    assert w == pytest.approx(2.0, abs=1e-3) and b == pytest.approx(-1.0, abs=1e-3)
    main = gens(*platt_records([[0.5, 0.0, -1.0, 3.0]], "main"))
    q = table(est.compare_to_none_platt(main, LABELS, "none", dev, p_ref, include_none=False))["main0"]
    assert [q[n] for n in LABELS] == pytest.approx([sigmoid(2.0 * x - 1.0) for x in [0.5, 0.0, -1.0, 3.0]],
                                                   abs=1e-4)


def study_platt_optimum(xs, targets):
    """(w, b) minimising the study's pooled BCE of sigmoid(w x + b) against soft targets, by scipy."""
    from scipy.optimize import minimize
    from scipy.special import log_expit

    x, t = np.concatenate(xs), np.concatenate(targets)

    def loss(wb):
        z = wb[0] * x + wb[1]
        return -(t * log_expit(z) + (1 - t) * log_expit(-z)).sum()

    return minimize(loss, np.array([1.0, 0.0]), method="BFGS", options={"gtol": 1e-10}).x


def test_platt_default_is_the_studys_fit_with_a_none_column():
    """The study pools the L label columns and a none column (x = z_none - z_none = 0, target
    p_ref(none)) into one (w, b); its optimum is computed here independently with scipy."""
    rng = np.random.default_rng(5)
    xs = rng.normal(0.0, 2.0, size=(40, 4))
    shares = 1 / (1 + np.exp(-(0.8 * xs + 0.3)))
    none_share = rng.uniform(0.0, 0.6, size=40)  # p_ref(none) unrelated to the labels' shares
    dev = gens(*platt_records(xs, "dev"))
    p_ref = {f"dev{i}": np.append(shares[i], none_share[i]) for i in range(40)}
    w, b = est.fit_platt(dev, p_ref)
    w_exact, b_exact = study_platt_optimum([np.append(x, 0.0) for x in xs], list(p_ref.values()))
    assert (w, b) == pytest.approx((w_exact, b_exact), abs=1e-4)
    # the labels-only fit (our earlier default) is a different optimum: b moves
    w_lab, b_lab = est.fit_platt(dev, p_ref, include_none=False)
    assert (w_lab, b_lab) == pytest.approx(tuple(study_platt_optimum(list(xs), list(shares))), abs=1e-4)
    assert abs(b - b_lab) > 0.05
    # the default needs p_ref(none): label shares alone are refused
    with pytest.raises(ValueError, match="none"):
        est.fit_platt(dev, {k: v[:4] for k, v in p_ref.items()})


def test_platt_without_usable_dev_records_falls_back_and_missing_p_ref_is_an_error():
    assert est.fit_platt(gens(REC_C), {"c": np.zeros(5)}) == (1.0, 0.0)
    with pytest.raises(DataError, match=r"gen.jsonl, line 1, field 'id'.*no p_ref"):
        est.fit_platt(gens(REC_B), {})


def test_output_marks_generated_labels_and_none_only_for_an_empty_set():
    q = table(est.output(gens(REC_B, REC_A, REC_C), LABELS))
    assert [q["b"][n] for n in NAMES] == [1 - EPS, EPS, EPS, 1 - EPS, EPS]
    assert [q["a"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]
    assert [q["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]


def test_conditional_uses_the_first_emission_and_first_step_for_the_rest():
    q = table(est.conditional(gens(REC_B, REC_A, REC_C, REC_D), LABELS))
    # joy emitted at steps 1 and 3: counted once, at step 1 (0.5, not 0.3); anger at step 2 (0.6);
    # sad, sadness, none not emitted: their full-vocabulary probability at the first step.
    assert [q["b"][n] for n in NAMES] == pytest.approx([0.5, 0.1, 0.05, 0.6, 0.2])
    assert [q["a"][n] for n in NAMES] == pytest.approx([0.02, 0.01, 0.01, 0.01, 0.9])
    assert [q["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]
    assert [q["d"][n] for n in NAMES] == pytest.approx(W_D)


def test_joint_is_the_running_product_along_the_greedy_path():
    q = table(est.joint(gens(REC_B, REC_A, REC_C), LABELS))
    # joy 0.5; anger 0.5 * 0.6 = 0.3; the repeat of joy adds nothing; others: conditional * 0.3.
    assert [q["b"][n] for n in NAMES] == pytest.approx([0.5, 0.1 * 0.3, 0.05 * 0.3, 0.3, 0.2 * 0.3])
    # "none" emitted first is not a label: it enters no other label's product.
    assert [q["a"][n] for n in NAMES] == pytest.approx([0.02, 0.01, 0.01, 0.01, 0.9])
    assert [q["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]


def test_conditional_needs_the_label_logprob_of_an_emitted_label():
    rec = {"id": "x", "labels": ["joy"], "steps": [step("joy", [0.0] * 5, [0.2] * 5, None)]}
    with pytest.raises(DataError, match=r"line 1, field 'steps\[0\].label_logprob'"):
        est.conditional(gens(rec), LABELS)


def test_marginal_reads_the_records_list_and_requires_it():
    q = table(est.marginal(gens(REC_B, REC_A), LABELS))
    assert [q["b"][n] for n in NAMES] == REC_B["marginal"]
    assert [q["a"][n] for n in NAMES] == REC_A["marginal"]
    no_marginal = {k: v for k, v in REC_B.items() if k != "marginal"}
    with pytest.raises(DataError, match="field 'marginal'"):
        est.marginal(gens(no_marginal), LABELS)


def test_unary_is_p_reasonable_without_a_none_row():
    recs = [gen_files.parse_unary({"id": "u2", "p_reasonable": {"joy": 0.9, "sad": 0.1, "sadness": 0.2, "anger": 0.0}},
                            LABELS),
            gen_files.parse_unary({"id": "u1", "p_reasonable": {"joy": 1.0, "sad": 0.5, "sadness": 0.5, "anger": 0.3}},
                            LABELS)]
    frame = est.unary(recs, LABELS)
    check_frame(frame, ["u2", "u1"], LABELS)
    assert list(frame["q"]) == [1.0, 0.5, 0.5, 0.3, 0.9, 0.1, 0.2, 0.0]


def pairwise_record(ex_id, strengths, bias=0.0):
    """Pairs in both orders with p_a = sigmoid(s_a - s_b + bias) over labels + none."""
    pairs = [{"a": a, "b": b, "p_a": sigmoid(strengths[a] - strengths[b] + bias)}
             for a in NAMES for b in NAMES if a != b]
    return gen_files.parse_pairwise({"id": ex_id, "pairs": pairs}, LABELS)


def test_pairwise_bt_recovers_sigmoid_of_strength_minus_none():
    s = {"joy": 2.0, "sad": -1.0, "sadness": 0.5, "anger": -2.5, "none": 0.0}
    s2 = {"joy": -1.0, "sad": 1.5, "sadness": 1.0, "anger": 0.0, "none": 0.5}
    frame = est.pairwise_bt([pairwise_record("p1", s), pairwise_record("p0", s2)], LABELS, l2=0.0)
    check_frame(frame, ["p1", "p0"], LABELS)
    q = table(frame)
    # Without the penalty, consistent BT probabilities give back the strengths up to a shift.
    assert [q["p1"][n] for n in LABELS] == pytest.approx([sigmoid(s[n]) for n in LABELS], abs=1e-4)
    assert [q["p0"][n] for n in LABELS] == pytest.approx([sigmoid(s2[n] - 0.5) for n in LABELS], abs=1e-4)
    # With the default 0.01 L2 and a position bias, the order survives (both orders cancel the bias).
    q = table(est.pairwise_bt([pairwise_record("p1", s, bias=1.0)], LABELS))["p1"]
    assert sorted(LABELS, key=q.get) == sorted(LABELS, key=s.get)
    assert q["sadness"] > 0.5 > q["sad"]


def test_pairwise_bt_default_is_the_optimum_of_the_studys_summed_objective():
    """The study: sum over the record's pairs of BCE(p_a, sigmoid(s_a - s_b)) + 0.01 ||s||^2 (no mean)."""
    from scipy.optimize import minimize
    from scipy.special import log_expit

    rng = np.random.default_rng(6)
    record = gen_files.parse_pairwise({"id": "r", "pairs": [
        {"a": a, "b": b, "p_a": float(rng.uniform(0.05, 0.95))} for a in NAMES for b in NAMES if a != b]},
        LABELS)

    def loss(s):
        d = s[record.a] - s[record.b]
        return -(record.p_a * log_expit(d) + (1 - record.p_a) * log_expit(-d)).sum() + 0.01 * (s**2).sum()

    s = minimize(loss, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    q = est.pairwise_bt([record], LABELS)["q"].to_numpy()
    assert q == pytest.approx(1 / (1 + np.exp(-(s[:4] - s[4]))), abs=1e-5)
    q_mean = est.pairwise_bt([record], LABELS, reduction="mean")["q"].to_numpy()
    assert np.abs(q_mean - 0.5).max() < np.abs(q - 0.5).max()  # the mean shrinks towards 0.5


def test_hard_outcomes_score_a_tie_as_a_loss_for_a_like_the_study():
    p = np.array([0.7, 0.5, 0.2])
    assert list(est.hard_outcomes(p)) == [1.0, 0.0, 0.0]
    assert list(est.hard_outcomes(p, tie="half")) == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="tie"):
        est.hard_outcomes(p, tie="win")
    # Both presentation orders present: the two tie rules give the same fit.
    pairs = [{"a": a, "b": b, "p_a": 0.5 if {a, b} == {"joy", "sad"} else (0.8 if NAMES.index(a) < NAMES.index(b)
                                                                          else 0.2)}
             for a in NAMES for b in NAMES if a != b]
    both = gen_files.parse_pairwise({"id": "t", "pairs": pairs}, LABELS)
    assert est.pairwise_outcome([both], LABELS)["q"].to_numpy() == pytest.approx(
        est.pairwise_outcome([both], LABELS, tie="half")["q"].to_numpy(), abs=1e-6)
    # One order only: the study's rule counts the tie against joy, so sad ends above joy.
    one = gen_files.parse_pairwise({"id": "t", "pairs": [p for p in pairs if not (p["a"] == "sad" and p["b"] == "joy")]},
                             LABELS)
    q = table(est.pairwise_outcome([one], LABELS))["t"]
    q_half = table(est.pairwise_outcome([one], LABELS, tie="half"))["t"]
    assert q["joy"] < q["sad"]
    assert q_half["joy"] > q_half["sad"] or q_half["joy"] == pytest.approx(q_half["sad"], abs=1e-6)


def test_pairwise_outcome_uses_hard_outcomes_and_stays_finite():
    s = {"joy": 2.0, "sad": -1.0, "sadness": 0.5, "anger": -2.5, "none": 0.0}
    soft = pairwise_record("x", s)
    # Same winners, much flatter probabilities: identical hard outcomes.
    flat = pairwise_record("x", {k: v / 20 for k, v in s.items()})
    q_soft = est.pairwise_outcome([soft], LABELS)["q"].to_numpy()
    q_flat = est.pairwise_outcome([flat], LABELS)["q"].to_numpy()
    assert np.array_equal(q_soft, q_flat)
    assert np.all(np.isfinite(q_soft)) and np.all((q_soft > 0) & (q_soft < 1))
    assert sorted(LABELS, key=lambda n: q_soft[LABELS.index(n)]) == sorted(LABELS, key=s.get)
    # ...while the soft fit tells them apart.
    assert not np.allclose(est.pairwise_bt([soft], LABELS)["q"], est.pairwise_bt([flat], LABELS)["q"])
    # A pure position bias (a always preferred) cancels: every strength equal, q = 0.5.
    biased = gen_files.parse_pairwise({"id": "y", "pairs": [{"a": a, "b": b, "p_a": 0.9} for a in NAMES
                                                      for b in NAMES if a != b]}, LABELS)
    assert est.pairwise_outcome([biased], LABELS)["q"].to_numpy() == pytest.approx(0.5, abs=1e-6)


def test_malformed_records_name_file_line_and_field(tmp_path):
    bad_len = {**REC_B, "steps": [{**REC_B["steps"][0], "first_token_logits": [1.0, 2.0]}]}
    with pytest.raises(DataError, match=r"gen.jsonl, line 1, field 'steps\[0\].first_token_logits'"):
        gens(bad_len)
    with pytest.raises(DataError, match=r"field 'labels'.*xyz"):
        gens({**REC_B, "labels": ["joy", "xyz"]})
    with pytest.raises(DataError, match=r"field 'steps\[0\].first_token_logits'.*NaN"):
        gens({**REC_B, "steps": [{**REC_B["steps"][0], "first_token_logits": [float("nan")] * 5}]})
    with pytest.raises(DataError, match=r"field 'pairs\[0\].p_a'"):
        gen_files.parse_pairwise({"id": "p", "pairs": [{"a": "joy", "b": "none", "p_a": 1.5}]}, LABELS)
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(REC_B) + "\n" + json.dumps(REC_B) + "\n")
    with pytest.raises(DataError, match=r"dup.jsonl, line 2, field 'id': duplicate id 'b'"):
        gen_files.read_generations(path, LABELS)


# ---- the file-level function the workflow script calls ----------------------------------------------
@pytest.fixture
def files(tmp_path):
    """labels.json, main and dev baseline generations, dev data, unary and pairwise files."""
    (tmp_path / "labels.json").write_text(json.dumps(
        {"dataset": "toy", "labels": LABELS, "none_label": "none", "task": "multilabel"}))
    main = [REC_D, REC_B, REC_A, REC_C]
    (tmp_path / "main.jsonl").write_text("".join(json.dumps(r) + "\n" for r in main))
    rng = np.random.default_rng(1)
    xs = rng.normal(0.0, 2.0, size=(20, 4))
    dev = platt_records(xs, "dev")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    data = [{"id": f"dev{i}", "text": "t", "labels": [], "annotations": None,
             "p_ref": {**{n: float(1 / (1 + np.exp(-(0.5 * x[k] + 0.2)))) for k, n in enumerate(LABELS)},
                       "none": 0.1}} for i, x in enumerate(xs)]
    (tmp_path / "dev_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    unary = [{"id": r["id"], "demo_ids": [], "p_reasonable": {n: 0.25 for n in LABELS}} for r in main]
    (tmp_path / "unary.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unary))
    pairs = [{"id": r["id"], "demo_ids": [],
              "pairs": [{"a": a, "b": b, "p_a": 0.3 + 0.1 * NAMES.index(a)} for a in NAMES for b in NAMES
                        if a != b]} for r in main]
    (tmp_path / "pairwise.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return tmp_path


@pytest.mark.parametrize("estimator", est.ESTIMATOR_NAMES)
def test_every_estimator_writes_the_documented_estimate_file(files, estimator):
    from labeldist.artifacts.estimates import read_estimate_table, write_estimates

    source = {"unary": "unary.jsonl", "pairwise_bt": "pairwise.jsonl",
              "pairwise_outcome": "pairwise.jsonl"}.get(estimator, "main.jsonl")
    frame = est.estimate(estimator, files / source, files / "labels.json", seed=0,
                         dev_generations=files / "dev.jsonl", dev_data=files / "dev_data.jsonl")
    with_none = estimator not in ("compare_to_none", "compare_to_none_platt", "unary", "pairwise_bt",
                                  "pairwise_outcome")
    check_frame(frame, ["a", "b", "c", "d"], NAMES if with_none else LABELS)
    assert frame["id"].map(type).eq(str).all() and frame["label"].map(type).eq(str).all()
    out = files / "out" / f"{estimator}.parquet"
    write_estimates(out, {("main", 0): frame})
    back = read_estimate_table(out)
    assert list(back.columns) == ["seed", "subset", "id", "label", "q"]
    pd.testing.assert_frame_equal(back[["id", "label", "q"]], frame, check_dtype=False)
    assert not list(out.parent.glob(".*"))  # no temporary file left behind
    if estimator == "compare_to_none_platt":
        # fitted on dev (p_ref = sigmoid(0.5 x + 0.2) for the labels, 0.1 for none at x = 0), the study's
        # fit with the none column; so it differs from the uncalibrated (1, 0) values
        raw = est.estimate("compare_to_none", files / "main.jsonl", files / "labels.json")
        q_b = frame[frame["id"] == "b"]["q"].to_numpy()
        x_b = np.array(Z_B[0][:4]) - Z_B[0][4]
        xs = np.random.default_rng(1).normal(0.0, 2.0, size=(20, 4))  # the fixture's dev features
        w, b = study_platt_optimum([np.append(x, 0.0) for x in xs],
                                   [np.append(1 / (1 + np.exp(-(0.5 * x + 0.2))), 0.1) for x in xs])
        assert q_b == pytest.approx(1 / (1 + np.exp(-(w * x_b + b))), abs=1e-4)
        assert not np.allclose(q_b, raw[raw["id"] == "b"]["q"])


def test_pairwise_fits_are_seeded_and_reproducible(files):
    a = est.estimate("pairwise_bt", files / "pairwise.jsonl", files / "labels.json", seed=3)
    b = est.estimate("pairwise_bt", files / "pairwise.jsonl", files / "labels.json", seed=3)
    pd.testing.assert_frame_equal(a, b)


# ---- issue 22: the study's code's choices as options (config `estimation`, `generation.pairwise_orders`) ----
OURS = est.EstimationSettings.default()
STUDY_STEPS = est.EstimationSettings(label_steps="first_known", no_label_step="empty_set")
STUDY_NO_LABEL = est.EstimationSettings(label_steps="every_slot", no_label_step="study")
STEP_FUNCTIONS = (est.first_step, est.first_step_whole, est.max_over_steps, est.max_over_steps_whole)


def test_estimation_defaults_are_ours_and_unknown_rules_are_refused():
    assert (OURS.label_steps, OURS.no_label_step) == ("every_slot", "empty_set")
    assert est.EstimationSettings.from_config({"no_label_step": "study"}).label_steps == "every_slot"
    with pytest.raises(ValueError, match="label_steps"):
        est.EstimationSettings(label_steps="all", no_label_step="empty_set")
    with pytest.raises(ValueError, match="no_label_step"):
        est.EstimationSettings(label_steps="every_slot", no_label_step="uniform")


def test_a_record_without_a_label_step_gets_eps_by_default_and_the_studys_one_over_l_as_an_option():
    for fn in STEP_FUNCTIONS:
        assert [table(fn(gens(REC_C), LABELS))["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]
        assert [table(fn(gens(REC_C), LABELS, settings=OURS))["c"][n] for n in NAMES] == [EPS] * 4 + [1 - EPS]
        # the study: a softmax of 4 zero logits, 1/4 per label; the none row (the study has none) stays ours
        assert [table(fn(gens(REC_C), LABELS, settings=STUDY_NO_LABEL))["c"][n] for n in NAMES] \
            == pytest.approx([0.25] * 4 + [1 - EPS], abs=1e-15)
    # records with a label step are untouched by the option
    for fn in STEP_FUNCTIONS:
        pd.testing.assert_frame_equal(fn(gens(REC_B, REC_A), LABELS, settings=STUDY_NO_LABEL),
                                      fn(gens(REC_B, REC_A), LABELS))
    # compare_to_none (no study value is defined there) keeps EPS under both rules
    assert all(q == EPS for q in est.compare_to_none(gens(REC_C), LABELS, settings=STUDY_NO_LABEL)["q"])


def test_the_studys_max_over_steps_falls_back_to_one_over_l_only_up_to_nine_labels():
    """Its maxima start at EPS for the L labels and none; it falls back to the first step's 1/L scores
    only while those L + 1 floors sum below 10 EPS: 10 floors do (9.999...e-08), 11 do not (1.1e-07)."""
    def q_of(fn, n_labels):
        labels = [f"l{i}" for i in range(n_labels)]
        rec = gen_files.parse_generation({"id": "c", "labels": [], "no_label": True, "steps": []}, labels,
                                          "none", source="gen.jsonl", line=1)
        return list(fn([rec], labels, settings=STUDY_NO_LABEL)["q"])

    assert q_of(est.max_over_steps, 9) == pytest.approx([1 / 9] * 9 + [1 - EPS], abs=1e-15)
    assert q_of(est.max_over_steps, 10) == [EPS] * 10 + [1 - EPS]
    assert q_of(est.max_over_steps_whole, 11) == [EPS] * 11 + [1 - EPS]
    assert q_of(est.first_step, 10) == pytest.approx([0.1] * 10 + [1 - EPS], abs=1e-15)
    assert q_of(est.first_step, 11) == pytest.approx([1 / 11] * 11 + [1 - EPS], abs=1e-15)


# Record "r": an unknown string first, then joy, anger, and joy again (a repeat).
Z_R = [[0.0, 3.0, 3.0, 0.0, 0.0],  # unknown slot: sad and sadness lead
       [2.0, 0.0, 0.0, 1.0, 1.0],  # joy
       [0.0, 0.0, 0.0, 2.0, 0.5],  # anger
       [4.0, 0.0, 0.0, 0.0, 0.0]]  # joy repeated: joy's best step
REC_R = {"id": "r", "labels": ["joy", "anger"], "unknown": ["xyz"], "repeated": ["joy"],
         "steps": [step(None, Z_R[0], [0.1] * 5), step("joy", Z_R[1], [0.4, 0.1, 0.1, 0.1, 0.1], 0.4),
                   step("anger", Z_R[2], [0.1, 0.1, 0.1, 0.5, 0.1], 0.5),
                   step("joy", Z_R[3], [0.6, 0.1, 0.1, 0.1, 0.1], 0.6)]}


def test_every_slot_is_a_step_by_default_and_only_first_known_slots_as_an_option():
    e = math.e
    d0, d1, d2, d3 = 2 * e**3 + 3, e**2 + 2 + 2 * e, 3 + e**2 + e**0.5, e**4 + 4  # softmax denominators
    # first_step: the unknown first slot (ours) or the first known slot, joy's (the study's)
    q = table(est.first_step(gens(REC_R), LABELS))["r"]
    assert [q[n] for n in NAMES] == pytest.approx([1 / d0, e**3 / d0, e**3 / d0, 1 / d0, 1 / d0])
    q = table(est.first_step(gens(REC_R), LABELS, settings=STUDY_STEPS))["r"]
    assert [q[n] for n in NAMES] == pytest.approx([e**2 / d1, 1 / d1, 1 / d1, e / d1, e / d1])
    # max_over_steps: every slot, joy's best at its repeat and sad's at the unknown slot (ours) ...
    q = table(est.max_over_steps(gens(REC_R), LABELS))["r"]
    assert [q[n] for n in NAMES] == pytest.approx([e**4 / d3, e**3 / d0, e**3 / d0, e**2 / d2, 1 / d0])
    # ... or the first joy and the anger slot only (the study's); none is p_1(none) of the first known slot
    q = table(est.max_over_steps(gens(REC_R), LABELS, settings=STUDY_STEPS))["r"]
    assert [q[n] for n in NAMES] == pytest.approx([e**2 / d1, 1 / d2, 1 / d2, e**2 / d2, e / d1])
    # compare_to_none reads the same first step: sigmoid(z_l - z_none)
    q = table(est.compare_to_none(gens(REC_R), LABELS))["r"]
    assert [q[n] for n in LABELS] == pytest.approx([0.5, sigmoid(3.0), sigmoid(3.0), 0.5])
    q = table(est.compare_to_none(gens(REC_R), LABELS, settings=STUDY_STEPS))["r"]
    assert [q[n] for n in LABELS] == pytest.approx([sigmoid(1.0), sigmoid(-1.0), sigmoid(-1.0), 0.5])
    # a record with unknown slots only has no known step: the no-label rule applies
    assert [table(est.max_over_steps(gens(REC_D), LABELS, settings=STUDY_STEPS))["d"][n] for n in NAMES] \
        == [EPS] * 4 + [1 - EPS]
    both = est.EstimationSettings(label_steps="first_known", no_label_step="study")
    assert [table(est.first_step(gens(REC_D), LABELS, settings=both))["d"][n] for n in NAMES] \
        == pytest.approx([0.25] * 4 + [1 - EPS], abs=1e-15)
    rec = gens(REC_R)[0]
    kept = est.label_steps(rec, "first_known")
    assert len(kept) == 2 and kept[0] is rec.steps[1] and kept[1] is rec.steps[2]
    assert est.label_steps(rec, "every_slot") == rec.steps


def test_the_platt_fit_takes_its_features_from_the_first_known_slot_under_first_known():
    rng = np.random.default_rng(2)
    xs = rng.normal(0.0, 2.0, size=(30, 4))
    # each dev record: an unknown slot with flat logits first, then the informative slot
    dev = gens(*[{**r, "steps": [step(None, [0.0] * 5, [0.2] * 5)] + r["steps"]}
                 for r in platt_records(xs, "dev")])
    p_ref = {f"dev{i}": 1 / (1 + np.exp(-(2.0 * x - 1.0))) for i, x in enumerate(xs)}
    w, b = est.fit_platt(dev, p_ref, include_none=False, settings=STUDY_STEPS)
    assert (w, b) == pytest.approx((2.0, -1.0), abs=1e-3)
    # every slot: the first step is the flat unknown slot, every feature 0, so w is undetermined and
    # sigmoid(b) is the mean target
    _, b0 = est.fit_platt(dev, p_ref, include_none=False)
    assert sigmoid(b0) == pytest.approx(np.mean(list(p_ref.values())), abs=1e-4)


LABELS3 = ["x", "y", "z"]
U = {"x": 1.0, "y": -0.5, "z": 0.5, "none": 0.0}  # strengths behind the first order's answers
T = {"x": 0.5, "y": 0.0, "z": -0.5, "none": 0.0}  # strengths behind the mean of both orders' answers


def test_one_order_pairs_give_the_studys_fit_and_both_orders_average_the_two_presentations():
    """Items x < y < z < none. The first order (the study's itertools.combinations) answers p(a, b) =
    sigmoid(U_a - U_b); the reverse order answers so that the mean of p(a, b) and 1 - p(b, a) is
    sigmoid(T_a - T_b). The pair losses are linear in the target, so without the penalty the one-order
    fit gives back U and the both-order fit T exactly: q(l) = sigmoid(s_l - s_none)."""
    items = LABELS3 + ["none"]
    first = [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]
    p_first = {(a, b): sigmoid(U[a] - U[b]) for a, b in first}
    p_reverse = {(b, a): 1 + p_first[(a, b)] - 2 * sigmoid(T[a] - T[b]) for a, b in first}
    assert all(0 < p < 1 for p in p_reverse.values())
    one = gen_files.parse_pairwise({"id": "o", "pairs": [{"a": a, "b": b, "p_a": p} for (a, b), p in
                                                          p_first.items()]}, LABELS3)
    both = gen_files.parse_pairwise({"id": "o", "pairs": [{"a": a, "b": b, "p_a": p} for (a, b), p in
                                                           {**p_first, **p_reverse}.items()]}, LABELS3)
    assert len(one.a) == 6 and len(both.a) == 12
    q_one = est.pairwise_bt([one], LABELS3, l2=0.0)["q"].to_numpy()
    q_both = est.pairwise_bt([both], LABELS3, l2=0.0)["q"].to_numpy()
    assert q_one == pytest.approx([sigmoid(1.0), sigmoid(-0.5), sigmoid(0.5)], abs=1e-5)
    assert q_both == pytest.approx([sigmoid(0.5), 0.5, sigmoid(-0.5)], abs=1e-5)


def test_one_order_pairs_with_the_penalty_reach_the_studys_objective():
    """The study's objective on its 6 one-order pairs (sum of BCE + 0.01 ||s||^2), minimised by scipy."""
    from scipy.optimize import minimize
    from scipy.special import log_expit

    items = LABELS3 + ["none"]
    rng = np.random.default_rng(7)
    record = gen_files.parse_pairwise({"id": "r", "pairs": [
        {"a": a, "b": b, "p_a": float(rng.uniform(0.05, 0.95))} for i, a in enumerate(items) for b in items[i + 1:]]},
        LABELS3)

    def loss(s):
        d = s[record.a] - s[record.b]
        return -(record.p_a * log_expit(d) + (1 - record.p_a) * log_expit(-d)).sum() + 0.01 * (s**2).sum()

    s = minimize(loss, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    assert est.pairwise_bt([record], LABELS3)["q"].to_numpy() == pytest.approx(1 / (1 + np.exp(-(s[:3] - s[3]))),
                                                                              abs=1e-5)


@pytest.mark.parametrize("estimator", ["first_step", "max_over_steps", "compare_to_none", "compare_to_none_platt"])
def test_the_file_level_estimate_passes_the_settings_on(files, estimator):
    default = est.estimate(estimator, files / "main.jsonl", files / "labels.json",
                           dev_generations=files / "dev.jsonl", dev_data=files / "dev_data.jsonl")
    study = est.estimate(estimator, files / "main.jsonl", files / "labels.json",
                         dev_generations=files / "dev.jsonl", dev_data=files / "dev_data.jsonl",
                         settings=est.EstimationSettings(label_steps="first_known", no_label_step="study"))
    # the fixture's records d (an unknown slot only) and c (no slot) differ; a, b (known first slots) do not
    changed = set(default[default["q"] != study["q"]]["id"])
    assert changed == ({"c", "d"} if estimator in ("first_step", "max_over_steps") else {"d"})
    pd.testing.assert_frame_equal(default, est.estimate(estimator, files / "main.jsonl", files / "labels.json",
                                                        dev_generations=files / "dev.jsonl",
                                                        dev_data=files / "dev_data.jsonl", settings=OURS))
