"""Label-step extraction (labeldist.extraction): segmentation of generated ids into label slots, per-step
distributions and hidden states against full forward passes, and the marginal search."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from labeldist.extraction import (
    LabelTokenTable,
    TokenText,
    build_label_table,
    extract,
    segment_label_slots,
    summarize_slots,
)
from labeldist.prompts import PromptSpec, build_prompt, parse_labels, render_prompt

from .conftest import extraction_settings
from .test_scoring import (
    LABELS,
    SPEC,
    TINY_CFG,
    naive_last,
    naive_logprob,
    prompts_of_different_lengths,
    tiny_model,
    tiny_tokenizer,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread (two spin against other jobs on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- segmentation on hand-built id sequences ------------------------------------------------------------
class PieceTokenizer:
    """A tokenizer whose ids are indices into a list of pieces (enough for decoding)."""

    def __init__(self, pieces: list[str], special: set[int]):
        self.pieces, self.special = pieces, special

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i in self.special))


PIECES = [" joy", ",", " sad", "ness", "\n", " ang", "er", " x", "yz", "</s>", " none", " Joy", '"', " ["]
P = {p: i for i, p in enumerate(PIECES)}
HAND_TABLE = LabelTokenTable(
    labels=("joy", "sad", "sadness", "anger", "none"),
    first=((P[" joy"],), (P[" sad"],), (P[" sad"], P["ness"]), (P[" ang"], P["er"]), (P[" none"],)),
    later=((P[" joy"],), (P[" sad"],), (P[" sad"], P["ness"]), (P[" ang"], P["er"]), (P[" none"],)),
    lead=(), sep=(P[","],), end=(P["\n"],), fmt="comma", eos_ids=frozenset({P["</s>"]}),
)


def seg(pieces: list[str], table: LabelTokenTable = HAND_TABLE):
    ids = [P[p] for p in pieces]
    slots, start = segment_label_slots(ids, table, TokenText(PieceTokenizer(PIECES, {P["</s>"]})))
    named = [(s.position, table.labels[s.label] if s.label is not None else None, s.text) for s in slots]
    return named, slots, start


@pytest.mark.parametrize("pieces, expected", [
    # labels sharing a first sub-token: the longest in-context match followed by a boundary wins
    ([" joy", ",", " sad", "ness", "\n"], [(0, "joy"), (2, "sadness")]),
    ([" sad", ",", " sad", "ness", ",", " sad"], [(0, "sad"), (2, "sadness"), (5, "sad")]),
    # a multi-token label
    ([" ang", "er", "\n"], [(0, "anger")]),
    # a label emitted twice keeps both slots
    ([" joy", ",", " joy", "\n"], [(0, "joy"), (2, "joy")]),
    # no label at all
    (["\n"], []), ([], []), (["</s>"], []),
    # none first
    ([" none", "\n"], [(0, "none")]),
    # unknown strings, also one starting like a label
    ([" x", "yz", ",", " joy"], [(0, None), (3, "joy")]),
    ([" sad", "yz", ",", " ang", "er", "</s>", " joy"], [(0, None), (3, "anger")]),
    # a label written with other ids (case) is matched by its text
    ([" Joy", "\n"], [(0, "joy")]),
])
def test_segmentation_of_hand_built_ids(pieces, expected):
    named, _, _ = seg(pieces)
    assert [(pos, label) for pos, label, _ in named] == expected


def test_slot_summary_counts_repeats_unknowns_and_none():
    _, slots, _ = seg([" joy", ",", " x", "yz", ",", " joy", ",", " sad", "ness", ",", " joy", "\n"])
    labels, unknown, repeated = summarize_slots(slots, HAND_TABLE)
    assert labels == ["joy", "sadness"] and unknown == ["xyz"] and repeated == ["joy", "joy"]
    _, slots, _ = seg([" none", "\n"])
    assert summarize_slots(slots, HAND_TABLE) == ([], [], [])
    assert [s.exact for s in seg([" Joy", ",", " joy"])[1]] == [False, True]


def test_json_slots_after_lead_and_quotes():
    pieces = [" [", '"', " joy", '"', ",", '"', " sad", '"', "\n"]
    table = LabelTokenTable(**{**HAND_TABLE.__dict__, "fmt": "json", "lead": (P[" ["], P['"'])})
    named, _, start = seg(pieces, table)
    assert start == 2 and [(p, l) for p, l, _ in named] == [(2, "joy"), (6, "sad")]


@pytest.mark.parametrize("fmt", ["comma", "json"])
def test_table_matches_demo_tokenization_and_round_trips(fmt):
    tok = tiny_tokenizer()
    spec = PromptSpec(**{**SPEC.__dict__, "label_format": fmt})
    table = build_label_table(tok, spec, LABELS)
    assert table.labels[-1] == "none" and len(table.first) == len(LABELS) + 1
    # a demo's label line contains exactly lead + first[joy] + sep + later[fear] + end
    demo = tok(prompts_of_different_lengths()[0].replace("my friend left", "x") + " " +
               ('{"label": ["joy", "fear"]}' if fmt == "json" else "joy, fear") + "\n")["input_ids"]
    line = list(table.lead + table.first[0] + table.sep + table.later[4] + table.end)
    assert any(demo[i : i + len(line)] == line for i in range(len(demo)))
    # generated ids built from the table segment back into the same labels
    ids = list(table.lead + table.first[5] + table.sep + table.later[0] + table.sep + table.later[7] + table.end)
    slots, _ = segment_label_slots(ids, table, TokenText(tok))
    assert [table.labels[s.label] for s in slots] == ["sadness", "joy", "none"]
    assert all(s.exact for s in slots)
    assert slots[0].position == len(table.lead)


# ---- extraction against full forwards --------------------------------------------------------------------
def designed_model(transitions: dict[int, dict[int, float]], noise: float = 0.05):
    """A Llama whose next token is (almost) a function of the current one: `transitions[cur][next]` is
    the next token's logit, every other logit 0. Small random attention/MLP weights (std `noise`) keep
    the outputs context-dependent while the designed tokens still win by a wide margin."""
    tok = tiny_tokenizer()
    d = TINY_CFG["hidden_size"]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=TINY_CFG["intermediate_size"],
                      num_hidden_layers=TINY_CFG["num_layers"], num_attention_heads=TINY_CFG["num_heads"],
                      num_key_value_heads=TINY_CFG["num_kv_heads"], max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    tokens = sorted(set(transitions) | {n for nxt in transitions.values() for n in nxt})
    axis = {t: i for i, t in enumerate(tokens)}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, noise)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb[:, : len(tokens)] = 0.0
        for t in tokens:
            emb[t] = 0.0
            emb[t, axis[t]] = 1.0
        head.zero_()
        for cur, nxt in transitions.items():
            for n, logit in nxt.items():
                head[n, axis[cur]] = logit / d ** 0.5  # the final RMSNorm scales a unit axis to sqrt(d)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model.eval()


LABELS_X = LABELS + ["zyxwvu"]  # one label the tokenizer splits into many tokens


def _ids(table, label, first=True):
    return (table.first if first else table.later)[table.labels.index(label)]


@pytest.fixture(scope="module")
def comma_table():
    return build_label_table(tiny_tokenizer(), SPEC, LABELS_X)


def _check_against_full_forward(model, prompts, results, table):
    tok = tiny_tokenizer()
    for prompt, ex in zip(prompts, results):
        p = tok(prompt)["input_ids"]
        gen = ex.generated_ids
        assert ex.record["n_tokens"] == len(gen)
        for s_index, step in enumerate(ex.record["steps"]):
            t = step["position"]
            logits, _ = naive_last(model, p + gen[:t])
            firsts = table.first_token_ids(s_index)
            assert step["first_token_logits"] == pytest.approx(logits[firsts].tolist(), abs=2e-4)
            naive = [naive_logprob(model, p + gen[:t], list(ids)) for ids in table.slot_ids(s_index)]
            assert step["whole_label_logprobs"] == pytest.approx(naive, abs=2e-4)
        if ex.hidden is not None:
            t0 = ex.record["steps"][0]["position"] if ex.record["steps"] else 0
            _, hs = naive_last(model, p + gen[:t0], hidden=True)
            assert ex.hidden.shape == hs.shape
            assert torch.allclose(ex.hidden, hs, atol=2e-4)


@pytest.mark.parametrize("fmt", ["comma", "json"])
def test_steps_and_hidden_equal_full_forward_random_model(fmt):
    """Whatever a random model writes, every slot's numbers equal a fresh forward on prompt + prefix."""
    model, tok = tiny_model(), tiny_tokenizer()
    spec = PromptSpec(**{**SPEC.__dict__, "label_format": fmt})
    table = build_label_table(tok, spec, LABELS_X)
    prompts = [build_prompt(spec, LABELS_X, [("so sad", ["sadness"])], q) for q in ("the day", "my friend left me")]
    settings = extraction_settings(max_new_tokens=6, batch_size=3, hidden_layers="all")
    results = extract(model, tok, prompts, spec, LABELS_X, settings, progress=False)
    assert any(ex.record["steps"] for ex in results)
    _check_against_full_forward(model, prompts, results, table)
    for ex in results:
        assert ex.hidden.shape == (TINY_CFG["num_layers"] + 1, TINY_CFG["hidden_size"])


