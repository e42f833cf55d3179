"""KV-cache-shared scoring of many short continuations after one batch of prefixes.

The expensive part of every measurement here is the prompt (instruction + demos + query). It is run
once per example; what differs between the things we score (the L+1 labels at a label slot, the label
suffixes of unary prompts, the label pairs of pairwise prompts, the paths of the marginal search) is a
few tokens appended to it. `run_continuations` runs those few tokens, batched and chunked, on top of the
prefix's key/value cache.

How one cache serves many prefixes: the cache of a left-padded batch (e.g. the one `generate` returns,
covering prompt + generated tokens) is indexed by batch row, and a continuation may attend only to the
first `visible` cache positions of its row (plus the row's own padding mask). So one `generate` cache
gives the prefix "prompt + the first t generated tokens" for every t at once, with no re-encoding.
Positions ids continue from the number of real tokens visible, exactly as a fresh forward would number
them. (Hand-written because transformers has no "score many continuations of a cached prefix" helper;
the pieces it uses are the library's: `DynamicCache`, the model's own masking from a 2-D padding mask.)

Limitation: models with sliding-window attention layers are not supported by the masked-cache view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import DynamicCache

# Chunk bounds: rows per forward call, and cache positions copied per chunk (rows x visible length).
DEFAULT_MAX_ROWS = 64
DEFAULT_MAX_KV_TOKENS = 1 << 16


@dataclass
class PrefixCache:
    """Per-layer key/value tensors ([B, heads, S, head_dim]) of a left-padded batch, and its mask [B, S]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    attention_mask: torch.Tensor

    @classmethod
    def from_cache(cls, cache: Any, attention_mask: torch.Tensor) -> "PrefixCache":
        """Wrap a transformers Cache (e.g. `generate(...).past_key_values`); `attention_mask` covers the
        cached positions (it is cut or padded with ones to the cache length)."""
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        length = keys[0].shape[-2]
        mask = attention_mask.to(keys[0].device).long()
        if mask.shape[1] < length:
            pad = torch.ones(mask.shape[0], length - mask.shape[1], dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask, pad], dim=1)
        return cls(keys=keys, values=values, attention_mask=mask[:, :length])

    @property
    def length(self) -> int:
        """Number of cached positions (padding included)."""
        return int(self.attention_mask.shape[1])


@dataclass(frozen=True)
class Continuation:
    """One thing to run after a cached prefix row.

    The model sees cache positions [0, visible) of batch row `row`, then the tokens `feed + targets[:-1]`.
    `targets` are scored: their summed log-probability is returned. The first target is predicted by the
    last fed token, or, when `feed` is empty, by row `start` of the `start_logprobs` table passed to
    `run_continuations` (the next-token log-probs at the end of the visible prefix, e.g. from `generate`).
    `read`/`hidden`: return the logits of `read_ids` / the hidden states at the last input token (only
    with no targets, so that the last input token is the last fed token).
    """

    row: int
    visible: int
    feed: tuple[int, ...] = ()
    targets: tuple[int, ...] = ()
    start: int = -1
    read: bool = False
    hidden: bool = False

    def inputs(self) -> tuple[int, ...]:
        """The tokens actually run through the model."""
        return self.feed + self.targets[:-1]


@dataclass
class ContinuationResults:
    """Outputs of `run_continuations`, aligned with its items.

    logprob: [n] summed target log-probs (0 where there are no targets); read: [n, len(read_ids)] logits
    (nan where not asked); hidden: item index -> [n_layers_kept, hidden_size] float32.
    """

    logprob: torch.Tensor
    read: torch.Tensor | None
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


def encode_prefixes(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[PrefixCache, torch.Tensor]:
    """Run a left-padded batch once; return its cache and the float32 logits at the last position [B, V]."""
    with torch.inference_mode():
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=DynamicCache(), use_cache=True,
        )
    return PrefixCache.from_cache(out.past_key_values, attention_mask), out.logits[:, -1].float()


def _select_layers(n_states: int, layers: str | Sequence[int] | None) -> list[int]:
    """Indices into `hidden_states` (0 = embeddings) kept for `layers` = 'all' or a list."""
    if layers is None or layers == "all":
        return list(range(n_states))
    bad = [i for i in layers if not 0 <= int(i) < n_states]
    if bad:
        raise ValueError(f"hidden layer indices {bad} out of range: the model has {n_states} hidden states")
    return [int(i) for i in layers]


