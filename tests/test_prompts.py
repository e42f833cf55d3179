"""The prompt layer (labeldist.prompts): label formats, prompt layout, parsing, seeded demo sampling,
and the unary / pairwise prompts."""

from __future__ import annotations

import json
import random

import pytest

from labeldist.prompts import (
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    build_prompt,
    choice_documents,
    choice_prompt,
    completion_text,
    example_block,
    format_labels,
    label_list_prefix,
    label_separator,
    pairwise_demos,
    pairwise_question,
    pairwise_question_parts,
    parse_labels,
    render_prompt,
    sample_demos,
    unary_demos,
    unary_question,
)

LABELS = ["joy", "fear", "anger", "sadness"]
SPEC = PromptSpec.from_config(dict(instruction="Classify into none, one or more of: {labels}.", k=4,
                                   label_format="comma"))


# ---- formats and layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, labels, text", [
    ("comma", ["joy", "fear"], "joy, fear"),
    ("comma", [], "none"),
    ("json", ["joy", "fear"], '{"label": ["joy", "fear"]}'),
    ("json", [], '{"label": ["none"]}'),
])
def test_format_labels(fmt, labels, text):
    assert format_labels(labels, fmt) == text
    # prefix + labels joined by the separator is how the formatted list starts
    items = labels or ["none"]
    assert text.startswith(label_list_prefix(fmt) + label_separator(fmt).join(items))


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="unknown label format"):
        format_labels(["joy"], "yaml")


def test_prompt_layout_ends_at_output_prefix_without_space():
    demos = [("I am glad", ["joy"]), ("so scary and sad", ["fear", "sadness"])]
    prompt = build_prompt(SPEC, LABELS, demos, "what now")
    assert prompt.startswith("Classify into none, one or more of: joy, fear, anger, sadness.\n\n")
    assert "Input: I am glad\nLabels: joy\n" in prompt
    assert "Input: so scary and sad\nLabels: fear, sadness\n" in prompt
    assert prompt.endswith("\nInput: what now\nLabels:")
    # the demo's completion is exactly what follows the query's block
    done = example_block("what now", ["joy"], SPEC)
    assert done == example_block("what now", None, SPEC) + " " + completion_text(["joy"], SPEC)
    assert render_prompt(SPEC, LABELS, demos, "what now") == prompt


def test_render_prompt_uses_chat_template_only_when_asked_and_available():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return json.dumps([m["role"] for m in messages]) + ("|gen" if add_generation_prompt else "")

    chat = PromptSpec(**{**SPEC.__dict__, "use_chat_template": True})
    demos = [("a", ["joy"])]
    assert render_prompt(chat, LABELS, demos, "q", Tok()) == '["system", "user", "assistant", "user"]|gen'
    assert render_prompt(SPEC, LABELS, demos, "q", Tok()) == build_prompt(SPEC, LABELS, demos, "q")
    no_template = type("T", (), {"chat_template": None})()
    assert render_prompt(chat, LABELS, demos, "q", no_template) == build_prompt(chat, LABELS, demos, "q")


# ---- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, fmt, labels, unknown, repeated, said_none", [
    ('{"label": ["joy", "fear"]}', "json", ["joy", "fear"], [], [], False),
    ('{"label": ["Joy", "xyz", "joy"]}', "json", ["joy"], ["xyz"], ["joy"], False),
    ('{"label": ["none"]}', "json", [], [], [], True),
    ('{"label": ["fear", "joy"', "json", ["fear", "joy"], [], [], False),     # truncated, quotes closed
    ('{"label": ["fear", "jo', "json", ["fear"], [], [], False),              # truncated mid-label
    ('["anger"]', "json", ["anger"], [], [], False),
    ("joy, fear", "json", ["joy", "fear"], [], [], False),                     # comma list in json mode
    (" fear, joy\nInput: next one", "comma", ["fear", "joy"], [], [], False),  # only the first line
    ("joy, Fear, joy, joy, xyz", "comma", ["joy", "fear"], ["xyz"], ["joy", "joy"], False),
    ("none", "comma", [], [], [], True),
    ("", "comma", [], [], [], False),
    ("joy,, fear,", "comma", ["joy", "fear"], [], [], False),
])
def test_parse_labels(text, fmt, labels, unknown, repeated, said_none):
    parsed = parse_labels(text, fmt, LABELS)
    assert parsed.labels == labels and parsed.unknown == unknown
    assert parsed.repeated == repeated and parsed.said_none == said_none
    assert parsed.no_label == (not labels and not unknown and not said_none)