def test_designed_output_steps_labels_and_conditional(comma_table):
    """A model that writes `joy, zyxwvu` (multi-token second label): two steps at the right positions,
    distributions equal to full forwards, label_logprob = the emitted label's whole-label log-prob."""
    tok = tiny_tokenizer()
    colon = tok(prompts_of_different_lengths()[0])["input_ids"][-1]
    joy, odd = _ids(comma_table, "joy"), _ids(comma_table, "zyxwvu", first=False)
    sep, end = comma_table.sep, comma_table.end
    assert len(joy) == 1 and len(sep) == 1 and len(end) == 1 and len(odd) > 2
    trans = {colon: {joy[0]: 25.0}, joy[0]: {sep[0]: 25.0, end[0]: 20.0}, sep[0]: {odd[0]: 25.0}}
    for a, b in zip(odd, odd[1:]):
        trans[a] = {b: 25.0}
    trans[odd[-1]] = {end[0]: 25.0}
    model = designed_model(trans)
    prompts = prompts_of_different_lengths()
    settings = extraction_settings(max_new_tokens=16, batch_size=2, hidden_layers="all", max_rows=5)
    results = extract(model, tok, prompts, SPEC, LABELS_X, settings, progress=False)
    for ex in results:
        rec = ex.record
        assert rec["output_text"] == "joy, zyxwvu"
        assert rec["labels"] == ["joy", "zyxwvu"] and not rec["no_label"] and not rec["hit_max_tokens"]
        assert [s["position"] for s in rec["steps"]] == [0, 2]
        assert [s["label"] for s in rec["steps"]] == ["joy", "zyxwvu"]
        assert rec["n_tokens"] == 3 + len(odd)
        parsed = parse_labels(rec["output_text"], "comma", LABELS_X)
        assert parsed.labels == rec["labels"] and parsed.unknown == rec["unknown"]
        for step in rec["steps"]:
            idx = comma_table.labels.index(step["label"])
            assert step["label_logprob"] == pytest.approx(step["whole_label_logprobs"][idx], abs=1e-4)
            assert max(step["whole_label_logprobs"]) == step["whole_label_logprobs"][idx]
    _check_against_full_forward(model, prompts, results, comma_table)