def _chunks(order: list[int], items: Sequence[Continuation], max_rows: int, max_kv_tokens: int):
    """Split `order` (item indices sorted by visible length) into chunks bounded by rows and cache copy."""
    chunk: list[int] = []
    vmax = 0
    for idx in order:
        v = max(vmax, items[idx].visible)
        if chunk and (len(chunk) >= max_rows or v * (len(chunk) + 1) > max_kv_tokens):
            yield chunk
            chunk, v = [], items[idx].visible
        chunk.append(idx)
        vmax = v
    if chunk:
        yield chunk


def run_continuations(
    model: Any,
    prefix: PrefixCache,
    items: Sequence[Continuation],
    *,
    start_logprobs: torch.Tensor | None = None,
    read_ids: Sequence[int] | None = None,
    hidden_layers: str | Sequence[int] | None = "all",
    max_rows: int = DEFAULT_MAX_ROWS,
    max_kv_tokens: int = DEFAULT_MAX_KV_TOKENS,
    pad_id: int = 0,
) -> ContinuationResults:
    """Run every continuation on the shared prefix cache, chunked; return their scores (see Continuation).

    Items whose score needs no forward pass (a single target predicted from `start_logprobs`) cost nothing.
    The rest run in chunks of at most `max_rows` rows and `max_kv_tokens` copied cache positions, each
    chunk one forward call on a `DynamicCache` holding the selected rows' cache cut to the chunk's longest
    visible prefix.
    """
    n = len(items)
    device = prefix.attention_mask.device
    logprob = torch.zeros(n, dtype=torch.float32)
    read = torch.full((n, len(read_ids)), float("nan")) if read_ids is not None else None
    hidden: dict[int, torch.Tensor] = {}
    read_index = torch.tensor(list(read_ids), device=device) if read_ids is not None else None

    needs_forward: list[int] = []
    for i, item in enumerate(items):
        if (item.read or item.hidden) and item.targets:
            raise ValueError("read/hidden continuations must not have targets")
        if (item.read and read_ids is None):
            raise ValueError("a continuation asks to read logits but no read_ids were given")
        if not item.feed and item.targets:
            if start_logprobs is None or item.start < 0:
                raise ValueError("a continuation with no fed tokens needs a start_logprobs row")
            logprob[i] = start_logprobs[item.start, item.targets[0]].float().cpu()
        if item.inputs():
            needs_forward.append(i)
        elif item.read or item.hidden:
            raise ValueError("read/hidden continuations must feed at least one token")

    order = sorted(needs_forward, key=lambda i: (items[i].visible, len(items[i].inputs())))
    for chunk in _chunks(order, items, max_rows, max_kv_tokens):
        sub = [items[i] for i in chunk]
        rows = torch.tensor([c.row for c in sub], device=device)
        visible = torch.tensor([c.visible for c in sub], device=device)
        vmax = int(visible.max())
        inputs = [c.inputs() for c in sub]
        t_max = max(len(x) for x in inputs)
        ids = torch.full((len(sub), t_max), pad_id, dtype=torch.long, device=device)
        cont_mask = torch.zeros((len(sub), t_max), dtype=torch.long, device=device)
        for j, x in enumerate(inputs):
            ids[j, : len(x)] = torch.tensor(x, dtype=torch.long)
            cont_mask[j, : len(x)] = 1
        past_mask = prefix.attention_mask[rows, :vmax] * (
            torch.arange(vmax, device=device)[None, :] < visible[:, None]
        ).long()
        mask = torch.cat([past_mask, cont_mask], dim=1)
        position_ids = past_mask.sum(1, keepdim=True) + torch.arange(t_max, device=device)[None, :]
        cache = DynamicCache(
            ddp_cache_data=[
                (k[:, :, :vmax].index_select(0, rows), v[:, :, :vmax].index_select(0, rows))
                for k, v in zip(prefix.keys, prefix.values)
            ]
        )
        want_hidden = any(c.hidden for c in sub)
        with torch.inference_mode():
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, output_hidden_states=want_hidden,
            )
        logits = out.logits.float()
        if any(c.targets for c in sub):
            logp = torch.log_softmax(logits, dim=-1)
        for j, (idx, c) in enumerate(zip(chunk, sub)):
            f = len(c.feed)
            total = 0.0
            for k, tok in enumerate(c.targets):
                if k == 0 and f == 0:
                    continue  # came from start_logprobs above
                total += float(logp[j, f - 1 + k, tok])
            if c.targets:
                logprob[idx] = logprob[idx] + total if f == 0 else total
            last = len(inputs[j]) - 1
            if c.read:
                read[idx] = logits[j, last, read_index].cpu()
            if c.hidden:
                keep = _select_layers(len(out.hidden_states), hidden_layers)
                hidden[idx] = torch.stack([out.hidden_states[layer][j, last] for layer in keep]).float().cpu()
        del cache, out
    return ContinuationResults(logprob=logprob, read=read, hidden=hidden)


