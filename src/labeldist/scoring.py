"""KV-cache-shared scoring of many short continuations after one batch of prefixes.

The expensive part of every measurement here is the prompt (instruction + demos + query). It is run
once per example; what differs between the things we score (the L+1 labels at a label slot, the label
suffixes of unary prompts, the label pairs of pairwise prompts, the paths of the marginal search) is a
few tokens appended to it.

How it is shared: the continuations of one cached prefix row are packed into token trees
(`TokenTree`: a trie, so text shared by several continuations runs once) and run in one forward call
per chunk of trees against the row's cache as it is, with a 4-D attention mask saying what each node
sees: its row's first `visible` cache positions (less the row's padding) and its own ancestors. A tree
may hang chains below different `visible` points of the same row, so one `generate` cache gives the
prefix "prompt + the first t generated tokens" for every t at once, with no re-encoding. Position ids
continue from the number of real tokens visible, exactly as a fresh forward numbers them. Logits are
computed only at the nodes whose next token is scored (`logits_to_keep`), so memory per forward is
bounded by the chunk (rows x nodes), not by the vocabulary times the number of continuations. Tokens
that later calls continue from (the marginal search's paths, depth after depth) can be kept as an
`Extension` of the rows, so no token is run twice.

Models with sliding-window layers (Gemma 2/3, Mistral-style): the cache must hold every position
(a plain `DynamicCache()`, as `encode_prefixes` and `extraction.greedy_generate` use); the window is
then applied in the 4-D mask by position (a key at position p is seen from position P iff P - p <
window), for hybrid models as one mask per layer type.

(Hand-written because transformers has no "score many continuations of a cached prefix" helper; the
pieces are the library's: `DynamicCache`, the model's own forward with a custom 4-D mask.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Chunk bounds: trees (rows) per forward call, packed nodes per forward call (rows x padded tree size),
# and, for `run_continuations` (one row per item), cache positions copied per chunk (rows x visible).
DEFAULT_MAX_ROWS = 64
DEFAULT_MAX_TOKENS = 4096
DEFAULT_MAX_KV_TOKENS = 1 << 16
# Nodes of one packed continuation tree: a row's continuations beyond this start another tree on the
# same cache row, so attention and logits per tree stay bounded whatever their number.
DEFAULT_MAX_TREE_TOKENS = 512
# Scored positions x vocabulary per forward call (float32 logits: 2^27 = 512 MiB at most).
DEFAULT_MAX_LOGITS = 1 << 27


@dataclass
class PrefixCache:
    """Per-layer key/value tensors ([B, heads, S, head_dim]) of a batch of left-padded prefixes and
    their padding mask [B, S] (1 = real token)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    attention_mask: torch.Tensor

    @classmethod
    def from_cache(cls, cache: Any, attention_mask: torch.Tensor) -> "PrefixCache":
        """Wrap a transformers Cache (e.g. `generate(...).past_key_values`); `attention_mask` covers the
        cached positions (it is cut, or padded with ones, to the cache length). Every layer must hold
        every position (no sliding-window eviction: build the cache as a plain `DynamicCache()`)."""
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        length = keys[0].shape[-2]
        if any(k.shape[-2] != length for k in keys):
            raise ValueError("the cache's layers hold different numbers of positions (a sliding-window "
                             "cache?): run the prefix with past_key_values=DynamicCache()")
        mask = attention_mask.to(keys[0].device).long()
        if mask.shape[1] < length:
            pad = torch.ones(mask.shape[0], length - mask.shape[1], dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask, pad], dim=1)
        return cls(keys=keys, values=values, attention_mask=mask[:, :length])

    @property
    def length(self) -> int:
        """Number of cached positions per row (padding included)."""
        return int(self.attention_mask.shape[1])

    @property
    def rows(self) -> int:
        """Number of cached rows."""
        return int(self.attention_mask.shape[0])


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