def test_repeats_and_max_tokens():
    tok = tiny_tokenizer()
    table = build_label_table(tok, SPEC, LABELS)
    colon = tok(prompts_of_different_lengths()[0])["input_ids"][-1]
    joy, sep = _ids(table, "joy")[0], table.sep[0]
    model = designed_model({colon: {joy: 25.0}, joy: {sep: 25.0}, sep: {joy: 25.0}})
    settings = extraction_settings(max_new_tokens=7, batch_size=3)
    ex = extract(model, tok, prompts_of_different_lengths()[:1], SPEC, LABELS, settings, progress=False)[0]
    rec = ex.record
    assert rec["hit_max_tokens"] and rec["n_tokens"] == 7
    assert rec["labels"] == ["joy"] and rec["repeated"] == ["joy", "joy", "joy"]
    assert [s["position"] for s in rec["steps"]] == [0, 2, 4, 6]
    assert "marginal" not in rec and ex.hidden is None


def test_marginal_is_one_for_a_certain_label():
    """The model writes `joy` with probability ~1 then ends or adds `fear` about evenly: marginal(joy)
    = 1, marginal(fear) strictly between 0 and 1, every other label ~0."""
    tok = tiny_tokenizer()
    table = build_label_table(tok, SPEC, LABELS)
    colon = tok(prompts_of_different_lengths()[0])["input_ids"][-1]
    joy, fear = _ids(table, "joy")[0], _ids(table, "fear", first=False)[0]
    sep, end = table.sep[0], table.end[0]
    model = designed_model({colon: {joy: 25.0}, joy: {sep: 25.0, end: 25.0}, sep: {fear: 25.0},
                            fear: {end: 25.0}})
    settings = extraction_settings(max_new_tokens=8, batch_size=3, marginal=True)
    results = extract(model, tok, prompts_of_different_lengths(), SPEC, LABELS, settings, progress=False)
    for ex in results:
        marg = ex.record["marginal"]
        assert len(marg) == len(LABELS) + 1 and all(0.0 <= m <= 1.0 for m in marg)
        assert marg[LABELS.index("joy")] == pytest.approx(1.0, abs=1e-6)
        assert 0.05 < marg[LABELS.index("fear")] < 0.95
        others = [m for i, m in enumerate(marg) if LABELS[i:i + 1] not in (["joy"], ["fear"])]
        assert max(others) < 1e-3


