"""`scoring.split_tokenizations`: a prompt's prefix is tokenized once and each prefix + suffix string from
a short tail of the prefix only; the ids must be exactly those of tokenizing the whole string.

On the tokenizers we ship (the workflow's tiny byte-level BPE, SmolLM2-135M's GPT-2-style BPE, Gemma-3's
SentencePiece-style BPE; the real ones read from the session fixtures' converted folders, no model
loaded), over many prefixes ending in spaces, newlines, tabs, punctuation and non-ASCII characters, with
and without special tokens, plain and chat prompts: own[:c] + tail == tokenizer(prefix + suffix). The
comparison is shown to catch a wrong cut (a cut inside a word), and tokenizers where a tail cannot be
tokenized alone (a post-processor appending EOS) fall back to whole strings, still exact.
"""

from __future__ import annotations

import random

import pytest

from labeldist import scoring
from labeldist.prompts import (
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question_parts,
    unary_demos,
    unary_instruction,
    unary_question,
)
from labeldist.scoring import split_tokenizations

from .test_scoring import SPEC, WORDS, tiny_tokenizer

LABELS = ["joy", "fear", "anger", "Care work", "Équité", "東京"]
MORE_WORDS = WORDS + ["café", "naïve", "Zürich", "東京", "don't", "it's", "123", "4.5", "--", "?!", "…",
                      "¿qué?", "ñandú", "emoji🙂", "Ünïcödé", "x", "I"]
ENDINGS = ["", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", " \n", "\n \n", "\t", " \t", ".", "?!", "...", "…",
           "é", " é", "!\n\n", "  \n", "東", " 東京", "'s", "\r\n", "🙂", " 🙂", ",", ":", '"', "'", "-"]
STARTS = ["\nIs the label reasonable:", "Is", " is", "\n\nQuestion", "s more", "\n", " ", "", "é", "?",
          "\t", "  x", "'t", "🙂", "東"]


@pytest.fixture(scope="module", params=["tiny", "smollm2", "gemma3"])
def tokenizer(request):
    """The tiny tokenizer, or a real model's tokenizer read from its converted folder (no weights loaded)."""
    if request.param == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(request.getfixturevalue(f"{request.param}_dir"))


def random_cases(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Prompt-like prefixes (instruction, demo, query) ending in awkward characters, 5 suffixes each."""
    rng = random.Random(seed)
    prefixes, suffixes = [], []
    for _ in range(n):
        query = " ".join(rng.choices(MORE_WORDS, k=rng.randint(0, 10))) + rng.choice(ENDINGS)
        if rng.random() < 0.3:
            query += rng.choice(ENDINGS)
        prefixes.append(f"Classify the inputs.\n\nInput: {rng.choice(MORE_WORDS)} ok\nAnswer: yes\n\nInput: {query}"
                        + rng.choice(["", "\n", " ", "\n\n"]))
        suffixes.append([rng.choice(STARTS) + rng.choice(["", " label ", "Label: "]) + rng.choice(LABELS)
                         + rng.choice(["", "?", "\nIs the label reasonable:", " or "]) for _ in range(5)])
    return prefixes, suffixes


def choice_cases(tok, chat: bool) -> tuple[list[str], list[list[str]]]:
    """The workflow's unary and pairwise prompts (labeldist.prompts) for awkward query texts."""
    spec = type(SPEC)(**{**SPEC.__dict__, "k": 2, "use_chat_template": chat})
    demos = [("so sad today", ["fear"]), ("nothing", [])]
    rng = random.Random(0)
    prefixes, suffixes = [], []
    options = LABELS + ["none"]
    for query in ["It was her.\n\n", "  spaced out  ", "Really?!", "two\nlines\n \n", "café ", "東京", "end\t", "x"]:
        for prompt in (
            choice_prompt(spec, unary_instruction(spec, LABELS), unary_demos(demos, LABELS, rng), query,
                          [unary_question(l) for l in LABELS], UNARY_ANSWERS, tok),
            choice_prompt(spec, pairwise_instruction(spec, LABELS), pairwise_demos(demos, LABELS, rng), query,
                          [pairwise_question_parts(a, b) for a in options for b in options if a != b],
                          PAIRWISE_ANSWERS, tok),
        ):
            prefixes.append(prompt.prefix)
            suffixes.append(["".join(parts) for parts in prompt.suffixes])
    return prefixes, suffixes


def mismatches(tok, prefixes, suffixes, add_special_tokens: bool) -> tuple[list[tuple[str, str]], int]:
    """(prefix, suffix) pairs whose split ids differ from the whole string's, and how many prefixes took
    the short-tail path (cut > 0)."""
    own, cuts = split_tokenizations(tok, prefixes, suffixes, add_special_tokens)
    bad = []
    for prefix, ss, ids, (cut, tails) in zip(prefixes, suffixes, own, cuts):
        assert ids == tok(prefix, add_special_tokens=add_special_tokens)["input_ids"]
        assert len(tails) == len(ss)
        whole = tok([prefix + s for s in ss], add_special_tokens=add_special_tokens)["input_ids"]
        bad += [(prefix, s) for s, tail, full in zip(ss, tails, whole) if ids[:cut] + tail != full]
    return bad, sum(cut > 0 for cut, _ in cuts)


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_split_ids_equal_whole_string_ids(tokenizer, add_special_tokens):
    prefixes, suffixes = random_cases(400, seed=1 + add_special_tokens)
    bad, short = mismatches(tokenizer, prefixes, suffixes, add_special_tokens)
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:3]}"
    assert short >= 0.9 * len(prefixes), "the short-tail path was taken too rarely to be tested"