class _BufferLayer(DynamicLayer):
    """A cache layer over preallocated key/value buffers [B, heads, past + new, head_dim] whose first
    `fill` positions hold the past: `update` writes the new tokens' keys/values after them in place, so
    the past is copied once (into the buffer), not again by concatenation."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, fill: int):
        super().__init__()
        self.keys, self.values, self.fill = keys, values, fill
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.fill + key_states.shape[-2]
        self.keys[:, :, self.fill: end] = key_states
        self.values[:, :, self.fill: end] = value_states
        self.fill = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.fill

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.fill + query_length, 0


def _buffer_cache(sources: Sequence[tuple[list[torch.Tensor], list[torch.Tensor], int]], rows: list[int],
                  extra: int) -> DynamicCache:
    """A cache whose layer i holds, for cache rows `rows`, the first `stop` positions of each source's
    (keys, values, stop) layer i ([R, heads, S, head_dim]) one after the other, then room for `extra`
    new positions (`_BufferLayer`). Rows are gathered one layer at a time."""
    in_order = rows == list(range(len(rows)))
    index = torch.tensor(rows, device=sources[0][0][0].device)
    cache = DynamicCache()
    layers = []
    for layer in range(len(sources[0][0])):
        kv = []
        for which in (0, 1):
            first = sources[0][which][layer]
            fill = sum(stop for _, _, stop in sources)
            buf = first.new_empty((len(rows), first.shape[1], fill + extra, first.shape[3]))
            at = 0
            for src in sources:
                x, stop = src[which][layer], src[2]
                buf[:, :, at: at + stop] = x[: len(rows), :, :stop] if in_order else x[index, :, :stop]
                at += stop
            kv.append(buf)
        layers.append(_BufferLayer(kv[0], kv[1], fill))
    cache.layers = layers
    return cache


def _select_layers(n_states: int, layers: str | Sequence[int] | None) -> list[int]:
    """Indices into `hidden_states` (0 = embeddings) kept for `layers` = 'all' or a list."""
    if layers is None or layers == "all":
        return list(range(n_states))
    bad = [i for i in layers if not 0 <= int(i) < n_states]
    if bad:
        raise ValueError(f"hidden layer indices {bad} out of range: the model has {n_states} hidden states")
    return [int(i) for i in layers]


def attention_windows(model: Any) -> tuple[int | None, bool]:
    """(sliding window or None, whether layers mix windowed and full attention) of a model's config.

    Read from `layer_types` where the config has it (Gemma 2/3, Qwen2, ...), else from `sliding_window`
    (with `use_sliding_window`, default on).
    """
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types:
        sliding = [t == "sliding_attention" for t in types]
        if not any(sliding) or not window:
            return None, False
        return int(window), not all(sliding)
    if window and getattr(cfg, "use_sliding_window", True):
        return int(window), False
    return None, False


# ---- token trees --------------------------------------------------------------------------------------
@dataclass
class TokenTree:
    """Continuations of one cached prefix row packed into one sequence: node k holds token `tokens[k]`
    and follows node `parents[k]`, or, at the top of a chain (-1), the row's first `roots[k]` cache
    positions or, with `attach[k]` = e >= 0, node e of an `Extension` of the row (tokens kept from an
    earlier call). A node sees what its chain hangs below and its own ancestors only, so text shared by
    several continuations appears once, and chains below different prefix lengths of the same row share
    one forward."""

    row: int
    visible: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    attach: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)

    def add_chain(self, ids: Sequence[int], parent: int = -1, visible: int | None = None,
                  attach: int = -1) -> list[int]:
        """Append `ids` as a chain below node `parent`, or (-1) below the row's first `visible` positions
        (default the tree's) or extension node `attach`; return the new nodes' indices."""
        nodes = []
        if parent >= 0:
            root, att, d = self.roots[parent], self.attach[parent], self.depth[parent] + 1
        else:
            root, att, d = (self.visible if visible is None else int(visible)), int(attach), 0
        for tok in ids:
            self.tokens.append(int(tok))
            self.parents.append(parent)
            self.roots.append(root)
            self.attach.append(att)
            self.depth.append(d)
            parent, d = len(self.tokens) - 1, d + 1
            nodes.append(parent)
        return nodes


@dataclass
class Extension:
    """Tokens appended to the rows of a prefix cache and kept between calls (e.g. the paths of the
    marginal search from one depth to the next): per layer keys/values [R, heads, E, head_dim] (row r:
    its nodes, right-padded), `valid` [R, E], `positions` [R, E] (position ids), `roots` [R, E] (how many
    of the row's cache positions they see) and `anc` [R, E, E] (ancestor-or-self among them)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    positions: torch.Tensor
    roots: torch.Tensor
    anc: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.valid.shape[1])


def _tree_layout(trees: Sequence[TokenTree], q: int) -> tuple[np.ndarray, ...]:
    """(ancestor-or-self mask [B, q, q] bool, depth, root visible, attach [B, q]) of packed trees padded
    to q nodes; padding nodes see only themselves."""
    anc = np.zeros((len(trees), q, q), dtype=bool)
    depth = np.zeros((len(trees), q), dtype=np.int64)
    roots = np.zeros((len(trees), q), dtype=np.int64)
    attach = np.full((len(trees), q), -1, dtype=np.int64)
    for b, tree in enumerate(trees):
        for k, parent in enumerate(tree.parents):
            if parent >= 0:
                anc[b, k] = anc[b, parent]
            anc[b, k, k] = True
        n = len(tree.parents)
        depth[b, :n], roots[b, :n], attach[b, :n] = tree.depth, tree.roots, tree.attach
        anc[b, np.arange(n, q), np.arange(n, q)] = True
    return anc, depth, roots, attach


def _chunk_trees(trees: Sequence[TokenTree], spans: Sequence[int], n_queries: Sequence[int], max_rows: int,
                 max_tokens: int, max_queries: int, max_kv_tokens: int | None = None,
                 order: Sequence[int] | None = None, max_padding: float | None = None) -> list[list[int]]:
    """Consecutive groups (in `order`, default as given) of non-empty trees: at most `max_rows` trees,
    `max_tokens` padded nodes, `max_queries` scored nodes, (when given) `max_kv_tokens` cache positions
    (rows x visible span) and padding nodes at most `max_padding` x the chunk's real nodes + 64."""
    chunks: list[list[int]] = []
    q_max = n_q = span = total = 0
    for b in (range(len(trees)) if order is None else order):
        tree = trees[b]
        if not tree.tokens:
            continue
        q, vis = len(tree.tokens), spans[b]
        if chunks:
            rows = len(chunks[-1]) + 1
            padded = rows * max(q_max, q)
            fits = (rows <= max_rows and padded <= max_tokens
                    and n_q + n_queries[b] <= max_queries
                    and (max_kv_tokens is None or rows * max(span, vis) <= max_kv_tokens)
                    and (max_padding is None or padded - total - q <= max_padding * (total + q) + 64))
            if fits:
                chunks[-1].append(b)
                q_max, n_q, span, total = max(q_max, q), n_q + n_queries[b], max(span, vis), total + q
                continue
        chunks.append([b])
        q_max, n_q, span, total = q, n_queries[b], vis, q
    return chunks


def _padded_cost(trees: Sequence[TokenTree], chunks: list[list[int]]) -> int:
    """Nodes run by `chunks` (padding included), plus 64 per forward call."""
    return sum(len(c) * max(len(trees[b].tokens) for b in c) + 64 for c in chunks)


@dataclass
class TreeOutputs:
    """What `run_trees` returns for each tree b: `logprob[b]` (log P(token | path to node) per query,
    float32), `read[b]` (logits of `read_ids` per read node [n, len(read_ids)]), `hidden[b]` (per hidden
    node [n_layers_kept, hidden_size] float32), and with `keep_kv`: `kv[b]` (per layer (keys, values)
    [heads, n_nodes, head_dim] of its nodes), `positions[b]` and `roots[b]` (per node)."""

    logprob: list[torch.Tensor]
    read: list[torch.Tensor]
    hidden: list[list[torch.Tensor]]
    kv: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    roots: list[list[int]] = field(default_factory=list)


def run_trees(
    model: Any,
    prefix: PrefixCache,
    trees: Sequence[TokenTree],
    queries: Sequence[Sequence[tuple[int, int]]],
    *,
    read_nodes: Sequence[Sequence[int]] | None = None,
    read_ids: Sequence[int] | None = None,
    hidden_nodes: Sequence[Sequence[int]] | None = None,
    hidden_layers: str | Sequence[int] | None = "all",
    extension: Extension | None = None,
    keep_kv: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_kv_tokens: int | None = None,
    max_logits: int = DEFAULT_MAX_LOGITS,
    pad_id: int = 0,
) -> TreeOutputs:
    """Run packed trees on the prefix cache (and `extension`, whose nodes chains may hang below), chunk
    by chunk (`_chunk_trees`), and return for each tree b and each query (node k, token t) in queries[b]:
    log P(t | prefix row, path to k), full-vocabulary, float32; the logits of `read_ids` at
    read_nodes[b]; the hidden states at hidden_nodes[b]; with `keep_kv` the trees' own keys/values.

    A chunk's cache is the prefix's rows as they are (a view when the chunk's trees are rows 0..n-1 in
    order, else the selected rows once per tree), cut to the longest visible prefix, followed by the
    rows' extension; logits are computed only at nodes that are queried or read. Needs an attention
    implementation that takes a custom 4-D mask (sdpa, eager).
    """
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"packed scoring needs sdpa or eager attention, not {impl!r}")
    n = len(trees)
    read_nodes = read_nodes or [[] for _ in trees]
    hidden_nodes = hidden_nodes or [[] for _ in trees]
    if any(read_nodes) and read_ids is None:
        raise ValueError("read nodes were given but no read_ids")
    device = prefix.attention_mask.device
    dtype = next(model.parameters()).dtype
    window, mixed = attention_windows(model)
    vocab = int(model.config.get_text_config().vocab_size)
    real = prefix.attention_mask.long()
    cum = torch.cat([torch.zeros_like(real[:, :1]), real.cumsum(1)], dim=1)  # real tokens before index v
    key_pos = cum[:, 1:] - 1
    ext = extension
    n_ext = ext.length if ext is not None else 0
    out = TreeOutputs(logprob=[torch.zeros(len(qs)) for qs in queries],
                      read=[torch.zeros((len(r), len(read_ids or ()))) for r in read_nodes],
                      hidden=[[] for _ in trees], kv=[None] * n, positions=[[] for _ in trees],
                      roots=[[] for _ in trees])
    read_index = torch.tensor(list(read_ids), device=device) if read_ids is not None else None
    kept_nodes = [sorted({k for k, _ in queries[b]} | set(read_nodes[b])) for b in range(n)]

    def eff_roots(tree: TokenTree) -> list[int]:
        if ext is None or all(a < 0 for a in tree.attach):
            return tree.roots
        ext_roots = ext.roots[tree.row].tolist()
        return [ext_roots[a] if a >= 0 else r for r, a in zip(tree.roots, tree.attach)]

    spans = [max(eff_roots(t)) if t.tokens else 0 for t in trees]
    per_chunk_queries = max(1, max_logits // max(vocab, 1))
    limits = (spans, [len(k) for k in kept_nodes], max_rows, max_tokens, per_chunk_queries, max_kv_tokens)
    chunks = _chunk_trees(trees, *limits)  # as given (rows in order: the cache is used as a view) ...
    by_size = _chunk_trees(trees, *limits, order=sorted(range(n), key=lambda b: len(trees[b].tokens)),
                           max_padding=0.15)  # ... or similar sizes together, whichever runs fewer nodes
    if _padded_cost(trees, by_size) < _padded_cost(trees, chunks):
        chunks = by_size
    for chunk in chunks:
        sub = [trees[b] for b in chunk]
        q = max(len(t.tokens) for t in sub)
        vmax = max(spans[b] for b in chunk)
        rows = [t.row for t in sub]
        index = torch.tensor(rows, device=device)

        sources = [(prefix.keys, prefix.values, vmax)] + ([(ext.keys, ext.values, n_ext)] if n_ext else [])
        anc, depth, roots, attach = (torch.from_numpy(x).to(device) for x in _tree_layout(sub, q))
        attached = attach >= 0
        att = attach.clamp(min=0)
        if n_ext:
            roots = torch.where(attached, ext.roots[index[:, None], att], roots)
        ids = torch.full((len(sub), q), pad_id, dtype=torch.long)
        for j, t in enumerate(sub):
            ids[j, : len(t.tokens)] = torch.tensor(t.tokens, dtype=torch.long)
        position_ids = cum[index[:, None], roots] + depth  # real prefix tokens before the root, then depth
        if n_ext:
            position_ids = torch.where(attached, ext.positions[index[:, None], att] + 1 + depth, position_ids)
        parts = [(torch.arange(vmax, device=device)[None, None, :] < roots[:, :, None])
                 & real[index, :vmax].bool()[:, None, :]]
        kpos = [key_pos[index, :vmax][:, None, :].expand(-1, q, -1)]
        if n_ext:
            seen = ext.anc[index[:, None], att] & attached[:, :, None] & ext.valid[index][:, None, :]
            parts.append(seen)
            kpos.append(ext.positions[index][:, None, :].expand(-1, q, -1))
        parts.append(anc)
        kpos.append(position_ids[:, None, :].expand(-1, q, -1))
        full = torch.cat(parts, dim=2)[:, None]
        mask: Any = full
        if window is not None:
            near = (torch.cat(kpos, dim=2) > position_ids[:, :, None] - window)[:, None]
            windowed = full & near
            mask = {"full_attention": full, "sliding_attention": windowed} if mixed else windowed
        if impl == "eager":
            def additive(m: torch.Tensor) -> torch.Tensor:
                return torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m, torch.finfo(dtype).min)
            mask = {k: additive(v) for k, v in mask.items()} if isinstance(mask, dict) else additive(mask)
        keep = torch.zeros((len(sub), q), dtype=torch.bool)
        for j, b in enumerate(chunk):
            keep[j, kept_nodes[b]] = True
        want_hidden = any(hidden_nodes[b] for b in chunk)
        cache = _buffer_cache(sources, rows, q)
        with torch.inference_mode():
            res = model(input_ids=ids.to(device), attention_mask=mask, position_ids=position_ids,
                        past_key_values=cache, use_cache=True, logits_to_keep=keep.to(device),
                        output_hidden_states=want_hidden)
        logits = res.logits  # [kept nodes of the chunk, V], row-major over (tree, node)
        pos = 0
        past = vmax + n_ext
        # the chunk's own keys/values, copied once per layer (not the prefix part of the buffers)
        new_kv = [(layer.keys[:, :, past: past + q].clone(), layer.values[:, :, past: past + q].clone())
                  for layer in res.past_key_values.layers] if keep_kv else []
        for j, b in enumerate(chunk):
            where = {k: pos + i for i, k in enumerate(kept_nodes[b])}
            pos += len(kept_nodes[b])
            if queries[b]:
                sel = torch.tensor([where[k] for k, _ in queries[b]], device=device)
                toks = torch.tensor([t for _, t in queries[b]], device=device)
                rows_logits = logits[sel].float()
                lp = rows_logits.gather(1, toks[:, None])[:, 0] - torch.logsumexp(rows_logits, dim=-1)
                out.logprob[b] = lp.cpu()
            if read_nodes[b]:
                sel = torch.tensor([where[k] for k in read_nodes[b]], device=device)
                out.read[b] = logits[sel][:, read_index].float().cpu()
            if hidden_nodes[b]:
                layers = _select_layers(len(res.hidden_states), hidden_layers)
                out.hidden[b] = [torch.stack([res.hidden_states[layer][j, k] for layer in layers]).float().cpu()
                                 for k in hidden_nodes[b]]
            if keep_kv:
                m = len(trees[b].tokens)
                out.kv[b] = [(k[j, :, :m], v[j, :, :m]) for k, v in new_kv]
                out.positions[b] = position_ids[j, :m].tolist()
                out.roots[b] = roots[j, :m].tolist()
        del cache, res, logits, new_kv
    return out