def test_marginal_on_random_model_is_a_probability_per_label():
    model, tok = tiny_model(), tiny_tokenizer()
    settings = extraction_settings(max_new_tokens=6, batch_size=3, marginal=True, marginal_max_depth=3)
    for ex in extract(model, tok, prompts_of_different_lengths(), SPEC, LABELS, settings, progress=False):
        marg = ex.record["marginal"]
        assert len(marg) == len(LABELS) + 1 and all(0.0 <= m <= 1.0 + 1e-9 for m in marg)
        assert sum(marg) >= 1.0 - 1e-9  # every explored path holds at least one label


def _naive_marginal(model, ids, table, top_p, min_prob, max_depth):
    """The marginal search of docs/methods.md section 4 with every score from a full forward pass."""
    n = len(table.labels)
    totals, marg = 0.0, [0.0] * n
    stack = [((), 1.0, list(ids))]
    while stack:
        labels, prob, ctx = stack.pop()
        if not labels:
            choices = list(range(n))
            seqs = [list(table.first[c]) for c in choices]
        else:
            choices = [None] + [c for c in range(n) if c != table.none_index and c not in labels]
            seqs = [list(table.end) if c is None else list(table.sep + table.later[c]) for c in choices]
        # END: summed over the token sequences that end the list (table.ends)
        s = [sum(math.exp(naive_logprob(model, ctx, list(e))) for e in table.ends) if c is None
             else math.exp(naive_logprob(model, ctx, seq)) for c, seq in zip(choices, seqs)]
        q = [x / sum(s) for x in s]
        order = sorted(range(len(q)), key=lambda i: -q[i])
        cum = 0.0
        for rank, i in enumerate(order):
            p = prob * q[i]
            if rank == 0 or p >= min_prob:
                c = choices[i]
                new = labels if c is None else labels + (c,)
                if c is None or c == table.none_index or len(new) >= max_depth:
                    totals += p
                    for li in new:
                        marg[li] += p
                else:
                    stack.append((new, p, ctx + seqs[i]))
            cum += q[i]
            if cum >= top_p - 1e-12:
                break
    return [m / totals for m in marg]


@pytest.mark.parametrize("case", ["designed_comma", "random_json"])
def test_marginal_equals_search_with_full_forwards(case):
    """The KV-cache search (extensions per depth, batched over examples) gives the same marginals as
    the same search scored by full forward passes. Designed case: after every label, END and a further
    label are about equally likely, and a multi-token label is among the options, so the search goes
    three labels deep; random case: json format on a random model."""
    tok = tiny_tokenizer()
    fmt = "comma" if case == "designed_comma" else "json"
    spec = PromptSpec(**{**SPEC.__dict__, "label_format": fmt})
    labels = ["joy", "fear", "zyxwvu", "anger"]
    table = build_label_table(tok, spec, labels)
    prompts = [build_prompt(spec, labels, [("so sad", ["fear"])], q) for q in ("the day", "my friend left me")]
    if case == "designed_comma":
        colon = tok(prompts[0])["input_ids"][-1]
        first = {l: table.first[i] for i, l in enumerate(table.labels)}
        later = {l: table.later[i] for i, l in enumerate(table.labels)}
        sep, end = table.sep[0], table.end[0]
        trans = {colon: {first["joy"][0]: 25.0, first["fear"][0]: 24.0}, sep: {}}
        for label in labels:
            trans[later[label][-1]] = {sep: 25.0, end: 25.0}
            trans[sep][later[label][0]] = 24.0 + (label == "fear")
            for a, b in zip(later[label], later[label][1:]):
                trans[a] = {b: 25.0}
        model = designed_model(trans)
        top_p, min_prob, depth = 0.99, 0.01, 3
    else:
        model = tiny_model(0.08)
        top_p, min_prob, depth = 0.99, 0.002, 3
    settings = extraction_settings(max_new_tokens=6, batch_size=2, marginal=True, marginal_top_p=top_p,
                                   marginal_min_prob=min_prob, marginal_max_depth=depth, max_rows=7)
    results = extract(model, tok, prompts, spec, labels, settings, progress=False)
    for prompt, ex in zip(prompts, results):
        steps = ex.record["steps"]
        t0 = steps[0]["position"] if steps else 0
        ids = tok(prompt)["input_ids"] + ex.generated_ids[:t0]
        if not steps and table.lead and ex.generated_ids[: len(table.lead)] != list(table.lead):
            ids += list(table.lead)
        naive = _naive_marginal(model, ids, table, top_p, min_prob, depth)
        assert ex.record["marginal"] == pytest.approx(naive, abs=1e-4)
        assert sum(m > 1e-6 for m in naive) >= 3  # the search really branched
        if case == "designed_comma":  # ... into lists of up to three labels, one of them multi-token
            assert sum(naive) > 1.5 and naive[labels.index("zyxwvu")] > 0.05


