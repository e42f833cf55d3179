"""Findings: every claim on constructed generation records / metrics runs whose answer is known
(holds, does not hold, inconclusive, not testable), the verdict rules, and the files written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from labeldist.artifacts.generations import parse_generation
from labeldist import findings as fd
from labeldist import metrics as mx
from labeldist.config import default_block
from labeldist.metrics import LabelSet

LABELS = ["joy", "fear", "anger", "sadness"]
LS = LabelSet("toy", LABELS)
NAMES = LS.with_none
N = 40  # examples per run
SETTINGS = fd.Settings.from_config({**default_block("findings"), "bootstrap": 400, "min_examples": 10})


# ---- constructing records -------------------------------------------------------------------------
def dist(top: str, p_top: float, second: str | None = None, p_second: float = 0.0) -> list[float]:
    """Logits (log-probabilities) of a distribution with p_top on `top`, p_second on `second`, the rest even."""
    rest = [n for n in NAMES if n not in (top, second)]
    p = {n: (1.0 - p_top - p_second) / len(rest) for n in rest}
    p[top] = p_top
    if second:
        p[second] = p_second
    return [math.log(max(p[n], 1e-12)) for n in NAMES]


def record(ex_id: str, steps: list[tuple[str, list[float]]]) -> dict:
    labels = [l for l, _ in steps if l != "none"]
    return {"id": ex_id, "labels": labels, "no_label": not steps,
            "steps": [{"position": i, "label": l, "first_token_logits": z, "whole_label_logprobs": z}
                      for i, (l, z) in enumerate(steps)]}


def stats_of(records_by_run: dict[tuple[str, str, str], list[dict]]) -> pd.DataFrame:
    frames = [fd.example_stats([parse_generation(rec, LS.labels) for rec in recs], LS)
              .assign(dataset=d, model=m, regime=r, seed=0)
              for (d, m, r), recs in records_by_run.items()]
    return fd.pool_seeds(pd.concat(frames, ignore_index=True), ["top_prob", "entropy_bits", "same", "gap"])


def ctx(models=("m",), regimes=("base",), **kw) -> fd.Context:
    return fd.Context(datasets=["toy"], models=list(models), regimes=list(regimes),
                      prompting=kw.pop("prompting", ["baseline", "icl_sweep"]), **kw)


def only(frame: pd.DataFrame, claim: str, **where) -> pd.DataFrame:
    sub = frame[frame["claim"] == claim]
    for k, v in where.items():
        sub = sub[sub[k] == v]
    return sub


def verdicts(frame: pd.DataFrame, claim: str, **where) -> list[str]:
    return list(only(frame, claim, **where)["verdict"])


def evaluate(stats=None, slopes=None, runs=(), context=None) -> pd.DataFrame:
    stats = stats if stats is not None else pd.DataFrame(columns=["dataset", "model", "regime", "id"])
    slopes = slopes if slopes is not None else pd.DataFrame(columns=["dataset", "model", "regime", "id", "slope"])
    return fd.evaluate(stats, slopes, list(runs), context or ctx(), SETTINGS)


# ---- verdict rules --------------------------------------------------------------------------------
def test_verdict_rules():
    assert fd.verdict(0.9, 0.85, 0.95, 0.8, ">", 50, 10)[0] == fd.HOLDS
    assert fd.verdict(0.5, 0.4, 0.6, 0.8, ">", 50, 10)[0] == fd.FAILS
    assert fd.verdict(0.8, 0.7, 0.9, 0.8, ">", 50, 10)[0] == fd.INCONCLUSIVE
    assert fd.verdict(-0.1, -0.2, -0.05, 0.0, "<", 50, 10)[0] == fd.HOLDS
    assert fd.verdict(0.1, 0.05, 0.2, 0.0, "<", 50, 10)[0] == fd.FAILS
    # an interval that only touches the threshold: no improvement, so it does not hold
    assert fd.verdict(0.0, 0.0, 0.0, 0.0, ">", 50, 10)[0] == fd.FAILS
    assert fd.verdict(0.0, 0.0, 0.0, 0.0, "<", 50, 10)[0] == fd.FAILS
    v, why = fd.verdict(0.9, 0.85, 0.95, 0.8, ">", 5, 10)
    assert v == fd.UNTESTABLE and "fewer than 10" in why
    assert fd.verdict(0.9, math.nan, math.nan, 0.8, ">", 50, 10)[0] == fd.UNTESTABLE
    with pytest.raises(ValueError):
        fd.verdict(0.9, 0.85, 0.95, 0.8, ">=", 50, 10)


def test_combine_verdicts():
    H, F, I, U = fd.HOLDS, fd.FAILS, fd.INCONCLUSIVE, fd.UNTESTABLE
    assert fd.combine_verdicts([H, H]) == H
    assert fd.combine_verdicts([H, I]) == I
    assert fd.combine_verdicts([H, F, I]) == F
    assert fd.combine_verdicts([H, U]) == U
    assert fd.combine_verdicts([]) == U


def test_bootstrap_mean_is_scipys_percentile_interval_and_seeded():
    x = np.random.default_rng(0).normal(1.0, 1.0, 200)
    est, lo, hi = fd.bootstrap_mean(x, SETTINGS)
    assert est == pytest.approx(x.mean()) and lo < est < hi
    assert (lo, hi) == fd.bootstrap_mean(x, SETTINGS)[1:]
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(200), rel=0.25)
    assert math.isnan(fd.bootstrap_mean([1.0], SETTINGS)[1])


# ---- claims from generation records -----------------------------------------------------------------
def spiky_records(p_tops):
    return [record(f"e{i}", [("joy", dist("joy", p)), ("anger", dist("anger", p))]) for i, p in enumerate(p_tops)]


def test_spiky_holds_fails_and_is_inconclusive():
    runs = {("toy", "m", "base"): spiky_records([0.97] * N)}
    assert verdicts(evaluate(stats_of(runs)), "spiky") == [fd.HOLDS, fd.HOLDS]
    flat = {("toy", "m", "base"): spiky_records([0.3] * N)}
    assert verdicts(evaluate(stats_of(flat)), "spiky") == [fd.FAILS, fd.FAILS]
    # top probability 0.7 or 0.9 (mean 0.8, the threshold): the interval straddles it
    mixed = {("toy", "m", "base"): spiky_records([0.7, 0.9] * (N // 2))}
    assert verdicts(evaluate(stats_of(mixed)), "spiky", part="top probability") == [fd.INCONCLUSIVE]


def suppression_records(p_r_next, p_next_next, runner_is_next):
    """Two steps: joy then anger. At step 1, anger (the next label) has p_r_next; the runner-up at step 1
    is anger when runner_is_next, else fear (which then gets more than anger)."""
    recs = []
    for i, (a, b, same) in enumerate(zip(p_r_next, p_next_next, runner_is_next)):
        first = dist("joy", 0.9 - a, "anger", a) if same else dist("joy", 0.85 - a, "fear", 0.1 + a)
        if not same:  # put anger's own probability a back
            first = [math.log(v) for v in _with(np.exp(first), "anger", a)]
        recs.append(record(f"e{i}", [("joy", first), ("anger", dist("anger", b))]))
    return recs


def _with(p, label, value):
    p = np.array(p, dtype=float)
    k = NAMES.index(label)
    p[k] = value
    return p / p.sum()


def test_suppression_holds_fails_and_is_inconclusive():
    hold = {("toy", "m", "base"): suppression_records([0.01] * N, [0.95] * N, [False] * N)}
    assert verdicts(evaluate(stats_of(hold)), "suppression") == [fd.HOLDS]
    fail = {("toy", "m", "base"): suppression_records([0.45] * N, [0.5] * N, [True] * N)}
    assert verdicts(evaluate(stats_of(fail)), "suppression") == [fd.FAILS]
    # gaps of ~0.2 and ~0.8 alternate around the 0.5 threshold
    mix = {("toy", "m", "base"): suppression_records([0.05, 0.05] * (N // 2), [0.25, 0.85] * (N // 2), [False] * N)}
    assert verdicts(evaluate(stats_of(mix)), "suppression") == [fd.INCONCLUSIVE]


def test_runner_up_holds_fails_and_is_inconclusive():
    hold = {("toy", "m", "base"): suppression_records([0.01] * N, [0.95] * N, [False] * N)}
    row = only(evaluate(stats_of(hold)), "runner_up")
    assert list(row["verdict"]) == [fd.HOLDS] and row["estimate"].iloc[0] == 0.0
    fail = {("toy", "m", "base"): suppression_records([0.05] * N, [0.95] * N, [True] * N)}
    assert verdicts(evaluate(stats_of(fail)), "runner_up") == [fd.FAILS]
    mix = {("toy", "m", "base"): suppression_records([0.05] * N, [0.95] * N, [True, False] * (N // 2))}
    assert verdicts(evaluate(stats_of(mix)), "runner_up") == [fd.INCONCLUSIVE]


def test_step_claims_are_not_testable_without_label_steps_or_baseline():
    runs = {("toy", "m", "base"): [record(f"e{i}", []) for i in range(N)]}
    out = evaluate(stats_of(runs))
    assert set(verdicts(out, "spiky") + verdicts(out, "suppression")) == {fd.UNTESTABLE}
    single = {("toy", "m", "base"): [record(f"e{i}", [("joy", dist("joy", 0.9))]) for i in range(N)]}
    out = evaluate(stats_of(single))
    assert verdicts(out, "spiky") == [fd.HOLDS, fd.HOLDS]
    assert verdicts(out, "runner_up") == [fd.UNTESTABLE]
    assert "two known label slots" in only(out, "runner_up")["reason"].iloc[0]
    out = evaluate(stats_of(runs), context=ctx(prompting=["unary"]))
    assert "config prompting" in only(out, "spiky")["reason"].iloc[0]


def test_finetuning_compares_regimes_paired_by_example():
    base = spiky_records([0.6] * N)
    runs = {("toy", "m", "base"): base, ("toy", "m", "sft"): spiky_records([0.95] * N),
            ("toy", "m", "rl"): spiky_records([0.4] * N)}
    out = evaluate(stats_of(runs), context=ctx(regimes=["base", "sft", "rl"]))
    assert verdicts(out, "finetuning", regime="sft") == [fd.HOLDS]
    assert verdicts(out, "finetuning", regime="rl") == [fd.FAILS]
    # sft spikier on half the examples, flatter by as much on the other half: no clear direction
    runs[("toy", "m", "sft")] = spiky_records([0.9, 0.6] * (N // 2))
    runs[("toy", "m", "base")] = spiky_records([0.6, 0.9] * (N // 2))
    out = evaluate(stats_of(runs), context=ctx(regimes=["base", "sft", "rl"]))
    assert verdicts(out, "finetuning", regime="sft") == [fd.INCONCLUSIVE]
    out = evaluate(stats_of(runs), context=ctx(regimes=["base"]))
    assert set(verdicts(out, "finetuning")) == {fd.UNTESTABLE}


def test_finetuning_summary_sentence_from_the_logs_and_the_claim():
    """finetuning.md: per finetuned model, each regime's dev F1 before -> after (training_log.csv) and its
    entropy change against base with interval and verdict; a model with no training log is left out."""
    base = spiky_records([0.6] * N)
    runs = {("toy", "m", "base"): base, ("toy", "m", "sft"): spiky_records([0.95] * N),
            ("toy", "m", "rl"): spiky_records([0.4] * N)}
    out = evaluate(stats_of(runs), context=ctx(regimes=["base", "sft", "rl"]))
    logs = {("toy", "m", "sft"): pd.DataFrame({"step": [0, 1, 2], "loss": [None, 2.0, 1.0],
                                               "dev_f1": [0.125, None, 0.5]}),
            ("toy", "m", "rl"): pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.2]})}
    text = fd.finetuning_markdown(out, logs)
    assert text.count("\n") == 1 and text.startswith("- **toy · m**: SFT: dev F1 of its own outputs 0.125 -> 0.500;")
    sft = only(out, "finetuning", regime="sft").iloc[0]
    assert f"{sft['estimate']:+.3f} bits against base [{sft['ci_low']:+.3f}, {sft['ci_high']:+.3f}]" in text
    assert sft["estimate"] < 0 and "spikier holds" in text and "spikier does not hold" in text
    assert "RL (GRPO): no dev F1 logged" in text
    assert fd.finetuning_markdown(out, {}) == ""


def test_icl_sweep_slope():
    def counts(rule):
        rows = [{"dataset": "toy", "model": "m", "regime": "base", "id": f"e{i}", "ratio": r,
                 "multi": rule(i, r)} for i in range(N) for r in (0.0, 0.5, 1.0)]
        return fd.icl_slopes(pd.DataFrame(rows))
    assert verdicts(evaluate(slopes=counts(lambda i, r: r >= 0.5)), "icl_sweep") == [fd.HOLDS]
    assert verdicts(evaluate(slopes=counts(lambda i, r: r < 0.5)), "icl_sweep") == [fd.FAILS]
    assert verdicts(evaluate(slopes=counts(lambda i, r: (r >= 0.5) == (i % 2 == 0))), "icl_sweep") == [
        fd.INCONCLUSIVE]
    out = evaluate(slopes=counts(lambda i, r: r >= 0.5), context=ctx(prompting=["baseline"]))
    assert verdicts(out, "icl_sweep") == [fd.UNTESTABLE]


# ---- claims from metrics runs ----------------------------------------------------------------------
RNG = np.random.default_rng(0)
P_REF = RNG.uniform(0, 1, size=(N, 4))
GOLD = (P_REF >= 0.5).astype(int)
REF = mx.Reference([f"e{i:02d}" for i in range(N)], P_REF, GOLD)


def run(q, estimator, model="m", regime="base", seed=0):
    """A metrics object as the metrics stage writes it, from q (the real metric and bootstrap code)."""
    q = np.clip(q, 0, 1)
    values = mx.scalar_metrics(q, REF, 0.5, 0.5, 10)
    boot = mx.bootstrap_metrics(q, REF, 0.5, 0.5, 10, 200)
    group = lambda ks: {k: (None if math.isnan(values[k]) else values[k]) for k in ks}  # noqa: E731
    return {"dataset": "toy", "model": model, "regime": regime, "estimator": estimator, "seed": seed,
            "n_examples": N, "ids_sha1": mx.ids_digest(REF.ids), "p_ref_source": "annotators",
            "alignment": group(mx.ALIGNMENT_METRICS), "classification": group(mx.CLASSIFICATION_METRICS),
            "bootstrap": {"n": 200, "seed": 0, "values": {k: [None if math.isnan(x) else float(x) for x in v]
                                                          for k, v in boot.items()}}}


GOOD = np.clip(P_REF + RNG.normal(0, 0.05, P_REF.shape), 0, 1)  # close to p_ref, ranks gold well
BAD = np.clip(1 - P_REF + RNG.normal(0, 0.05, P_REF.shape), 0, 1)  # reversed
NOISE_A = RNG.uniform(0, 1, P_REF.shape)
MID = np.clip(P_REF + 0.2, 0, 1)
EVEN = (np.arange(N) % 2 == 0)[:, None]


def split(a, b):
    """a on even examples, b on odd ones: against split(b, a) each side wins on half the examples."""
    return np.where(EVEN, a, b)


def test_max_over_steps_holds_fails_and_is_inconclusive():
    out = evaluate(runs=[run(GOOD, "max_over_steps"), run(BAD, "first_step")])
    assert verdicts(out, "max_over_steps") == [fd.HOLDS] * 3
    out = evaluate(runs=[run(BAD, "max_over_steps"), run(GOOD, "first_step")])
    assert verdicts(out, "max_over_steps") == [fd.FAILS] * 3
    # the same q: every difference exactly 0 in every resample, no improvement
    out = evaluate(runs=[run(GOOD, "max_over_steps"), run(GOOD, "first_step")])
    assert verdicts(out, "max_over_steps") == [fd.FAILS] * 3
    # each better on half the examples: the interval contains 0
    out = evaluate(runs=[run(split(GOOD, MID), "max_over_steps"), run(split(MID, GOOD), "first_step")])
    assert verdicts(out, "max_over_steps", part="L1") == [fd.INCONCLUSIVE]
    out = evaluate(runs=[run(GOOD, "max_over_steps")])
    assert set(verdicts(out, "max_over_steps")) == {fd.UNTESTABLE}
    out = evaluate(runs=[run(GOOD, "max_over_steps"), run(BAD, "first_step")],
                   context=ctx(p_ref_sources={"toy": "gold"}))
    assert verdicts(out, "max_over_steps") == [fd.UNTESTABLE, fd.UNTESTABLE, fd.HOLDS]


def test_metric_difference_pairs_resamples_and_refuses_different_example_sets():
    a, b = run(GOOD, "x"), run(BAD, "y")
    (est, lo, hi), n, reason = fd.metric_difference([a], [b], "l1")
    assert reason is None and n == N and lo <= est <= hi
    assert est == pytest.approx(a["alignment"]["l1"] - b["alignment"]["l1"])
    diffs = np.array(a["bootstrap"]["values"]["l1"]) - np.array(b["bootstrap"]["values"]["l1"])
    assert (lo, hi) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))
    other = {**b, "ids_sha1": "different"}
    assert fd.metric_difference([a], [other], "l1")[2] == "scored on different example sets"
    assert fd.metric_difference([a], [{**b, "seed": 1}], "l1")[2] == "no seed in common"


def test_supervised_vs_first_step_and_the_best_zero_shot():
    runs = [run(GOOD, "linear_probe"), run(BAD, "first_step"), run(NOISE_A, "max_over_steps"),
            run(BAD, "demux", model="encoder")]
    out = evaluate(runs=runs)
    assert verdicts(out, "supervised", setting="linear_probe vs first_step") == [fd.HOLDS] * 2
    best = only(out, "supervised", setting="linear_probe vs best zero-shot")
    assert list(best["verdict"]) == [fd.HOLDS] * 2 and best["statistic"].str.contains("max_over_steps").all()
    assert verdicts(out, "supervised", setting="demux vs best zero-shot") == [fd.FAILS] * 2
    out = evaluate(runs=[run(split(GOOD, MID), "linear_probe"), run(split(MID, GOOD), "first_step")])
    assert fd.INCONCLUSIVE in verdicts(out, "supervised", setting="linear_probe vs first_step")
    assert set(verdicts(out, "supervised", setting="demux vs first_step")) == {fd.UNTESTABLE}


def test_marginal_vs_conditional_and_joint():
    out = evaluate(runs=[run(GOOD, "marginal"), run(BAD, "conditional"), run(NOISE_A, "joint")])
    assert verdicts(out, "marginal", setting="marginal vs conditional") == [fd.HOLDS] * 2
    assert verdicts(out, "marginal", setting="marginal vs joint") == [fd.HOLDS] * 2
    out = evaluate(runs=[run(BAD, "marginal"), run(GOOD, "conditional"), run(GOOD, "joint")])
    assert set(verdicts(out, "marginal")) == {fd.FAILS}
    out = evaluate(runs=[run(split(GOOD, BAD), "marginal"), run(split(BAD, GOOD), "conditional")])
    assert fd.INCONCLUSIVE in verdicts(out, "marginal", setting="marginal vs conditional")
    assert set(verdicts(out, "marginal", setting="marginal vs joint")) == {fd.UNTESTABLE}


def test_scale_orders_models_by_size_and_needs_both_parts():
    runs_gen = {("toy", "small", "base"): spiky_records([0.5] * N), ("toy", "large", "base"): spiky_records([0.95] * N)}
    sizes = {"small": 0.1, "large": 1.0}
    context = ctx(models=["large", "small"], model_sizes=sizes)
    metric_runs = [run(BAD, "first_step", model="small"), run(GOOD, "first_step", model="large")]
    out = evaluate(stats_of(runs_gen), runs=metric_runs, context=context)
    rows = only(out, "scale")
    assert set(rows["setting"]) == {"small -> large"}
    assert list(rows["verdict"]) == [fd.HOLDS, fd.HOLDS]
    assert fd.summary(out).query("claim == 'scale'")["verdict"].tolist() == [fd.HOLDS]
    # the larger model is spikier but ranks worse: the claim does not hold
    metric_runs = [run(GOOD, "first_step", model="small"), run(BAD, "first_step", model="large")]
    out = evaluate(stats_of(runs_gen), runs=metric_runs, context=context)
    assert fd.summary(out).query("claim == 'scale'")["verdict"].tolist() == [fd.FAILS]
    # entropy of the larger model: half the examples spikier, half flatter by as much
    runs_gen[("toy", "small", "base")] = spiky_records([0.5, 0.95] * (N // 2))
    runs_gen[("toy", "large", "base")] = spiky_records([0.95, 0.5] * (N // 2))
    out = evaluate(stats_of(runs_gen), runs=[run(BAD, "first_step", model="small"),
                                             run(GOOD, "first_step", model="large")], context=context)
    assert verdicts(out, "scale", part="entropy") == [fd.INCONCLUSIVE]
    out = evaluate(stats_of(runs_gen), context=ctx(models=["large", "small"], model_sizes={"small": 1, "large": 1}))
    assert set(verdicts(out, "scale")) == {fd.UNTESTABLE}
    assert "same configured size" in only(out, "scale")["reason"].iloc[0]
    assert "one model" in only(evaluate(stats_of(runs_gen)), "scale")["reason"].iloc[0]


def test_claims_cover_the_planned_runs_only():
    """Per-model datasets/regimes/prompting (models.<key>.*): no row for a run the config does not plan;
    scale compares the models planned on a dataset; a model without icl_sweep is not testable there."""
    recs = {("toy", "small", "base"): spiky_records([0.5] * N), ("toy", "large", "base"): spiky_records([0.95] * N),
            ("other", "tiny", "base"): spiky_records([0.9] * N), ("other", "tiny", "sft"): spiky_records([0.95] * N)}
    context = fd.Context(datasets=["toy", "other"], models=["tiny", "small", "large"], regimes=["base", "sft"],
                         prompting=["baseline", "icl_sweep"], model_sizes={"tiny": 0.001, "small": 0.1, "large": 1.0},
                         runs=[("toy", "small", "base"), ("toy", "large", "base"), ("other", "tiny", "base"),
                               ("other", "tiny", "sft")],
                         model_prompting={"large": ["baseline"]})
    out = evaluate(stats_of(recs), context=context)
    spiky = only(out, "spiky")
    assert set(zip(spiky["dataset"], spiky["model"], spiky["regime"])) == set(map(tuple, context.runs))
    assert set(only(out, "scale")["setting"]) == {"small -> large", "by model size"}  # other/base: one model
    assert set(only(out, "scale", dataset="other")["reason"]) == {"one model in this run"}
    finetuning = only(out, "finetuning")
    assert set(zip(finetuning["dataset"], finetuning["model"])) == {("toy", "small"), ("toy", "large"),
                                                                   ("other", "tiny")}
    assert "regime sft not in this run for small on toy" in set(finetuning["reason"])
    icl = only(out, "icl_sweep", model="large")
    assert list(icl["reason"]) == ["no icl_sweep generations (config prompting)"]


# ---- files -------------------------------------------------------------------------------------------
def test_write_findings_reads_the_stage_files_and_writes_csv_md_html(tmp_path):
    root = tmp_path / "results"
    (root / "data" / "toy").mkdir(parents=True)
    (root / "data" / "toy" / "labels.json").write_text(json.dumps({"dataset": "toy", "labels": LABELS}))
    gens = []
    for seed in (0, 1):
        path = root / "generations" / "toy" / "m" / "base" / "baseline" / "main" / f"seed{seed}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in spiky_records([0.97] * N)))
        gens.append(str(path))
    icl = root / "generations" / "toy" / "m" / "base" / "icl_sweep" / "main" / "seed0.jsonl"
    icl.parent.mkdir(parents=True)
    icl.write_text("".join(json.dumps({"id": f"e{i}", "ratio": r, "labels": ["joy", "fear"] if r > 0.5 else ["joy"],
                                       "steps": []}) + "\n" for i in range(N) for r in (0.0, 1.0)))
    path = root / "metrics" / "toy" / "m" / "base.json"  # the run's metrics file: one object per estimator
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([run(q, est) for est, q in (("max_over_steps", GOOD), ("first_step", BAD))]))
    metric_paths = [str(path)]
    out = {k: tmp_path / f"findings.{k}" for k in ("csv", "md", "html")}
    frame = fd.write_findings(generations=gens, icl_generations=[str(icl)], metric_paths=metric_paths,
                              label_sets={"toy": mx.read_label_set(root / "data" / "toy" / "labels.json")},
                              ctx=ctx(), settings=SETTINGS, csv=out["csv"], md=out["md"], html=out["html"],
                              headline=tmp_path / "findings_headline.md")
    back = pd.read_csv(out["csv"])
    assert list(back.columns) == fd.COLUMNS and len(back) == len(frame)
    assert set(back["claim"]) == set(fd.CLAIMS)
    assert set(back["verdict"]) <= set(fd.VERDICTS)
    assert verdicts(frame, "spiky") == [fd.HOLDS, fd.HOLDS]
    assert verdicts(frame, "icl_sweep") == [fd.HOLDS]
    assert verdicts(frame, "max_over_steps") == [fd.HOLDS] * 3
    text = out["md"].read_text()
    assert text.startswith("# Findings") and "## Every statistic" in text and "not testable here" in text
    assert "<table" in out["html"].read_text()
    # the README's verdict table: one row per claim and setting, one column per run
    head = (tmp_path / "findings_headline.md").read_text().splitlines()
    table = [line for line in head if line.startswith("| ")]
    assert table[0] == "| claim | setting | toy · m · base |"
    assert "| max_over_steps | max_over_steps vs first_step | holds |" in table
    assert "| spiky | per-step distribution | holds |" in table
    assert len(table) - 1 == len(fd.summary(frame)[["claim", "setting"]].drop_duplicates())


def test_findings_figure_draws_one_panel_per_claim_with_verdict_colours(tmp_path):
    from labeldist import plots

    runs_gen = {("toy", "m", "base"): spiky_records([0.97] * N)}
    frame = evaluate(stats_of(runs_gen), runs=[run(GOOD, "max_over_steps"), run(BAD, "first_step")])
    path = tmp_path / "findings.csv"
    frame.to_csv(path, index=False)
    fig = plots.render_figure("findings", {"table": str(path)})
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split(":")[0] for t in titles] == list(fd.CLAIMS)
    spiky = fig.axes[0]
    assert len(spiky.get_yticklabels()) == 2 and spiky.lines  # two testable parts, drawn
    # the untestable claims are named in the footnote, not drawn as effects
    footnote = [t.get_text() for t in fig.texts if t.get_gid() == "footnote"]
    assert footnote and "marginal" in footnote[0]
    plots.save_figure(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").stat().st_size > 0