def build_extension(prefix: PrefixCache, extension: Extension | None, trees: Sequence[TokenTree],
                    outputs: TreeOutputs, keep: Sequence[tuple[int, int]]
                    ) -> tuple[Extension | None, dict[tuple[int, int], int]]:
    """The extension holding the nodes `keep` ((tree index, node) of a `run_trees(..., keep_kv=True)`
    call on `extension`) with all their ancestors (in the trees and in `extension`), per prefix row,
    and where each kept (tree, node) sits in its row; (None, {}) when nothing is kept. Nodes of
    `extension` not among those ancestors are dropped."""
    n_rows = prefix.rows
    if extension is not None:  # read on the host once
        ext_positions, ext_roots = extension.positions.cpu().numpy(), extension.roots.cpu().numpy()
        ext_anc = extension.anc.cpu().numpy()
    want: list[set] = [set() for _ in range(n_rows)]  # per row: ("e", e) or ("t", b, k)
    for b, k in keep:
        tree = trees[b]
        while k >= 0 and ("t", b, k) not in want[tree.row]:
            want[tree.row].add(("t", b, k))
            if tree.parents[k] < 0 and tree.attach[k] >= 0:
                e = tree.attach[k]
                for a in np.flatnonzero(ext_anc[tree.row, e]).tolist():
                    want[tree.row].add(("e", a))
            k = tree.parents[k]
    if not any(want):
        return None, {}
    order = [sorted(w, key=lambda x: (x[0] != "e",) + x[1:]) for w in want]
    width = max(len(o) for o in order)
    n_layers = len(prefix.keys)
    device = prefix.attention_mask.device
    # built on the host (numpy), moved to the device once
    valid = np.zeros((n_rows, width), dtype=bool)
    positions = np.zeros((n_rows, width), dtype=np.int64)
    roots = np.zeros((n_rows, width), dtype=np.int64)
    anc = np.zeros((n_rows, width, width), dtype=bool)
    heads, head_dim = prefix.keys[0].shape[1], prefix.keys[0].shape[3]
    keys = [prefix.keys[0].new_zeros((n_rows, heads, width, head_dim)) for _ in range(n_layers)]
    values = [prefix.values[0].new_zeros((n_rows, heads, width, head_dim)) for _ in range(n_layers)]
    for r, nodes in enumerate(order):
        index = {x: i for i, x in enumerate(nodes)}
        for i, x in enumerate(nodes):
            valid[r, i] = True
            anc[r, i, i] = True
            if x[0] == "e":
                e = x[1]
                positions[r, i], roots[r, i] = ext_positions[r, e], ext_roots[r, e]
                for a in np.flatnonzero(ext_anc[r, e]).tolist():
                    anc[r, i, index[("e", a)]] = True
            else:
                _, b, k = x
                tree = trees[b]
                positions[r, i], roots[r, i] = outputs.positions[b][k], outputs.roots[b][k]
                parent = tree.parents[k]
                above = index[("t", b, parent)] if parent >= 0 else (
                    index[("e", tree.attach[k])] if tree.attach[k] >= 0 else None)
                if above is not None:
                    anc[r, i] |= anc[r, above]
        # keys/values: one gather per source (the old extension, each tree), in `nodes` order
        groups: list[tuple[Any, list[int]]] = []
        for x in nodes:
            src = "e" if x[0] == "e" else x[1]
            if not groups or groups[-1][0] != src:
                groups.append((src, []))
            groups[-1][1].append(x[-1])
        groups = [(src, torch.tensor(idx, device=device)) for src, idx in groups]
        for layer in range(n_layers if groups else 0):
            for which, store in ((0, keys), (1, values)):
                pieces = []
                for src, at in groups:
                    if src == "e":
                        base = (extension.keys if which == 0 else extension.values)[layer][r]
                    else:
                        base = outputs.kv[src][layer][which]
                    pieces.append(base.index_select(1, at))
                store[layer][r, :, : len(nodes)] = torch.cat(pieces, dim=1)
    where = {x[1:]: i for nodes in order for i, x in enumerate(nodes) if x[0] == "t"}
    valid, positions, roots, anc = (torch.from_numpy(x).to(device) for x in (valid, positions, roots, anc))
    return Extension(keys=keys, values=values, valid=valid, positions=positions, roots=roots, anc=anc), where