def test_chat_template_prompts():
    """With the chat template the label list follows the assistant header directly and ends at EOS."""
    model, tok = tiny_model(), tiny_tokenizer()
    chat = PromptSpec(**{**SPEC.__dict__, "use_chat_template": True})
    table = build_label_table(tok, chat, LABELS_X, chat=True)
    assert table.lead == () and table.end == (tok.eos_token_id,)
    assert tok.decode(list(table.first[0])) == "joy"  # no leading space after the header's newline
    prompts = [render_prompt(chat, LABELS_X, [("so sad", ["sadness"])], q, tok) for q in ("the day", "he left")]
    settings = extraction_settings(max_new_tokens=5, batch_size=2, hidden_layers="all", marginal=True)
    results = extract(model, tok, prompts, chat, LABELS_X, settings, add_special_tokens=False, progress=False)
    ids_of = lambda p: tok(p, add_special_tokens=False)["input_ids"]  # noqa: E731
    for prompt, ex in zip(prompts, results):
        p = ids_of(prompt)
        assert p[0] == tok.bos_token_id  # the template writes BOS once
        for s_index, step in enumerate(ex.record["steps"]):
            t = step["position"]
            naive = [naive_logprob(model, p + ex.generated_ids[:t], list(ids)) for ids in table.slot_ids(s_index)]
            assert step["whole_label_logprobs"] == pytest.approx(naive, abs=2e-4)
        assert len(ex.record["marginal"]) == len(LABELS_X) + 1


def test_steps_hidden_and_marginal_on_a_hybrid_sliding_window_model():
    """Gemma-3-style layers (sliding window 8 alternating with full attention), prompts many windows
    long: generation keeps every position, so every slot's numbers, the hidden states and the marginal
    equal full forwards."""
    from .test_scoring import tiny_gemma

    tok, model = tiny_tokenizer(), tiny_gemma()
    spec = PromptSpec(**{**SPEC.__dict__, "label_format": "json"})
    labels = ["joy", "fear", "zyxwvu", "anger"]
    table = build_label_table(tok, spec, labels)
    prompts = [build_prompt(spec, labels, [("so sad", ["fear"])], q) for q in ("the day", "my friend left me")]
    settings = extraction_settings(max_new_tokens=8, batch_size=2, hidden_layers="all", marginal=True,
                                   marginal_min_prob=0.002, marginal_max_depth=2)
    results = extract(model, tok, prompts, spec, labels, settings, progress=False)
    assert any(ex.record["steps"] for ex in results)
    _check_against_full_forward(model, prompts, results, table)
    for prompt, ex in zip(prompts, results):
        steps = ex.record["steps"]
        ids = tok(prompt)["input_ids"] + ex.generated_ids[: steps[0]["position"] if steps else 0]
        if not steps and ex.generated_ids[: len(table.lead)] != list(table.lead):
            ids += list(table.lead)
        assert ex.record["marginal"] == pytest.approx(_naive_marginal(model, ids, table, 0.99, 0.002, 2), abs=1e-4)
