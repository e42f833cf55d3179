"""KV-shared scoring on real small LLMs (SmolLM2-135M-Instruct; Gemma-3-270M, whose layers alternate a
512-position sliding window and full attention) against plain full forward passes.

The models come from their wheels (session fixtures `smollm2`, `gemma3` in conftest.py; skipped with an
install hint where absent). Gemma runs few forwards of ~600-token prompts: it is slow on a CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from labeldist.extraction import build_label_table, extract
from labeldist.prompts import (
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question_parts,
    render_prompt,
    unary_demos,
    unary_instruction,
    unary_question,
)
from labeldist.scoring import answer_ids, attention_windows, choice_probabilities

from .conftest import REPO, extraction_settings
from .test_extraction import _naive_marginal

LABELS = ["Care", "Equality", "Proportionality", "Loyalty", "Authority", "Purity"]
SPEC = PromptSpec.from_config(dict(
    instruction="Classify the following inputs into none, one, or multiple the following moral foundations per "
                "input: {labels}. Output exactly these moral foundations and no others.",
    k=3, label_format="json",
))
# query texts whose end merges with what follows in a real BPE (`\n\n` + `\n` -> `\n\n\n`, `  ` + `\n`)
AWKWARD = ["It was her.\n\n", "  spaced out  ", "Really?!", "two\nlines\n \n"]


def mfrc_rows(n: int) -> list[tuple[str, list[str]]]:
    """(text, gold labels) of the first n comments of the committed MFRC sample."""
    out = []
    with open(REPO / "data" / "mfrc" / "mfrc_sample.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.append((rec["text"], [k for k, v in rec["distribution"].items() if k != "none" and v >= 0.5]))
            if len(out) == n:
                break
    return out


def forward(model, ids: list[int], hidden: bool = False):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=hidden)


def naive_logprob(model, ids: list[int], targets: list[int]) -> float:
    logp = torch.log_softmax(forward(model, ids + targets).logits[0].float(), dim=-1)
    return float(sum(logp[len(ids) - 1 + j, t] for j, t in enumerate(targets)))


def naive_choice(model, tok, text: str, answers, add_special_tokens: bool = True) -> float:
    """P(answers[0]) after the tokenized prompt string, from plain forwards; checks that the answers'
    ids continue the string's ids exactly."""
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    question = text[text.rfind("Input:"):]
    ans = [list(answer_ids(tok, question, a)) for a in answers]
    for a, ids_a in zip(answers, ans):
        assert tok(text + a, add_special_tokens=add_special_tokens)["input_ids"] == ids + ids_a
    if all(len(a) == 1 for a in ans):
        scores = forward(model, ids).logits[0, -1].float()[[a[0] for a in ans]]
    else:
        scores = torch.tensor([naive_logprob(model, ids, a) for a in ans])
    return torch.softmax(scores, dim=-1)[0].item()


def choice_prompts(tok, demos, queries, chat: bool = False):
    """(unary prompts, pairwise prompts) for each query, plain text or with the tokenizer's template."""
    spec = PromptSpec(**{**SPEC.__dict__, "use_chat_template": chat})
    import random

    rng = random.Random(0)
    unary = [choice_prompt(spec, unary_instruction(spec, LABELS), unary_demos(demos, LABELS, rng), q,
                           [unary_question(l) for l in LABELS[:2]], UNARY_ANSWERS, tok) for q in queries]
    pairwise = [choice_prompt(spec, pairwise_instruction(spec, LABELS), pairwise_demos(demos, LABELS, rng), q,
                              [pairwise_question_parts(a, b) for a, b in (("Care", "none"), ("Care", "Purity"))],
                              PAIRWISE_ANSWERS, tok) for q in queries]
    return unary, pairwise


def check_choices(model, tok, prompts, add_special_tokens=True, tol=1e-4):
    got = choice_probabilities(model, tok, [p.prefix for p in prompts], [p.suffixes for p in prompts],
                               prompts[0].answer_texts, add_special_tokens=add_special_tokens, batch_size=4)
    for p, g in zip(prompts, got):
        for j, parts in enumerate(p.suffixes):
            expected = naive_choice(model, tok, p.prefix + "".join(parts), p.answer_texts, add_special_tokens)
            assert g[j] == pytest.approx(expected, abs=tol), (p.prefix[-30:], parts)


def test_smollm2_unary_and_pairwise_score_the_prompt_string(smollm2):
    """Queries ending in blank lines, spaces or punctuation: probabilities equal plain forwards of the
    whole prompt string, in plain text and with the chat template."""
    model, tok = smollm2
    prompts_u, prompts_p = choice_prompts(tok, mfrc_rows(2), AWKWARD)
    moved = sum(tok(p.prefix + "".join(p.suffixes[0]))["input_ids"][: len(tok(p.prefix)["input_ids"])]
                != tok(p.prefix)["input_ids"] for p in prompts_u)
    assert moved >= 2, "the awkward queries should merge across the prefix/suffix boundary"
    check_choices(model, tok, prompts_u)
    check_choices(model, tok, prompts_p[:2])
    chat_u, _ = choice_prompts(tok, mfrc_rows(1), AWKWARD[:2], chat=True)
    check_choices(model, tok, chat_u, add_special_tokens=False)


