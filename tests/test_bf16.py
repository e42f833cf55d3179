"""`dtype: bfloat16` on a real small LLM (SmolLM2-135M-Instruct, from its wheel; skipped where absent).

In bf16 every stage that reads scores off the model (extraction with hidden states and the marginal
search, unary and pairwise probabilities) must give finite numbers, and the KV-shared scorer must be as
close to float32 as a plain bf16 full forward is: a cached forward rounds differently from a full one,
so the two differ by bf16's own noise (measured: 0.11-0.21 nats on whole-label log-probs, the size of a
full bf16 forward's own distance from float32; docs/methods.md section 3), never by more. The bound is
that distance, measured here on the same contexts, so the test neither hard-codes bf16's noise nor lets
a broken scorer through (NaN, or one that reads the wrong context: off by nats). In float32 the shared
scorer equals a full forward to ~1e-4.
"""

from __future__ import annotations

import math

import pytest
import torch

from labeldist.extraction import build_label_table, extract, model_eos_ids
from labeldist.models import load_causal_lm
from labeldist.prompts import PromptSpec, render_prompt
from labeldist.scoring import choice_probabilities, reference_logprobs

from .conftest import extraction_settings
from .test_scoring_real import SPEC, choice_prompts, mfrc_rows

LABELS = ["Care", "Loyalty", "Proportionality"]  # one- and three-token labels (+ `none`)
# a short instruction (it is the chat's system turn): ~90-token prompts, where the model writes two labels
CHAT = PromptSpec(**{**SPEC.__dict__, "use_chat_template": True,
                     "instruction": "Label each input with moral foundations from: {labels}."})
# What the KV-shared bf16 scorer may differ from a full bf16 forward beyond the full forward's own worst
# distance from float32, in nats. The two are independent bf16 computations of the same numbers (a
# cached forward sums in another order), so their difference spreads ~sqrt(2) times as wide as either's
# error: for a worst error of <= 0.25 nats (measured 0.15-0.2) that is <= 0.1 beyond it. On average the
# sharing must add nothing: its mean error may pass the full forward's by MEAN_MARGIN only. A scorer that
# reads the wrong context is off by nats.
BF16_MARGIN = 0.1
MEAN_MARGIN = 0.02
FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2_dir):
    """SmolLM2-135M-Instruct loaded as config `dtype: bfloat16` on the CPU, once for this module."""
    return load_causal_lm(smollm2_dir, device="cpu", dtype="bfloat16")


