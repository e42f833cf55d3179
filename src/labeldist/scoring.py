"""KV-cache-shared scoring of many short continuations after one batch of prefixes.

The expensive part of every measurement here is the prompt (instruction + demos + query). It is run
once per example; what differs between the things we score (the L+1 labels at a label slot, the label
suffixes of unary prompts, the label pairs of pairwise prompts, the paths of the marginal search) is a
few tokens appended to it. `run_continuations` runs those few tokens, batched and chunked, on top of the
prefix's key/value cache; `extend_prefix` turns "cache row + a few tokens" into a new cache row (storing
only the new tokens' keys and values), so text shared by many continuations (a pair's first label, a
unary question before its two answers, a path of the marginal search) also runs once.

How one cache serves many prefixes: the cache of a left-padded batch (e.g. the one `generate` returns,
covering prompt + generated tokens) is indexed by batch row, and a continuation may attend only to the
first `visible` cache positions of its row (plus the row's own padding mask). So one `generate` cache
gives the prefix "prompt + the first t generated tokens" for every t at once, with no re-encoding.
Position ids continue from the number of real tokens visible, exactly as a fresh forward numbers them.
(Hand-written because transformers has no "score many continuations of a cached prefix" helper; the
pieces are the library's: `DynamicCache`, and the model's own masking from a 2-D padding mask.)

Limitation: models with sliding-window attention layers are not supported by the masked-cache view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers import DynamicCache

# Chunk bounds: rows per forward call, and cache positions copied per chunk (rows x visible length).
DEFAULT_MAX_ROWS = 64
DEFAULT_MAX_KV_TOKENS = 1 << 16
# Nodes of one packed continuation tree (`choice_probabilities`): a prompt's suffixes beyond this start
# another tree on the same cache row, so attention and logits per tree stay bounded whatever their number.
DEFAULT_MAX_TREE_TOKENS = 512


@dataclass
class PrefixCache:
    """Per-layer key/value tensors ([B, heads, S, head_dim]) of a batch of prefixes and its mask [B, S].

    A root cache holds whole (left-padded) prefixes. An extension (`parent` set) holds only the tokens
    appended to rows of its parent: its row r continues parent row `parent_rows[r]` seen up to
    `parent_visible[r]` of the parent's own positions; its mask marks its real (not right-padded) tokens.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    attention_mask: torch.Tensor
    parent: "PrefixCache | None" = None
    parent_rows: torch.Tensor | None = None
    parent_visible: torch.Tensor | None = None

    @classmethod
    def from_cache(cls, cache: Any, attention_mask: torch.Tensor) -> "PrefixCache":
        """Wrap a transformers Cache (e.g. `generate(...).past_key_values`); `attention_mask` covers the
        cached positions (it is cut, or padded with ones, to the cache length)."""
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
        """Number of this cache's own positions (padding included)."""
        return int(self.attention_mask.shape[1])

    @property
    def total_length(self) -> int:
        """Positions a row spans through the chain of parents (an upper bound)."""
        return self.length + (self.parent.total_length if self.parent is not None else 0)