@pytest.mark.parametrize("chat", [False, True])
def test_smollm2_extraction_and_marginal_equal_full_forwards(smollm2, chat):
    """Real prompts (MFRC comments, JSON labels; plain text, and the chat template, where the model
    writes several labels and the marginal search goes three labels deep): every slot's first-token
    logits and whole-label log-probs, the hidden states and the marginal equal plain forwards on prompt
    + generated prefix."""
    model, tok = smollm2
    spec = PromptSpec(**{**SPEC.__dict__, "use_chat_template": chat})
    rows = mfrc_rows(40)
    demos = [r for r in rows if r[1]][:3] if chat else rows[:3]  # chat: demos that name labels
    prompts = [render_prompt(spec, LABELS, demos, text, tok) for text, _ in rows[3:5 - chat]]
    table = build_label_table(tok, spec, LABELS, chat=chat)
    depth, min_prob = (3, 0.1) if chat else (2, 0.02)
    settings = extraction_settings(max_new_tokens=16, batch_size=2, hidden_layers="all", marginal=True,
                                   marginal_min_prob=min_prob, marginal_max_depth=depth)
    results = extract(model, tok, prompts, spec, LABELS, settings, add_special_tokens=not chat, progress=False)
    for prompt, ex in zip(prompts, results):
        ids = tok(prompt, add_special_tokens=not chat)["input_ids"]
        gen = ex.generated_ids
        for s_index, step in enumerate(ex.record["steps"]):
            ctx = ids + gen[: step["position"]]
            logits = forward(model, ctx).logits[0, -1].float()
            assert step["first_token_logits"] == pytest.approx(logits[table.first_token_ids(s_index)].tolist(),
                                                               abs=2e-3)
            naive = [naive_logprob(model, ctx, list(l)) for l in table.slot_ids(s_index)]
            assert step["whole_label_logprobs"] == pytest.approx(naive, abs=5e-4)
        t0 = ex.record["steps"][0]["position"] if ex.record["steps"] else 0
        out = forward(model, ids + gen[:t0], hidden=True)
        hs = torch.stack([h[0, -1] for h in out.hidden_states]).float()
        assert ex.hidden.shape == hs.shape
        assert torch.allclose(ex.hidden, hs, atol=1e-5 * float(hs.abs().max()))
        root = ids + gen[:t0]
        if not ex.record["steps"] and gen[: len(table.lead)] != list(table.lead):
            root += list(table.lead)
        naive = _naive_marginal(model, root, table, 0.99, min_prob, depth)
        assert ex.record["marginal"] == pytest.approx(naive, abs=1e-4)
        if chat:
            assert sum(m > 1e-3 for m in naive) >= 3, naive  # the search went beyond one path


def test_gemma3_beyond_its_sliding_window(gemma3):
    """Gemma-3-270M with prompts longer than its 512-position window: extraction (generate's logits, a
    slot's whole-label log-probs, hidden states) and unary probabilities equal plain forwards."""
    model, tok = gemma3
    window, mixed = attention_windows(model)
    assert window == 512 and mixed
    rows = mfrc_rows(12)
    demos = []
    for row in rows[1:]:
        demos.append(row)
        prompt = render_prompt(SPEC, LABELS, demos, rows[0][0])
        if len(tok(prompt)["input_ids"]) > window + 40:
            break
    ids = tok(prompt)["input_ids"]
    assert len(ids) > window + 40
    table = build_label_table(tok, SPEC, LABELS)
    # the list ends with `"]}` + `\n` or `"]}` + `\n\n` (one Gemma token): both are END
    assert [tok.decode(list(e)) for e in table.ends] == ['"]}\n', '"]}\n\n']
    settings = extraction_settings(max_new_tokens=10, batch_size=1, hidden_layers="all", marginal=True,
                                   marginal_min_prob=0.05, marginal_max_depth=2)
    ex = extract(model, tok, [prompt], SPEC, LABELS, settings, progress=False)[0]
    assert ex.record["steps"], ex.record["output_text"]
    step = ex.record["steps"][0]
    ctx = ids + ex.generated_ids[: step["position"]]
    out = forward(model, ctx, hidden=True)
    logits = out.logits[0, -1].float()
    assert step["first_token_logits"] == pytest.approx(logits[table.first_token_ids(0)].tolist(), abs=2e-3)
    for li in (step["label"] and table.labels.index(step["label"]) or 0, 2):  # the emitted label and a long one
        assert step["whole_label_logprobs"][li] == pytest.approx(naive_logprob(model, ctx, list(table.first[li])),
                                                                 abs=1e-3)
    hs = torch.stack([h[0, -1] for h in out.hidden_states]).float()
    assert torch.allclose(ex.hidden, hs, atol=1e-5 * float(hs.abs().max()))
    # after the emitted label the model closes with `\n\n` far more than with `\n`: END must count both
    li = table.labels.index(step["label"]) if step["label"] in table.labels else 0
    emitted = ids + ex.generated_ids[: step["position"]] + list(table.first[li])
    p_nl, p_blank = (naive_logprob(model, emitted, list(e)) for e in table.ends)
    assert p_blank > p_nl + 1.0, (p_nl, p_blank)
    root = ids + ex.generated_ids[: step["position"]]
    assert ex.record["marginal"] == pytest.approx(_naive_marginal(model, root, table, 0.99, 0.05, 2), abs=1e-4)
    unary, _ = choice_prompts(tok, demos, [AWKWARD[0]])
    assert len(tok(unary[0].prefix)["input_ids"]) > window
    check_choices(model, tok, unary, tol=2e-4)
