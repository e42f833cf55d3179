"""Prompts against the model's context (labeldist.context, docs/methods.md section 2 "Context length"):
a prompt that fits is used as rendered; a query text too long is cut to its first tokens, the
instruction, label list and demos kept whole; a prompt too long without its query text is one error
naming the dataset, model and numbers. On the tiny tokenizer of test_scoring and on SmolLM2's real
tokenizer and chat template (8,192 positions), with one short SmolLM2 generation."""

from __future__ import annotations

import logging
import random

import pytest
from transformers import LlamaConfig

from labeldist.artifacts.generations import parse_generation
from labeldist.config import default_block
from labeldist.context import context_window, count_tokens, fit_query, prompt_budget
from labeldist.errors import ContextError
from labeldist.metrics import generation_counts
from labeldist.prompts import PromptSpec, render_prompt

from .test_scoring import LABELS, SPEC, WORDS, tiny_tokenizer

DEMOS = [("the day was long", ["joy"]), ("my friend left the town", ["sadness", "fear"])]


def long_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choices(WORDS, k=n_words))


def renderer(spec: PromptSpec = SPEC, tokenizer=None):
    return lambda text: render_prompt(spec, LABELS, DEMOS, text, tokenizer)


def fit(text, budget, render=None, tokenizer=None, add_special_tokens=True):
    tok = tokenizer or tiny_tokenizer()
    return fit_query(text, render or renderer(), tok, budget, add_special_tokens=add_special_tokens,
                     where="dataset 'toy', model 'tiny'")


def test_context_window_and_budget_come_from_the_model_config():
    cfg = LlamaConfig(max_position_embeddings=64)
    assert context_window(cfg) == 64 and prompt_budget(cfg, 24) == 40
    assert context_window(object()) is None and prompt_budget(object(), 24) is None


def test_a_prompt_that_fits_is_used_as_rendered():
    tok, render = tiny_tokenizer(), renderer()
    text = "the day was long and I felt so happy"
    n = count_tokens(tok, render(text), True)
    for budget in (None, 10_000, n):  # no limit, plenty, exactly enough
        got = fit(text, budget)
        assert (got.text, got.prompt, got.n_tokens, got.truncated) == (text, render(text), n, False)
    assert fit(text, n - 1).truncated  # one token less and it no longer fits


def test_a_long_query_text_is_cut_to_its_first_tokens_and_nothing_else():
    tok, render = tiny_tokenizer(), renderer()
    text = long_text(3000)
    fixed = count_tokens(tok, render(""), True)
    budget = fixed + 100
    got = fit(text, budget)
    assert got.truncated and text.startswith(got.text) and len(got.text) < len(text)
    assert got.prompt == render(got.text) and got.n_tokens == count_tokens(tok, got.prompt, True)
    assert budget - 3 <= got.n_tokens <= budget  # as much of the text as fits
    # the instruction, the label list and both demos are whole, in front of the shortened query
    head = render("")[: render("").rindex(SPEC.input_prefix)]
    assert got.prompt.startswith(head) and all(d in head for d, _ in DEMOS) and ", ".join(LABELS) in head


def test_a_prompt_too_long_without_its_query_text_is_one_error_with_the_numbers():
    spec = PromptSpec(**{**SPEC.__dict__, "instruction": long_text(400, seed=1) + " {labels}"})
    render = renderer(spec)
    fixed = count_tokens(tiny_tokenizer(), render(""), True)
    with pytest.raises(ContextError) as err:
        fit("a short text", 200, render=render)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dataset 'toy', model 'tiny': the prompt without its query text")
    assert f"has {fixed:,} tokens, over the 200 the model can attend to" in message


def test_the_truncated_flag_is_read_back_and_counted():
    raw = {"id": "a", "labels": [], "steps": [], "truncated": True}
    records = [parse_generation(raw, LABELS), parse_generation({**raw, "id": "b", "truncated": False}, LABELS),
               parse_generation({k: v for k, v in raw.items() if k != "truncated"} | {"id": "c"}, LABELS)]
    assert [r.truncated for r in records] == [True, False, False]  # absent: not truncated
    assert generation_counts(records)["truncated"] == 1
    with pytest.raises(Exception, match="field 'truncated': expected true or false"):
        parse_generation({**raw, "truncated": "yes"}, LABELS)


# ---- SmolLM2-135M-Instruct: its tokenizer, chat template and 8,192-position window -------------------
@pytest.fixture(scope="module")
def smollm2_tokenizer_and_config(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir), AutoConfig.from_pretrained(smollm2_dir)


def test_a_20000_token_text_fits_smollm2_after_truncation(smollm2_tokenizer_and_config):
    tok, cfg = smollm2_tokenizer_and_config
    spec = PromptSpec(**{**SPEC.__dict__, "use_chat_template": True})
    render = renderer(spec, tok)
    text = " ".join(f"{w}{i % 7}" for i, w in enumerate(long_text(12_000, seed=2).split()))
    assert count_tokens(tok, text, False) >= 20_000
    budget = prompt_budget(cfg, 24)
    assert context_window(cfg) == 8192 and budget == 8192 - 24
    got = fit(text, budget, render=render, tokenizer=tok, add_special_tokens=False)
    assert got.truncated and text.startswith(got.text)
    assert budget - 3 <= got.n_tokens <= budget
    assert got.prompt == render(got.text) and got.prompt.endswith("<|im_start|>assistant\n")


def test_smollm2_generates_on_a_truncated_prompt_and_marks_the_record(smollm2, monkeypatch, caplog):
    """Through the generation stage's own path (run_prompting), with SmolLM2's window lowered to 160
    positions so that its prompts stay cheap: the long text is cut, generated on, marked and counted."""
    from labeldist.generation import TaskData, run_prompting

    model, tok = smollm2
    monkeypatch.setattr(model.config, "max_position_embeddings", 160)
    data = TaskData(label_set=list(LABELS), dataset="toy", pool={f"d{i}": d for i, d in enumerate(DEMOS)},
                    examples=[{"id": "short", "text": "the day was long", "labels": []},
                              {"id": "long", "text": long_text(3000, seed=3), "labels": []}])
    spec = PromptSpec(**{**SPEC.__dict__, "k": 2, "use_chat_template": True})
    gen_cfg = {**default_block("generation"), "max_new_tokens": 8, "batch_size": 2, "marginal": False,
               "hidden_layers": [0]}
    with caplog.at_level(logging.INFO, logger="labeldist"):
        out = run_prompting(model, tok, data, "baseline", spec, gen_cfg, seed=0, progress=False)
    assert [r["truncated"] for r in out.records] == [False, True]
    assert all(r["n_tokens"] >= 1 for r in out.records)
    records = [parse_generation(r, LABELS) for r in out.records]
    assert generation_counts(records)["truncated"] == 1
    assert "dataset 'toy'" in caplog.text and "1 of 2 prompts were over the 152 tokens" in caplog.text
