"""Prompts that fit the model's context (docs/methods.md section 2, "Context length").

Before generation every prompt's token count is compared with what the model can attend to: its
configured maximum (`max_position_embeddings` of its text config) minus config
`generation.max_new_tokens` (`prompt_budget`). A prompt over it keeps its instruction, label list and
demos whole, and its query text is shortened to the longest run of the text's first tokens with which
the whole prompt fits (`fit_query`); the generation record says so (`truncated`) and the run counts
such examples (job log, metrics files, the report's classification table). A prompt whose fixed part
alone (everything but the query text) does not fit is a ContextError naming the dataset, the model and
the token counts. A prompt that fits is used exactly as rendered: nothing changes for data that fits.

**Decision:** the query text is cut, never the instruction, label list or demos: the task and the label
set must reach the model whole, and a shorter demo set would be another prompt than the run's seed
drew. The text's beginning is kept (its first tokens, cut at a token boundary of the text alone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import ContextError

log = logging.getLogger(__name__)


def context_window(config: Any) -> int | None:
    """Return the number of positions a model can attend to: `max_position_embeddings` of its text
    config (`config` is a transformers PretrainedConfig); None when the config names none."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text_config, "max_position_embeddings", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def prompt_budget(config: Any, max_new_tokens: int) -> int | None:
    """Return the most prompt tokens a generation may have: the context window minus `max_new_tokens`
    (None when the config names no window: prompts are not checked)."""
    window = context_window(config)
    return None if window is None else window - int(max_new_tokens)


def count_tokens(tokenizer: Any, text: str, add_special_tokens: bool) -> int:
    """Return the number of token ids `tokenizer` gives `text` (with its special tokens when asked,
    as the prompt is encoded for generation)."""
    return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


@dataclass(frozen=True)
class FittedQuery:
    """A query text as it goes into the prompt: `text` (the original or its first tokens), the rendered
    `prompt`, its token count `n_tokens`, and whether the text was shortened (`truncated`)."""

    text: str
    prompt: str
    n_tokens: int
    truncated: bool


def _token_ends(tokenizer: Any, text: str) -> list[int]:
    """Character offsets at which the first k tokens of `text` (tokenized alone) end, k = 1..n; every
    character offset where the tokenizer gives no offsets (a slow tokenizer)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ends = [int(end) for _, end in enc["offset_mapping"]]
    except (NotImplementedError, KeyError, TypeError):
        return list(range(1, len(text) + 1))
    out: list[int] = []
    for end in ends:  # non-decreasing, distinct, within the text
        end = min(max(end, out[-1] if out else 0), len(text))
        if end and (not out or end > out[-1]):
            out.append(end)
    if not out or out[-1] != len(text):
        out.append(len(text))
    return out


def fit_query(text: str, render: Callable[[str], str], tokenizer: Any, budget: int | None, *,
              add_special_tokens: bool, where: str, budget_note: str = "") -> FittedQuery:
    """Return the query `text` as it fits the prompt `render(text)` into `budget` tokens (None: no
    limit): unchanged when the whole prompt fits, else the longest run of its first tokens with which
    it does (`truncated`). The prompt without any query text over `budget` is a ContextError naming
    `where` (dataset and model) and the numbers (`budget_note` says where the budget comes from)."""
    prompt = render(text)
    n_tokens = count_tokens(tokenizer, prompt, add_special_tokens)
    if budget is None or n_tokens <= budget:
        return FittedQuery(text, prompt, n_tokens, False)
    fixed = count_tokens(tokenizer, render(""), add_special_tokens)
    if fixed > budget:
        raise ContextError(f"{where}: the prompt without its query text (instruction, label list and demos) "
                           f"has {fixed:,} tokens, over the {budget:,} the model can attend to{budget_note}; "
                           f"shorten the prompt's instruction, lower its k (demos), lower "
                           f"generation.max_new_tokens or use a model with a longer context")
    ends = _token_ends(tokenizer, text)
    best = FittedQuery("", render(""), fixed, True)
    lo, hi = 0, len(ends) - 1  # ends[hi] (the whole text) does not fit; find the most tokens that do
    while lo <= hi:
        mid = (lo + hi) // 2
        cut = text[: ends[mid]]
        prompt = render(cut)
        n = count_tokens(tokenizer, prompt, add_special_tokens)
        if n <= budget:
            best = FittedQuery(cut, prompt, n, True)
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def fit_queries(texts: Sequence[str], render: Callable[[str], str], tokenizer: Any, model_config: Any,
                max_new_tokens: int, *, add_special_tokens: bool, where: str) -> list[FittedQuery]:
    """Return `fit_query` of every query text for the model whose config is `model_config` (budget:
    `prompt_budget`), logging how many were shortened (a warning naming `where`) or the longest prompt."""
    window = context_window(model_config)
    budget = prompt_budget(model_config, max_new_tokens)
    note = f" ({window:,} positions, max_position_embeddings, minus generation.max_new_tokens {max_new_tokens})" \
        if window is not None else ""
    if budget is None:
        log.warning("%s: the model's config names no context length (max_position_embeddings): prompt "
                    "lengths are not checked", where)
    fitted = [fit_query(t, render, tokenizer, budget, add_special_tokens=add_special_tokens, where=where,
                        budget_note=note) for t in texts]
    cut = sum(f.truncated for f in fitted)
    longest = max((f.n_tokens for f in fitted), default=0)
    if cut:
        log.warning("%s: %d of %d prompts were over the %s tokens the model can attend to%s: their query "
                    "texts were shortened to fit (records marked truncated)", where, cut, len(fitted),
                    f"{budget:,}", note)
    else:
        log.info("%s: %d prompts of up to %d tokens (%s available)", where, len(fitted), longest,
                 "no limit" if budget is None else f"{budget:,}")
    return fitted