def _gaps(a, b) -> tuple[float, float]:
    """(max, mean) absolute difference of two equally shaped lists of rows."""
    diffs = [abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return max(diffs), sum(diffs) / len(diffs)


def _finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


def test_smollm2_bf16_is_finite_and_kv_sharing_adds_no_error(smollm2_bf16, smollm2):
    """bf16 extraction (hidden states, marginal), unary and pairwise on SmolLM2: finite numbers; the
    KV-shared whole-label log-probs differ from a full bf16 forward by at most that forward's own
    distance from float32 (+ BF16_MARGIN), and are as close to float32 as it on average; unary and
    pairwise probabilities are as close to float32 as that noise allows; in float32, shared = full
    forward. Caught (checked by hand): a scorer that ignores the cache (21.5 nats off) or that sees one
    cache position too few (0.57 nats, against a bound of 0.32)."""
    model, tok = smollm2_bf16
    ref, _ = smollm2  # float32
    assert next(model.parameters()).dtype == torch.bfloat16
    rows = mfrc_rows(18)
    demos = [rows[17]]  # a short comment labelled Loyalty, Proportionality: the model writes labels
    prompts = [render_prompt(CHAT, LABELS, demos, text, tok) for text, _ in rows[7:9]]
    table = build_label_table(tok, CHAT, LABELS, chat=True, eos_ids=model_eos_ids(model))
    settings = extraction_settings(max_new_tokens=12, batch_size=2, hidden_layers="all", marginal=True,
                                   marginal_min_prob=0.1, marginal_max_depth=2)

    # ---- float32 first: the shared scorer equals a full forward (checked on the deepest slot), so its
    # scores are the float32 reference below wherever float32 generated the same ids ----
    res32 = extract(ref, tok, prompts, CHAT, LABELS, extraction_settings(max_new_tokens=12, batch_size=2),
                    add_special_tokens=False, progress=False)
    prompt_ids = [tok(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    fp32 = {(tuple(ids + ex.generated_ids[: step["position"]]), s_index): step["whole_label_logprobs"]
            for ids, ex in zip(prompt_ids, res32) for s_index, step in enumerate(ex.record["steps"])}
    (ctx, s_index), shared32 = max(fp32.items(), key=lambda item: len(item[0][0]))
    assert s_index >= 1, "the check should cover a slot after a separator"
    naive32 = reference_logprobs(ref, list(ctx), table.slot_ids(s_index))
    assert shared32 == pytest.approx(naive32, abs=FP32_TOL)

    # ---- bf16: extraction, hidden states, marginal ----
    results = extract(model, tok, prompts, CHAT, LABELS, settings, add_special_tokens=False, progress=False)
    shared, full16, full32 = [], [], []
    for ids, ex in zip(prompt_ids, results):
        steps = ex.record["steps"]
        assert steps, ex.record["output_text"]
        for step in steps:
            assert _finite(step["first_token_logits"] + step["whole_label_logprobs"] + [step["label_logprob"]])
        assert ex.hidden is not None and bool(torch.isfinite(ex.hidden).all())
        marg = ex.record["marginal"]
        assert len(marg) == len(LABELS) + 1 and all(0.0 <= m <= 1.0 + 1e-6 for m in marg), marg
        for s_index, step in enumerate(steps):
            ctx = ids + ex.generated_ids[: step["position"]]
            targets = table.slot_ids(s_index)
            shared.append(step["whole_label_logprobs"])
            full16.append(reference_logprobs(model, ctx, targets))
            full32.append(fp32.get((tuple(ctx), s_index)) or reference_logprobs(ref, ctx, targets))
    own, own_mean = _gaps(full16, full32)   # a full bf16 forward's distance from float32 (max, mean)
    err, err_mean = _gaps(shared, full32)   # the KV-shared bf16 scorer's
    gap, _ = _gaps(shared, full16)          # between the two bf16 computations
    print(f"\nbf16 whole-label log-probs, {sum(map(len, shared))} scores, max (mean) nats: full bf16 - fp32 "
          f"{own:.3f} ({own_mean:.3f}), shared bf16 - fp32 {err:.3f} ({err_mean:.3f}), shared - full bf16 {gap:.3f}")
    assert own < 0.5, f"a full bf16 forward is {own:.2f} nats from float32: more than bf16 rounding"
    assert gap <= own + BF16_MARGIN, (gap, own)
    assert err_mean <= own_mean + MEAN_MARGIN, (err_mean, own_mean)

    # ---- unary and pairwise in bf16: finite, and as close to float32 as bf16's noise allows ----
    # P(first answer) = sigmoid(log-prob difference of the two answers): each answer's log-prob is off by
    # at most `own` (+ margin), so P is off by at most 0.25 x twice that. float32's shared probabilities
    # equal full forwards (test_scoring_real).
    for prompts_c in choice_prompts(tok, demos, [rows[7][0]], chat=True):
        args = ([p.prefix for p in prompts_c], [p.suffixes for p in prompts_c], prompts_c[0].answer_texts)
        p16 = choice_probabilities(model, tok, *args, add_special_tokens=False)
        p32 = choice_probabilities(ref, tok, *args, add_special_tokens=False)
        assert all(_finite(row) and all(0.0 <= x <= 1.0 for x in row) for row in p16), p16
        bound = 0.5 * (own + BF16_MARGIN)
        print(f"bf16 {'/'.join(args[2])}: P(first answer) - fp32 {_gaps(p16, p32)[0]:.4f} (bound {bound:.3f})")
        assert _gaps(p16, p32)[0] <= bound, (p16, p32)