def score_trees(
    model: Any,
    prefix: PrefixCache,
    trees: Sequence[TokenTree],
    queries: Sequence[Sequence[tuple[int, int]]],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    pad_id: int = 0,
) -> list[torch.Tensor]:
    """For each tree b and each query (node k, token t) in queries[b]: log P(t | prefix row, path to k),
    full-vocabulary, float32 (`run_trees`)."""
    return run_trees(model, prefix, trees, queries, max_rows=max_rows, max_tokens=max_tokens,
                     pad_id=pad_id).logprob


# ---- scoring requests: continuations packed into tries per row ----------------------------------------
@dataclass(frozen=True)
class Request:
    """Token sequences to score after one cached prefix row.

    The model sees the row's first `visible` cache positions, then `context` (fed, not scored); each of
    `targets` is scored after that: its summed full-vocabulary log-probability. A first target token
    with nothing fed before it is read from row `start` of the `start_logprobs` table passed to
    `score_requests` (the next-token log-probs at the end of the visible prefix). `hidden`: also return
    the hidden states at the last context token. `attach` = e >= 0: the context follows node e of the
    `Extension` given to `score_requests` (on the same row) instead of the visible prefix.
    """

    row: int
    visible: int
    context: tuple[int, ...] = ()
    targets: tuple[tuple[int, ...], ...] = ()
    start: int = -1
    hidden: bool = False
    attach: int = -1