@dataclass(frozen=True)
class Continuation:
    """One thing to run after a cached prefix row.

    The model sees the row's first `visible` own cache positions (and, for an extension, its parents),
    then the tokens `feed + targets[:-1]`. `targets` are scored: their summed log-probability is
    returned. The first target is predicted by the last fed token or, when `feed` is empty, by row
    `start` of the `start_logprobs` table passed to `run_continuations` (the next-token log-probs at the
    end of the visible prefix, e.g. from `generate` or `extend_prefix`). `read`/`hidden`: return the
    logits of `read_ids` / the hidden states at the last fed token (only with no targets).
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
            past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1,
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


def _flatten(cache: PrefixCache, rows: torch.Tensor, visible: torch.Tensor):
    """Keys, values and mask of `rows` through the chain of parents, own part cut to `visible`."""
    device = cache.attention_mask.device
    vmax = int(visible.max()) if len(visible) else 0
    own_mask = cache.attention_mask[rows, :vmax] * (
        torch.arange(vmax, device=device)[None, :] < visible[:, None]
    ).long()
    keys = [k[:, :, :vmax].index_select(0, rows) for k in cache.keys]
    values = [v[:, :, :vmax].index_select(0, rows) for v in cache.values]
    if cache.parent is None:
        return keys, values, own_mask
    pk, pv, pmask = _flatten(cache.parent, cache.parent_rows[rows], cache.parent_visible[rows])
    return ([torch.cat([a, b], dim=2) for a, b in zip(pk, keys)],
            [torch.cat([a, b], dim=2) for a, b in zip(pv, values)],
            torch.cat([pmask, own_mask], dim=1))


def _chunks(order: list[int], items: Sequence[Continuation], span: int, max_rows: int,
            max_kv_tokens: int) -> Iterator[list[int]]:
    """Split `order` into chunks of at most `max_rows` items and `max_kv_tokens` copied cache positions
    (rows x `span`, the chain length a row spans)."""
    chunk: list[int] = []
    per_chunk = max(1, min(max_rows, max_kv_tokens // max(span, 1)))
    for idx in order:
        chunk.append(idx)
        if len(chunk) >= per_chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _forward_chunks(model: Any, prefix: PrefixCache, items: Sequence[Continuation], order: list[int],
                    max_rows: int, max_kv_tokens: int, pad_id: int, hidden: bool):
    """Run the items of `order` chunk by chunk; yield (chunk item indices, inputs, model output, flat
    length of the cache part)."""
    device = prefix.attention_mask.device
    for chunk in _chunks(order, items, prefix.total_length, max_rows, max_kv_tokens):
        sub = [items[i] for i in chunk]
        rows = torch.tensor([c.row for c in sub], device=device)
        visible = torch.tensor([c.visible for c in sub], device=device)
        keys, values, past_mask = _flatten(prefix, rows, visible)
        inputs = [c.inputs() for c in sub]
        t_max = max(len(x) for x in inputs)
        ids = torch.full((len(sub), t_max), pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(sub), t_max), dtype=torch.long)
        for j, x in enumerate(inputs):
            ids[j, : len(x)] = torch.tensor(x, dtype=torch.long)
            cont_mask[j, : len(x)] = 1
        ids, cont_mask = ids.to(device), cont_mask.to(device)
        mask = torch.cat([past_mask, cont_mask], dim=1)
        position_ids = past_mask.sum(1, keepdim=True) + torch.arange(t_max, device=device)[None, :]
        cache = DynamicCache(ddp_cache_data=list(zip(keys, values)))
        with torch.inference_mode():
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, output_hidden_states=hidden and any(c.hidden for c in sub),
            )
        yield chunk, inputs, out, past_mask.shape[1], cont_mask


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
    logprob = torch.zeros(n, dtype=torch.float32)
    read = torch.full((n, len(read_ids)), float("nan")) if read_ids is not None else None
    hidden: dict[int, torch.Tensor] = {}
    device = prefix.attention_mask.device
    read_index = torch.tensor(list(read_ids), device=device) if read_ids is not None else None

    needs_forward: list[int] = []
    for i, item in enumerate(items):
        if (item.read or item.hidden) and item.targets:
            raise ValueError("read/hidden continuations must not have targets")
        if item.read and read_ids is None:
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
    for chunk, inputs, out, _, _ in _forward_chunks(model, prefix, items, order, max_rows, max_kv_tokens,
                                                    pad_id, hidden=True):
        logits = out.logits.float()
        sub = [items[i] for i in chunk]
        logp = torch.log_softmax(logits, dim=-1) if any(c.targets for c in sub) else None
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
    return ContinuationResults(logprob=logprob, read=read, hidden=hidden)


def extend_prefix(
    model: Any,
    prefix: PrefixCache,
    items: Sequence[Continuation],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_kv_tokens: int = DEFAULT_MAX_KV_TOKENS,
    pad_id: int = 0,
) -> tuple[PrefixCache, torch.Tensor]:
    """Append each item's `feed` to its prefix row; return the extension cache (row i = item i, holding
    only the fed tokens' keys/values) and the float32 next-token log-probs after each feed [n, V].

    Items must feed at least one token and have no targets.
    """
    if any(not c.feed or c.targets for c in items):
        raise ValueError("extensions feed at least one token and score nothing")
    device = prefix.attention_mask.device
    n = len(items)
    t_max = max((len(c.feed) for c in items), default=0)
    n_layers = len(prefix.keys)
    new_k: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n_layers)]
    new_v: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n_layers)]
    mask = torch.zeros((n, t_max), dtype=torch.long, device=device)
    last = torch.empty((n, 0))
    order = sorted(range(n), key=lambda i: (items[i].visible, len(items[i].feed)))
    for chunk, inputs, out, flat_len, cont_mask in _forward_chunks(
            model, prefix, items, order, max_rows, max_kv_tokens, pad_id, hidden=False):
        logits = out.logits.float()
        if last.shape[1] == 0:
            last = torch.empty((n, logits.shape[-1]), dtype=torch.float32, device=device)
        lengths = torch.tensor([len(x) for x in inputs], device=device)
        last[chunk] = torch.log_softmax(logits[torch.arange(len(chunk), device=device), lengths - 1], dim=-1)
        t = cont_mask.shape[1]
        mask[chunk, :t] = cont_mask
        for layer_idx, layer in enumerate(out.past_key_values.layers):
            k = layer.keys[:, :, flat_len:].clone()  # own copy: the chunk's flattened cache can go
            v = layer.values[:, :, flat_len:].clone()
            if t < t_max:
                k = torch.nn.functional.pad(k, (0, 0, 0, t_max - t))
                v = torch.nn.functional.pad(v, (0, 0, 0, t_max - t))
            for j, idx in enumerate(chunk):
                new_k[layer_idx][idx] = k[j]
                new_v[layer_idx][idx] = v[j]
    ext = PrefixCache(
        keys=[torch.stack(ks) for ks in new_k], values=[torch.stack(vs) for vs in new_v],
        attention_mask=mask, parent=prefix,
        parent_rows=torch.tensor([c.row for c in items], device=device),
        parent_visible=torch.tensor([c.visible for c in items], device=device),
    )
    return ext, last


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


def _context_tail(text: str) -> str:
    """A short end of `text` that fixes how the next text tokenizes (from its last line break)."""
    cut = text.rfind("\n", 0, len(text) - 1)
    return text[cut:] if 0 <= cut and len(text) - cut <= 64 else text[-64:]


@dataclass
class TokenTree:
    """Continuations of one cached prefix row packed into one sequence: node k holds token `tokens[k]`
    and follows node `parents[k]` (-1: the prefix's first `visible` positions). A node sees the prefix
    and its own ancestors only, so text shared by several continuations appears once in the tree."""

    row: int
    visible: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)

    def add_chain(self, ids: Sequence[int], parent: int = -1) -> list[int]:
        """Append `ids` as a chain below node `parent`; return the new nodes' indices."""
        nodes = []
        for tok in ids:
            self.tokens.append(int(tok))
            self.parents.append(parent)
            parent = len(self.tokens) - 1
            nodes.append(parent)
        return nodes


def _tree_masks(trees: Sequence[TokenTree], q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ancestor-or-self mask [B, q, q] bool, depth [B, q]) of packed trees padded to q nodes; padding
    nodes see only themselves."""
    anc = torch.zeros((len(trees), q, q), dtype=torch.bool)
    depth = torch.zeros((len(trees), q), dtype=torch.long)
    for b, tree in enumerate(trees):
        for k, parent in enumerate(tree.parents):
            if parent >= 0:
                anc[b, k] = anc[b, parent]
                depth[b, k] = depth[b, parent] + 1
            anc[b, k, k] = True
        for k in range(len(tree.parents), q):
            anc[b, k, k] = True
    return anc, depth


def score_trees(
    model: Any,
    prefix: PrefixCache,
    trees: Sequence[TokenTree],
    queries: Sequence[Sequence[tuple[int, int]]],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tokens: int = 4096,
    pad_id: int = 0,
) -> list[torch.Tensor]:
    """For each tree b and each query (node k, token t) in queries[b]: log P(t | prefix row, path to k),
    full-vocabulary, float32. One forward call per chunk of trees (at most `max_rows` trees and
    `max_tokens` packed nodes); the tree's tokens attend through a 4-D mask (prefix padding and
    visibility, ancestors), so each prefix row's cache is used once per tree, not once per continuation.

    Needs an attention implementation that takes a custom 4-D mask (sdpa, eager).
    """
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"packed scoring needs sdpa or eager attention, not {impl!r}")
    device = prefix.attention_mask.device
    dtype = next(model.parameters()).dtype
    out_lp: list[torch.Tensor] = [torch.zeros(len(qs)) for qs in queries]
    order = sorted(range(len(trees)), key=lambda b: len(trees[b].tokens))
    chunks: list[list[int]] = []
    for b in order:
        if not trees[b].tokens:
            continue
        q = len(trees[b].tokens)
        if chunks and len(chunks[-1]) < max_rows and q * (len(chunks[-1]) + 1) <= max_tokens:
            chunks[-1].append(b)
        else:
            chunks.append([b])
    for chunk in chunks:
        sub = [trees[b] for b in chunk]
        q = max(len(t.tokens) for t in sub)
        rows = torch.tensor([t.row for t in sub], device=device)
        visible = torch.tensor([t.visible for t in sub], device=device)
        keys, values, past_mask = _flatten(prefix, rows, visible)
        anc, depth = _tree_masks(sub, q)
        ids = torch.full((len(sub), q), pad_id, dtype=torch.long)
        for j, t in enumerate(sub):
            ids[j, : len(t.tokens)] = torch.tensor(t.tokens, dtype=torch.long)
        past = past_mask.bool()[:, None, :].expand(len(sub), q, past_mask.shape[1])
        mask = torch.cat([past, anc.to(device)], dim=2)[:, None]
        if impl == "eager":
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        position_ids = past_mask.sum(1, keepdim=True) + depth.to(device)
        cache = DynamicCache(ddp_cache_data=list(zip(keys, values)))
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask, position_ids=position_ids,
                           past_key_values=cache, use_cache=True).logits
        for j, b in enumerate(chunk):
            if not queries[b]:
                continue
            nodes = torch.tensor([k for k, _ in queries[b]], device=device)
            toks = torch.tensor([t for _, t in queries[b]], device=device)
            lp = torch.log_softmax(logits[j, nodes].float(), dim=-1)
            out_lp[b] = lp[torch.arange(len(toks), device=device), toks].cpu()
        del cache, logits
    return out_lp


def choice_probabilities(
    model: Any,
    tokenizer: Any,
    prefixes: Sequence[str],
    suffixes: Sequence[Sequence[str | tuple[str, ...]]],
    answers: Sequence[str],
    *,
    add_special_tokens: bool = True,
    batch_size: int = 8,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tree_tokens: int = DEFAULT_MAX_TREE_TOKENS,
    progress: Any = None,
) -> list[list[float]]:
    """For each prefix i and each of its suffixes j: P(answers[0]) against the other answers, after
    prefix_i + suffix_ij. Returns one list of probabilities per prefix.

    With one-token answers this is the softmax over the answers' logits; with longer answers (small
    tokenizers spell ` b` as ` ` + `b`) over their whole-sequence log-probabilities.

    Sharing: the prefix (instruction + demos + query) is encoded once per example; then all its
    suffixes run in packed rows (`score_trees`), a new tree on the same cache row whenever one would
    pass `max_tree_tokens` nodes: a tree's cost grows with the square of its size, and memory stays
    bounded however many suffixes (labels, pairs) there are. A suffix given as a tuple of parts (e.g. a
    pair's `... a: joy, b:` then ` fear\nAnswer:`) shares its leading parts with the other suffixes of
    its tree that have them. Suffix parts take the ids they get after the prefix's last line
    (`tokens_in_context`), which equal the whole prompt's tokenization at clean boundaries.
    """
    if len(prefixes) != len(suffixes):
        raise ValueError("one list of suffixes per prefix is needed")
    result: list[list[float]] = [[] for _ in prefixes]
    parts_of = [[(s,) if isinstance(s, str) else tuple(s) for s in ss] for ss in suffixes]
    first = next(((p, "".join(s[0])) for p, s in zip(prefixes, parts_of) if s), None)
    if first is None:
        return result
    answer_ids = [tokens_in_context(tokenizer, _context_tail(first[0]) + first[1], a) for a in answers]
    if any(not ids for ids in answer_ids):
        raise ValueError(f"an answer of {list(answers)} has no tokens after the prompt")
    one_token = all(len(ids) == 1 for ids in answer_ids) and len({ids[0] for ids in answer_ids}) == len(answers)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    part_ids: dict[tuple[str, str], tuple[int, ...]] = {}

    def ids_after(context: str, part: str) -> tuple[int, ...]:
        key = (_context_tail(context), part)
        if key not in part_ids:
            part_ids[key] = tokens_in_context(tokenizer, key[0], part)
        return part_ids[key]

    for lo in range(0, len(prefixes), batch_size):
        batch = list(range(lo, min(lo + batch_size, len(prefixes))))
        enc = tokenizer([prefixes[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=add_special_tokens)
        cache, _ = encode_prefixes(model, enc["input_ids"].to(device), enc["attention_mask"].to(device))
        trees: list[TokenTree] = []
        queries: list[list[tuple[int, int]]] = []
        spans = []
        for r, i in enumerate(batch):
            tree = None
            for parts in parts_of[i]:
                need = sum(len(ids_after(prefixes[i] + "".join(parts[:level]), parts[level]))
                           for level in range(len(parts))) + sum(len(ids) for ids in answer_ids)
                if tree is None or (tree.tokens and len(tree.tokens) + need > max_tree_tokens):
                    tree = TokenTree(row=r, visible=cache.length)
                    ends: dict[tuple[str, ...], int] = {(): -1}  # the tree's suffix trie: parts -> last node
                    qs: list[tuple[int, int]] = []
                    trees.append(tree)
                    queries.append(qs)
                for level in range(len(parts)):
                    key = parts[: level + 1]
                    if key not in ends:
                        ids = ids_after(prefixes[i] + "".join(parts[:level]), parts[level])
                        nodes = tree.add_chain(ids, ends[parts[:level]])
                        ends[key] = nodes[-1] if nodes else ends[parts[:level]]
                end = ends[parts]
                if end < 0:
                    raise ValueError("a suffix has no tokens")
                lo_q = len(qs)
                for ids in answer_ids:
                    nodes = [end] + (tree.add_chain(ids[:-1], end) if not one_token else [])
                    qs += list(zip(nodes, ids))
                spans.append((i, len(trees) - 1, lo_q, [len(ids) if not one_token else 1 for ids in answer_ids]))
        scores = score_trees(model, cache, trees, queries, max_rows=max_rows,
                             max_tokens=max(4096, max_tree_tokens), pad_id=pad_id)
        for i, t, lo_q, lengths in spans:
            lp, pos = [], lo_q
            for n in lengths:
                lp.append(float(scores[t][pos : pos + n].sum()))
                pos += n
            result[i].append(float(torch.softmax(torch.tensor(lp), dim=0)[0]))
        if progress is not None:
            progress.update(len(batch))
    return result