def tokens_in_context(tokenizer: Any, context: str, text: str) -> tuple[int, ...]:
    """The token ids `text` gets when it follows `context` (ids(context + text) after ids(context)).

    When the tokenizer merges across the boundary, the ids from the first differing token on are
    returned (the longest common prefix is taken as the context's share).
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + text, add_special_tokens=False)["input_ids"]
    k = 0
    while k < min(len(ctx), len(full)) and ctx[k] == full[k]:
        k += 1
    return tuple(full[k:])


def choice_probabilities(
    model: Any,
    tokenizer: Any,
    prefixes: Sequence[str],
    suffixes: Sequence[Sequence[str]],
    answers: Sequence[str],
    *,
    add_special_tokens: bool = True,
    batch_size: int = 8,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: Any = None,
) -> list[list[float]]:
    """For each prefix i and each of its suffixes j: P(answers[0]) from the softmax over the answers'
    first tokens, read after prefix_i + suffix_ij. Returns one list of probabilities per prefix.

    The prefix (instruction + demos + query) is encoded once per example; only the suffixes run,
    batched on its cache (the unary and pairwise prompts). Suffixes are tokenized on their own and
    appended to the prefix's ids. The answers' ids are those following the first prefix + suffix. When
    an answer is more than one token (small tokenizers spell ` b` as ` ` + `b`), the answers' whole
    token sequences are scored and compared instead (P(answer | prompt), softmax over the answers).
    """
    if len(prefixes) != len(suffixes):
        raise ValueError("one list of suffixes per prefix is needed")
    result: list[list[float]] = [[] for _ in prefixes]
    first = next(((p, s[0]) for p, s in zip(prefixes, suffixes) if s), None)
    if first is None:
        return result
    answer_ids = [tokens_in_context(tokenizer, first[0] + first[1], a) for a in answers]
    if any(not ids for ids in answer_ids):
        raise ValueError(f"an answer of {list(answers)} has no tokens after the prompt")
    firsts = [ids[0] for ids in answer_ids]
    by_first = all(len(ids) == 1 for ids in answer_ids) and len(set(firsts)) == len(firsts)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    suffix_cache: dict[str, tuple[int, ...]] = {}
    for lo in range(0, len(prefixes), batch_size):
        batch = list(range(lo, min(lo + batch_size, len(prefixes))))
        enc = tokenizer([prefixes[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=add_special_tokens)
        prefix, _ = encode_prefixes(model, enc["input_ids"].to(device), enc["attention_mask"].to(device))
        items: list[Continuation] = []
        owners: list[int] = []
        for row, i in enumerate(batch):
            for s in suffixes[i]:
                if s not in suffix_cache:
                    suffix_cache[s] = tuple(tokenizer(s, add_special_tokens=False)["input_ids"])
                if by_first:
                    items.append(Continuation(row=row, visible=prefix.length, feed=suffix_cache[s], read=True))
                else:
                    items += [Continuation(row=row, visible=prefix.length, feed=suffix_cache[s], targets=ids)
                              for ids in answer_ids]
                owners.append(i)
        res = run_continuations(model, prefix, items, read_ids=firsts if by_first else None,
                                hidden_layers=None, max_rows=max_rows, pad_id=pad_id)
        scores = res.read if by_first else res.logprob.view(-1, len(answers))
        probs = torch.softmax(scores, dim=-1)[:, 0]
        for i, p in zip(owners, probs.tolist()):
            result[i].append(float(p))
        if progress is not None:
            progress.update(len(batch))
    return result