@dataclass
class RequestScores:
    """Outputs of `score_requests`, aligned with its requests: `logprob[i][j]` for target j of request
    i, `hidden[i]` ([n_layers_kept, hidden_size] float32) for requests that asked; `ends[i][j]`: the
    (tree, node) whose output scored the last token of target j (None: from start_logprobs), to keep
    with `extension` (only when `score_requests` ran with keep_kv)."""

    logprob: list[list[float]]
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    ends: list[list[tuple[int, int] | None]] = field(default_factory=list)
    _state: Any = None

    def extension(self, keep: Sequence[tuple[int, int]]) -> tuple[Extension | None, dict[tuple[int, int], int]]:
        """The nodes `keep` (from `ends`) with their ancestors, as an `Extension` for the next call, and
        each kept node's index in its row (`build_extension`)."""
        if self._state is None:
            raise ValueError("score_requests ran without keep_kv")
        prefix, extension, trees, outputs = self._state
        return build_extension(prefix, extension, trees, outputs, keep)


class _TriePacker:
    """Builds the trees of `score_requests`: one trie per cache row, a new tree on the same row when a
    request's new nodes would pass `max_tree_tokens` (a request never straddles two trees)."""

    def __init__(self, max_tree_tokens: int):
        self.max_tree_tokens = max_tree_tokens
        self.trees: list[TokenTree] = []
        self.queries: list[list[tuple[int, int]]] = []
        self.qindex: list[dict[tuple[int, int], int]] = []  # per tree: (node, token) -> index in queries
        self.hidden: list[list[int]] = []
        self._open: dict[int, tuple[int, dict]] = {}  # row -> (tree index, trie: (parent key, token) -> node)

    @staticmethod
    def _count_new(trie: dict, root_key: Any, context: Sequence[int], tails: Sequence[Sequence[int]]) -> int:
        """Number of nodes that inserting `context` and `context` + each of `tails` below `root_key`
        would add, shared ones once (a dry run: the new ones live in an overlay)."""
        overlay: dict = {}
        n = 0
        key = end = root_key
        for i, seq in enumerate([context, *tails]):
            for tok in seq:
                node = trie.get((key, tok))
                if node is None:
                    node = overlay.get((key, tok))
                    if node is None:
                        n += 1
                        node = overlay[(key, tok)] = ("new", n)
                key = node
            if i == 0:
                end = key
            key = end
        return n

    @staticmethod
    def _insert(tree: TokenTree, trie: dict, key: Any, visible: int, seq: Sequence[int],
                attach: int = -1) -> list[int]:
        """Nodes of `seq` below `key` (a root key or a node), adding the missing ones."""
        nodes = []
        for tok in seq:
            node = trie.get((key, tok))
            if node is None:
                if isinstance(key, int):  # TokenTree.add_chain for one token, inline
                    parent, root, att, d = key, tree.roots[key], tree.attach[key], tree.depth[key] + 1
                else:
                    parent, root, att, d = -1, int(visible), int(attach), 0
                node = len(tree.tokens)
                tree.tokens.append(int(tok))
                tree.parents.append(parent)
                tree.roots.append(root)
                tree.attach.append(att)
                tree.depth.append(d)
                trie[(key, tok)] = node
            nodes.append(node)
            key = node
        return nodes

    def add(self, req: Request) -> tuple[int, list[tuple[list[int], int | None]], int | None]:
        """Place a request; return (tree index, per target (the index in the tree's queries of each
        token's (node, token) query, -1 where it comes from start_logprobs; the node whose output scores
        its last token, None for start_logprobs), hidden node)."""
        root_key = ("root", req.visible) if req.attach < 0 else ("ext", req.attach)
        entry = self._open.get(req.row)
        if entry is not None:
            tree = self.trees[entry[0]]
            # new nodes: at most every token fed; counted exactly (a dry run) only where that could overflow
            most = len(req.context) + sum(len(t) - 1 for t in req.targets)
            if tree.tokens and len(tree.tokens) + most > self.max_tree_tokens and len(tree.tokens) + self._count_new(
                    entry[1], root_key, req.context, [t[:-1] for t in req.targets]) > self.max_tree_tokens:
                entry = None
        if entry is None:
            self.trees.append(TokenTree(row=req.row, visible=req.visible))
            self.queries.append([])
            self.qindex.append({})
            self.hidden.append([])
            entry = (len(self.trees) - 1, {})
            self._open[req.row] = entry
        b, trie = entry
        tree = self.trees[b]
        ctx_nodes = self._insert(tree, trie, root_key, req.visible, req.context, req.attach)
        below = ctx_nodes[-1] if ctx_nodes else root_key
        n_ctx = len(ctx_nodes)
        if not n_ctx and req.attach >= 0 and req.targets:
            raise ValueError("a request below an extension node must feed at least one token")
        per_target = []
        qindex, queries = self.qindex[b], self.queries[b]
        heads: dict[tuple[int, ...], list[int]] = {}  # targets sharing all but their last token
        for t in req.targets:
            head = tuple(t[:-1])
            if head not in heads:
                heads[head] = self._insert(tree, trie, below, req.visible, head, req.attach) if head else []
            nodes = ctx_nodes + heads[head]
            # the node predicting t[k] is nodes[n_ctx + k - 1]; t[0] with no context: start_logprobs (-1)
            qs = []
            for k, tok in enumerate(t):
                if n_ctx + k == 0:
                    qs.append(-1)
                    continue
                qn = (nodes[n_ctx + k - 1], int(tok))
                at = qindex.get(qn)
                if at is None:  # the tree's queries, deduplicated, in order of first use
                    at = qindex[qn] = len(queries)
                    queries.append(qn)
                qs.append(at)
            per_target.append((qs, nodes[-1] if nodes else None))
        hidden = None
        if req.hidden:
            if not ctx_nodes:
                raise ValueError("a request asking for hidden states must feed at least one token")
            hidden = ctx_nodes[-1]
            self.hidden[b].append(hidden)
        return b, per_target, hidden