@pytest.mark.parametrize("fmt", ["comma", "json"])
def test_parse_inverts_format(fmt):
    for labels in (["joy"], ["fear", "anger", "sadness"], []):
        parsed = parse_labels(format_labels(labels, fmt), fmt, LABELS)
        assert parsed.labels == labels and parsed.said_none == (not labels) and not parsed.unknown


# ---- demo sampling -----------------------------------------------------------------------------------
def _pool(n: int = 60, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [(f"t{i}", rng.sample(LABELS, [0, 1, 1, 2, 3][i % 5])) for i in range(n)]


@pytest.mark.parametrize("strategy", ["multilabel", "uniform", "random"])
def test_sampling_is_deterministic_per_seed(strategy):
    pool = _pool()
    a = sample_demos(pool, 8, strategy, LABELS, random.Random(3))
    b = sample_demos(pool, 8, strategy, LABELS, random.Random(3))
    c = sample_demos(pool, 8, strategy, LABELS, random.Random(4))
    assert a == b and a != c
    assert len(a) == len(set(a)) == 8 and set(a) <= {i for i, _ in pool}


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_multilabel_ratio(ratio):
    pool = _pool()
    labels_of = dict(pool)
    for seed in range(5):
        ids = sample_demos(pool, 8, "multilabel", LABELS, random.Random(seed), multilabel_ratio=ratio)
        n_multi = sum(len(labels_of[i]) >= 2 for i in ids)
        assert n_multi == round(8 * ratio)
        assert all(len(labels_of[i]) >= 1 for i in ids)  # the rest are single-label


def test_multilabel_tops_up_when_a_group_runs_short():
    pool = [("m0", ["joy", "fear"])] + [(f"s{i}", ["joy"]) for i in range(3)] + [("n0", [])]
    ids = sample_demos(pool, 5, "multilabel", LABELS, random.Random(0), multilabel_ratio=1.0)
    assert sorted(ids) == ["m0", "n0", "s0", "s1", "s2"]


def test_uniform_gives_each_label_its_share():
    pool = _pool()
    labels_of = dict(pool)
    ids = sample_demos(pool, 8, "uniform", LABELS, random.Random(1))
    for label in LABELS:
        assert sum(label in labels_of[i] for i in ids) >= 8 // len(LABELS)


def test_k_larger_than_pool_and_empty_pool():
    assert sorted(sample_demos(_pool(3), 10, "random", LABELS, random.Random(0))) == ["t0", "t1", "t2"]
    assert sample_demos([], 4, "random", LABELS, random.Random(0)) == []
    with pytest.raises(ValueError, match="unknown demo sampling"):
        sample_demos(_pool(), 2, "stratified", LABELS, random.Random(0))


# ---- unary and pairwise ------------------------------------------------------------------------------
def test_unary_demos_alternate_and_are_truthful():
    demos = [(f"text {i}", labels) for i, (_, labels) in enumerate(_pool(12))]
    marked = unary_demos(demos, LABELS, random.Random(0))
    assert marked == unary_demos(demos, LABELS, random.Random(0))
    answers = [a for _, _, a in marked]
    assert set(answers) == set(UNARY_ANSWERS) and abs(answers.count("reasonable") - 6) <= 2
    for (text, gold), (t, question, answer) in zip(demos, marked):
        label = question.split("\n")[0].removeprefix("Label: ")
        assert t == text and question == unary_question(label)
        assert (label in gold) == (answer == "reasonable")


def test_pairwise_demos_name_the_gold_option():
    demos = [(f"text {i}", labels) for i, (_, labels) in enumerate(_pool(12))]
    for (text, gold), (_, question, answer) in zip(demos, pairwise_demos(demos, LABELS, random.Random(0))):
        a = question.split("\n")[0].removeprefix("a: ")
        b = question.split("\n")[1].removeprefix("b: ")
        assert question == pairwise_question(a, b) and answer in PAIRWISE_ANSWERS
        right = gold or ["none"]
        assert (a if answer == "a" else b) in right and (b if answer == "a" else a) not in right


def test_choice_prompt_prefix_plus_suffix_is_the_full_prompt():
    marked = [("x y", unary_question("joy"), "reasonable")]
    questions = [pairwise_question_parts("joy", "none"), unary_question("fear")]
    prompt = choice_prompt(SPEC, "Decide.", marked, "the query", questions, UNARY_ANSWERS)
    assert prompt.prefix == "Decide.\n\nInput: x y\nLabel: joy\nIs the label reasonable: reasonable\n\nInput: the query\n"
    assert prompt.suffixes == [("a: joy\nb:", " none\nAnswer:"), (unary_question("fear"),)]
    assert "".join(prompt.suffixes[0]) == pairwise_question("joy", "none")
    assert prompt.answer_texts == (" reasonable", " unreasonable")


def test_choice_prompt_with_chat_template_splits_the_rendered_prompt():
    from .test_scoring import tiny_tokenizer

    tok = tiny_tokenizer()
    chat = PromptSpec(**{**SPEC.__dict__, "use_chat_template": True})
    marked = [("x y", unary_question("joy"), "reasonable")]
    prompt = choice_prompt(chat, "Decide.", marked, "the query", [pairwise_question_parts("joy", "none")],
                           PAIRWISE_ANSWERS, tok)
    messages = [{"role": "system", "content": "Decide."},
                {"role": "user", "content": "Input: x y\n" + unary_question("joy")},
                {"role": "assistant", "content": "reasonable"},
                {"role": "user", "content": "Input: the query\n" + pairwise_question("joy", "none")}]
    full = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.prefix + "".join(prompt.suffixes[0]) == full
    assert prompt.suffixes[0][0] == "a: joy\nb:" and prompt.answer_texts == PAIRWISE_ANSWERS


def test_choice_documents_are_complete_answered_prompts():
    examples = [(f"text {i}", labels) for i, (_, labels) in enumerate(_pool(20))]
    docs = choice_documents(examples, LABELS, SPEC, 6, random.Random(0))
    assert docs == choice_documents(examples, LABELS, SPEC, 6, random.Random(0)) and len(docs) == 6
    for i, doc in enumerate(docs):
        assert doc.count("Input: ") == SPEC.k + 1 and doc.endswith("\n")
        last = doc.rstrip("\n").split("\n")[-1]
        if i % 2 == 0:
            assert last.startswith("Is the label reasonable: ") and last.split(": ")[1] in UNARY_ANSWERS
        else:
            assert last.startswith("Answer: ") and last.split(": ")[1] in PAIRWISE_ANSWERS


def test_chat_fallback_is_said_only_when_asked_for_and_missing():
    from types import SimpleNamespace

    from labeldist.prompts import PromptSpec, chat_fallback_note, uses_chat_template

    chat = PromptSpec.from_config({"instruction": "Classify: {labels}.", "use_chat_template": True})
    plain = PromptSpec.from_config({"instruction": "Classify: {labels}."})
    without, with_ = SimpleNamespace(chat_template=None), SimpleNamespace(chat_template="{{ messages }}")
    assert "gemma3 has none: plain-text prompts" in chat_fallback_note(chat, without, "gemma3")
    assert not uses_chat_template(chat, without) and uses_chat_template(chat, with_)
    assert chat_fallback_note(chat, with_, "m") is None and chat_fallback_note(plain, without, "m") is None