def test_split_ids_equal_whole_string_ids_for_choice_prompts(tokenizer):
    chats = [False, True] if getattr(tokenizer, "chat_template", None) else [False]
    for chat in chats:
        prefixes, suffixes = choice_cases(tokenizer, chat)
        bad, short = mismatches(tokenizer, prefixes, suffixes, add_special_tokens=not chat)
        assert not bad, f"chat={chat}: {len(bad)} mismatches, e.g. {bad[:3]}"
        assert short == len(prefixes)


def test_the_comparison_catches_a_cut_inside_a_word(monkeypatch):
    """With cuts allowed at any character (not only before ` word`), suffixes that continue the prefix's
    last word re-tokenize differently: the same comparison reports it."""
    tok = tiny_tokenizer()

    def anywhere(text):
        yield from range(len(text) - 1, 0, -1)

    monkeypatch.setattr(scoring, "_word_starts", anywhere)
    prefixes = ["Input: the day was lo", "Input: my friend who le", "Input: so happ"]
    suffixes = [["ng and", "ng\nIs"], ["ft the town", "ft"], ["y then", "y"]]
    bad, _ = mismatches(tok, prefixes, suffixes, add_special_tokens=True)
    assert bad


def test_falls_back_to_whole_strings_where_a_tail_does_not_tokenize_alone():
    """A post-processor that appends EOS: the tail alone never gives the prefix's last ids, so the whole
    strings are tokenized (cut 0), and the ids are still exact."""
    from tokenizers import processors

    tok = tiny_tokenizer()
    bos, eos = tok.bos_token, tok.eos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A $B {eos}",
        special_tokens=[(bos, tok.bos_token_id), (eos, tok.eos_token_id)])
    prefixes, suffixes = random_cases(40, seed=5)
    bad, short = mismatches(tok, prefixes, suffixes, add_special_tokens=True)
    assert not bad and short == 0
    bad, short = mismatches(tok, prefixes, suffixes, add_special_tokens=False)
    assert not bad and short > 0


def test_no_prefixes_and_prefixes_without_suffixes():
    tok = tiny_tokenizer()
    assert split_tokenizations(tok, [], []) == ([], [])
    own, cuts = split_tokenizations(tok, ["Input: the day was long\n", "x"], [[], ["y"]])
    assert own[0] == tok("Input: the day was long\n")["input_ids"] and cuts[0][1] == []
    assert own[1][: cuts[1][0]] + cuts[1][1][0] == tok("xy")["input_ids"]