def score_requests(
    model: Any,
    prefix: PrefixCache,
    requests: Sequence[Request],
    *,
    start_logprobs: torch.Tensor | None = None,
    hidden_layers: str | Sequence[int] | None = "all",
    extension: Extension | None = None,
    keep_kv: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tree_tokens: int = DEFAULT_MAX_TREE_TOKENS,
    pad_id: int = 0,
) -> RequestScores:
    """Score every request (see Request) on the shared prefix cache.

    The requests of each cache row are packed into a trie (`TokenTree`; identical leading tokens run
    once, whatever request or prefix length they come from), a new tree on the same row whenever one
    would pass `max_tree_tokens` nodes, and all trees run chunked (`run_trees`): the prefix's keys and
    values are never copied per continuation. Targets whose every token comes from `start_logprobs`
    cost no forward at all. With `keep_kv`, the nodes' keys/values are kept so that
    `RequestScores.extension` can carry chosen ones into the next call (`extension`, `Request.attach`).
    """
    packer = _TriePacker(max_tree_tokens)
    placed = []
    for req in requests:
        if any(not t for t in req.targets):
            raise ValueError("empty target sequence")
        placed.append(packer.add(req))
    outs = run_trees(model, prefix, packer.trees, packer.queries, hidden_nodes=packer.hidden,
                     hidden_layers=hidden_layers, extension=extension, keep_kv=keep_kv, max_rows=max_rows,
                     max_tokens=max_tokens, pad_id=pad_id)
    logprob: list[list[float]] = []
    hidden: dict[int, torch.Tensor] = {}
    ends: list[list[tuple[int, int] | None]] = []
    values = [lp.tolist() for lp in outs.logprob]  # python floats: the float32 values, exactly
    for i, (req, (b, per_target, hnode)) in enumerate(zip(requests, placed)):
        ends.append([(b, last) if last is not None else None for _, last in per_target])
        scores = []
        vals = values[b]
        for t, (qs, _) in zip(req.targets, per_target):
            total = 0.0
            for tok, at in zip(t, qs):
                if at < 0:
                    if start_logprobs is None or req.start < 0:
                        raise ValueError("a target with nothing fed before it needs a start_logprobs row")
                    total += float(start_logprobs[req.start, tok])
                else:
                    total += vals[at]
            scores.append(total)
        logprob.append(scores)
        if hnode is not None:
            hidden[i] = outs.hidden[b][packer.hidden[b].index(hnode)]
    state = (prefix, extension, packer.trees, outs) if keep_kv else None
    return RequestScores(logprob=logprob, hidden=hidden, ends=ends, _state=state)


# ---- one row per continuation (small item sets; the reference layout) -----------------------------------
@dataclass(frozen=True)
class Continuation:
    """One thing to run after a cached prefix row.

    The model sees the row's first `visible` cache positions, then the tokens `feed + targets[:-1]`.
    `targets` are scored: their summed log-probability is returned. The first target is predicted by the
    last fed token or, when `feed` is empty, by row `start` of the `start_logprobs` table passed to
    `run_continuations`. `read`/`hidden`: return the logits of `read_ids` / the hidden states at the
    last fed token (only with no targets).
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
    """Run every continuation as its own row (a one-chain tree) on the shared prefix cache, chunked by
    `max_rows` rows and `max_kv_tokens` cache positions (rows x visible span); return their scores.

    Each item copies its row's cache once: the layout for a few items; `score_requests` packs many
    continuations of a row into one tree instead. Items whose score needs no forward pass (a single
    target predicted from `start_logprobs`) cost nothing.
    """
    n = len(items)
    logprob = torch.zeros(n, dtype=torch.float32)
    read = torch.full((n, len(read_ids)), float("nan")) if read_ids is not None else None
    trees: list[TokenTree] = []
    queries: list[list[tuple[int, int]]] = []
    reads: list[list[int]] = []
    hiddens: list[list[int]] = []
    owner: list[int] = []
    for i, item in enumerate(items):
        if (item.read or item.hidden) and item.targets:
            raise ValueError("read/hidden continuations must not have targets")
        if item.read and read_ids is None:
            raise ValueError("a continuation asks to read logits but no read_ids were given")
        if not item.feed and item.targets:
            if start_logprobs is None or item.start < 0:
                raise ValueError("a continuation with no fed tokens needs a start_logprobs row")
            logprob[i] = start_logprobs[item.start, item.targets[0]].float().cpu()
        if not item.inputs():
            if item.read or item.hidden:
                raise ValueError("read/hidden continuations must feed at least one token")
            continue
        tree = TokenTree(row=item.row, visible=item.visible)
        nodes = tree.add_chain(item.inputs())
        f = len(item.feed)
        queries.append([(nodes[f - 1 + k], int(t)) for k, t in enumerate(item.targets) if f - 1 + k >= 0])
        reads.append([nodes[-1]] if item.read else [])
        hiddens.append([nodes[-1]] if item.hidden else [])
        trees.append(tree)
        owner.append(i)
    order = sorted(range(len(trees)), key=lambda b: (trees[b].visible, len(trees[b].tokens)))
    outs = run_trees(model, prefix, [trees[b] for b in order], [queries[b] for b in order],
                     read_nodes=[reads[b] for b in order], read_ids=read_ids,
                     hidden_nodes=[hiddens[b] for b in order], hidden_layers=hidden_layers,
                     max_rows=max_rows, max_tokens=1 << 62, max_kv_tokens=max_kv_tokens, pad_id=pad_id)
    hidden: dict[int, torch.Tensor] = {}
    for j, b in enumerate(order):
        i = owner[b]
        if items[i].targets:
            logprob[i] = logprob[i] + float(outs.logprob[j].sum())
        if reads[b]:
            read[i] = outs.read[j][0]
        if hiddens[b]:
            hidden[i] = outs.hidden[j][0]
    return ContinuationResults(logprob=logprob, read=read, hidden=hidden)


# ---- token ids of text ----------------------------------------------------------------------------------
def tokens_in_context(tokenizer: Any, context: str, text: str) -> tuple[int, ...]:
    """The token ids `text` gets when it follows `context` (ids(context + text) after ids(context)).

    When the tokenizer merges across the boundary, the ids from the first differing token on are
    returned (the longest common prefix is taken as the context's share).
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + text, add_special_tokens=False)["input_ids"]
    return tuple(full[_common_prefix(ctx, full):])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):
        return n
    k = 0
    while a[k] == b[k]:
        k += 1
    return k


def _word_starts(text: str) -> Any:
    """Character positions p, last first, where a space follows a non-space character and precedes a
    letter (`...x word`): where byte-level BPE pre-tokenizers (GPT-2/SmolLM2 style: ` ?\\p{L}+`) start a
    piece and SentencePiece-style vocabularies start a `▁word` token, so no merge crosses p."""
    p = len(text) - 1
    while True:
        p = text.rfind(" ", 1, p)
        if p < 0:
            return
        if not text[p - 1].isspace() and text[p + 1].isalpha():
            yield p


def _ids_without_specials(tokenizer: Any, strings: list[str]) -> list[list[int]]:
    """tokenizer(strings, add_special_tokens=False)'s ids, straight from the Rust tokenizer where there is
    one (transformers' conversion of each encoding costs more than encoding a short tail). Called right
    after a plain `tokenizer(...)` call, which resets the backend's padding and truncation."""
    if not strings:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or backend.padding is not None or backend.truncation is not None:
        return tokenizer(strings, add_special_tokens=False)["input_ids"]
    return [e.ids for e in backend.encode_batch(strings, add_special_tokens=False)]


def split_tokenizations(
    tokenizer: Any, prefixes: Sequence[str], suffixes: Sequence[Sequence[str]], add_special_tokens: bool = True,
) -> tuple[list[list[int]], list[tuple[int, list[list[int]]]]]:
    """Tokenize each prefix once, and each prefix + suffix from a short tail of the prefix only.

    Returns (own, cuts): own[i] = ids(prefixes[i]); cuts[i] = (c, tails) with, for each suffix j,
    ids(prefixes[i] + suffixes[i][j]) == own[i][:c] + tails[j] (ids with `add_special_tokens` as given).

    How: the tail starts at the last word start p of the prefix (`_word_starts`: a space between a
    non-space character and a letter) at which a token of the prefix starts, and is tokenized without
    special tokens with each suffix after it. Why no merge crosses p, for the tokenizers we ship:
    byte-level BPE with the GPT-2 split regex (SmolLM2, the workflow's tiny tokenizer) merges only within
    pre-tokenizer pieces, and the piece before p ends there (a letter, digit or punctuation run stops at
    the space; the regex's only lookahead, `\\s+(?!\\S)`, concerns whitespace runs), while the match
    from p (` ?\\p{L}+`) starts the same whether the text before p is there or not. Gemma-3's BPE runs on
    the whole text with spaces as `▁`, but no token of its vocabulary holds a non-space character
    followed by `▁` except `>▁</`, which needs a `<` after the space, so no token, and no merge (every
    merge makes a token), spans p. Checked per prefix: the tail alone must give exactly the prefix's own
    ids from c on (this fails for a tokenizer that adds special tokens at the end or a `▁` before every
    text); where it does not, or the tokenizer is not a fast one (no offsets), or the prefix has no word
    start, the whole prefix + suffix strings are tokenized (c = 0). tests/test_split_tokenization.py
    checks the equality on the tiny, SmolLM2 and Gemma-3 tokenizers for texts ending in spaces, newlines,
    punctuation and non-ASCII characters, plain and chat prompts.
    """
    if not prefixes:
        return [], []
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(list(prefixes), add_special_tokens=add_special_tokens, return_offsets_mapping=fast)
    own = [list(x) for x in enc["input_ids"]]
    cut_at: list[tuple[int, int] | None] = []  # (token index, character index) of each prefix's tail
    for i, text in enumerate(prefixes):
        found = None
        if fast:
            offsets = enc["offset_mapping"][i]
            for p in _word_starts(text):
                c = len(offsets) - 1
                while c > 0 and offsets[c][0] > p:
                    c -= 1
                # a token starts at the space (or right after it, where offsets are trimmed)
                if c > 0 and offsets[c][0] in (p, p + 1) and offsets[c][1] > p and offsets[c - 1][1] <= p:
                    found = (c, p)
                    break
                if len(text) - p > 256:  # no token starts at the last few word starts: tokenize whole
                    break
        cut_at.append(found)
    strings: list[str] = []
    for i, text in enumerate(prefixes):
        if cut_at[i] is not None:
            tail = text[cut_at[i][1]:]
            strings += [tail] + [tail + s for s in suffixes[i]]
    tails = _ids_without_specials(tokenizer, strings)
    cuts: list[tuple[int, list[list[int]]]] = []
    whole: list[int] = []
    at = 0
    for i, text in enumerate(prefixes):
        if cut_at[i] is not None:
            c = cut_at[i][0]
            mine = tails[at: at + 1 + len(suffixes[i])]
            at += 1 + len(suffixes[i])
            if list(mine[0]) == own[i][c:]:
                cuts.append((c, [list(x) for x in mine[1:]]))
                continue
        cuts.append((0, []))
        whole.append(i)
    if whole:
        strings = [prefixes[i] + s for i in whole for s in suffixes[i]]
        full = tokenizer(strings, add_special_tokens=add_special_tokens)["input_ids"] if strings else []
        at = 0
        for i in whole:
            cuts[i] = (0, [list(x) for x in full[at: at + len(suffixes[i])]])
            at += len(suffixes[i])
    return own, cuts


def answer_ids(tokenizer: Any, question: str, answer: str) -> tuple[int, ...]:
    """The ids `answer` has right after the text `question` in the tokenization of question + answer.

    Raises ValueError when the tokenizer merges the answer into the question's last token (then no id
    sequence after the question's ids spells question + answer).
    """
    return answers_after(tokenizer, [question], [answer])[question][0]


def answers_after(tokenizer: Any, questions: Sequence[str], answers: Sequence[str]
                  ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """`answer_ids` of every answer after each distinct question, two tokenizer calls in all."""
    distinct = list(dict.fromkeys(questions))
    if not distinct:
        return {}
    q_ids = tokenizer(distinct, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer([q + a for q in distinct for a in answers], add_special_tokens=False)["input_ids"]
    out = {}
    for i, (question, q) in enumerate(zip(distinct, q_ids)):
        per_answer = []
        for j, answer in enumerate(answers):
            full = full_ids[i * len(answers) + j]
            if full[: len(q)] != q or len(full) == len(q):
                raise ValueError(f"the answer {answer!r} merges with the end of the question {question[-20:]!r}: "
                                 "its probability after the question's tokens is not defined")
            per_answer.append(tuple(full[len(q):]))
        out[question] = tuple(per_answer)
    return out


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
    the prompt string prefix_i + suffix_ij. Returns one list of probabilities per prefix.

    With one-token answers this is the softmax over the answers' logits; with longer answers (small
    tokenizers spell ` b` as ` ` + `b`) over their whole-sequence log-probabilities.

    What is scored: exactly the token ids of the prompt string (the tokenizer run on prefix + suffix,
    whatever the boundary: a prefix ending in whitespace or punctuation that merges with the suffix's
    first characters is re-read from where the two tokenizations part), followed by each answer's ids
    after it (`answer_ids`). A suffix may be a tuple of parts; they are concatenated. The prefix is
    tokenized once; each prompt string's ids are its ids up to the prefix's last word start and the
    tokenization of the rest with the suffix (`split_tokenizations`: the same ids as tokenizing the whole
    string, at the cost of a few words per suffix instead of the whole prompt).

    Sharing: the prefix (instruction + demos + query) is encoded once per example; its suffixes then
    run as tries on the prefix's cache row (`score_requests`: identical leading tokens, e.g. a pair's
    first label, run once), a new tree on the same row whenever one would pass `max_tree_tokens` nodes,
    so memory stays bounded however many suffixes (labels, pairs) there are.
    """
    if len(prefixes) != len(suffixes):
        raise ValueError("one list of suffixes per prefix is needed")
    result: list[list[float]] = [[] for _ in prefixes]
    texts = [[s if isinstance(s, str) else "".join(s) for s in ss] for ss in suffixes]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    answer_table = answers_after(tokenizer, [t for ts in texts for t in ts], answers)

    for lo in range(0, len(prefixes), batch_size):
        chunk = range(lo, min(lo + batch_size, len(prefixes)))
        batch = [i for i in chunk if texts[i]]
        if not batch:
            if progress is not None:
                progress.update(len(chunk))
            continue
        own_ids, cuts = split_tokenizations(tokenizer, [prefixes[i] for i in batch], [texts[i] for i in batch],
                                            add_special_tokens)
        width = max(len(x) for x in own_ids)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, own in enumerate(own_ids):  # left padding, whatever the tokenizer's padding side
            input_ids[r, width - len(own):] = torch.tensor(own, dtype=torch.long)
            mask[r, width - len(own):] = 1
        cache, last = encode_prefixes(model, input_ids.to(device), mask.to(device))
        start = torch.log_softmax(last, dim=-1)
        requests: list[Request] = []
        for r, i in enumerate(batch):
            own = own_ids[r]
            pad = width - len(own)
            c, tails = cuts[r]  # ids(prefix + text) = own[:c] + tail
            own_tail = own[c:]
            for text, tail in zip(texts[i], tails):
                keep = _common_prefix(own_tail, tail)
                requests.append(Request(row=r, visible=pad + c + keep, context=tuple(tail[keep:]),
                                        targets=answer_table[text], start=r if keep == len(tail) else -1))
        scores = score_requests(model, cache, requests, start_logprobs=start, hidden_layers=None,
                                max_rows=max_rows, max_tokens=max(DEFAULT_MAX_TOKENS, max_tree_tokens),
                                max_tree_tokens=max_tree_tokens, pad_id=pad_id)
        pos = 0
        for i in batch:
            for _ in texts[i]:
                lp = torch.tensor(scores.logprob[pos])
                result[i].append(float(torch.softmax(lp, dim=0)[0]))
                pos += 1
        if progress is not None:
            progress.update(len(chunk))
    return result


def reference_logprobs(model: Any, ctx: Sequence[int], targets: Sequence[Sequence[int]]) -> list[float]:
    """log P(target | ctx) for each target from one plain forward of the batch ctx + target (right-padded,
    no cache), full vocabulary: the reference the KV-shared scorer is checked against (tests/test_bf16.py,
    benchmarks/gpu_check.py)."""
    ctx = list(ctx)
    width = len(ctx) + max(map(len, targets))
    ids = torch.zeros((len(targets), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, t in enumerate(targets):
        ids[r, : len(ctx) + len(t)] = torch.tensor(ctx + list(t))
        mask[r, : len(ctx) + len(t)] = 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=width - len(ctx) + 1)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1).cpu()
    return [float(sum(logp[r, j, tok] for j, tok in enumerate(t))) for r, t in enumerate(targets)]
