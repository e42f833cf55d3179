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
bounded by the chunk (rows x nodes), not by the vocabulary times the number of continuations.

Models with sliding-window layers (Gemma 2/3, Mistral-style): the cache must hold every position
(a plain `DynamicCache()`, as `encode_prefixes` and `extraction.greedy_generate` use); the window is
then applied in the 4-D mask by position (a key at position p is seen from position P iff P - p <
window), for hybrid models as one mask per layer type.

(Hand-written because transformers has no "score many continuations of a cached prefix" helper; the
pieces are the library's: `DynamicCache`, the model's own forward with a custom 4-D mask.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from transformers import DynamicCache

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
    and follows node `parents[k]` (-1: the row's first `roots[k]` cache positions). A node sees that
    prefix and its own ancestors only, so text shared by several continuations appears once, and
    chains below different prefix lengths of the same row share one forward."""

    row: int
    visible: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)

    def add_chain(self, ids: Sequence[int], parent: int = -1, visible: int | None = None) -> list[int]:
        """Append `ids` as a chain below node `parent` (or, with -1, below the row's first `visible`
        positions, default the tree's); return the new nodes' indices."""
        nodes = []
        root = (self.visible if visible is None else int(visible)) if parent < 0 else self.roots[parent]
        for tok in ids:
            self.tokens.append(int(tok))
            self.parents.append(parent)
            self.roots.append(root)
            parent = len(self.tokens) - 1
            nodes.append(parent)
        return nodes


def _tree_layout(trees: Sequence[TokenTree], q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ancestor-or-self mask [B, q, q] bool, depth [B, q], root visible [B, q]) of packed trees padded
    to q nodes; padding nodes see only themselves."""
    anc = np.zeros((len(trees), q, q), dtype=bool)
    depth = np.zeros((len(trees), q), dtype=np.int64)
    roots = np.zeros((len(trees), q), dtype=np.int64)
    for b, tree in enumerate(trees):
        for k, parent in enumerate(tree.parents):
            if parent >= 0:
                anc[b, k] = anc[b, parent]
                depth[b, k] = depth[b, parent] + 1
            anc[b, k, k] = True
        n = len(tree.parents)
        roots[b, :n] = tree.roots
        anc[b, np.arange(n, q), np.arange(n, q)] = True
    return anc, depth, roots


def _chunk_trees(trees: Sequence[TokenTree], n_queries: Sequence[int], max_rows: int, max_tokens: int,
                 max_queries: int, max_kv_tokens: int | None = None) -> list[list[int]]:
    """Consecutive groups of non-empty trees: at most `max_rows` trees, `max_tokens` padded nodes,
    `max_queries` scored nodes and (when given) `max_kv_tokens` cache positions (rows x visible span)."""
    chunks: list[list[int]] = []
    q_max = n_q = span = 0
    for b, tree in enumerate(trees):
        if not tree.tokens:
            continue
        q, vis = len(tree.tokens), max(tree.roots)
        if chunks:
            rows = len(chunks[-1]) + 1
            fits = (rows <= max_rows and rows * max(q_max, q) <= max_tokens
                    and n_q + n_queries[b] <= max_queries
                    and (max_kv_tokens is None or rows * max(span, vis) <= max_kv_tokens))
            if fits:
                chunks[-1].append(b)
                q_max, n_q, span = max(q_max, q), n_q + n_queries[b], max(span, vis)
                continue
        chunks.append([b])
        q_max, n_q, span = q, n_queries[b], vis
    return chunks


@dataclass
class TreeOutputs:
    """What `run_trees` returns for each tree b: `logprob[b]` (log P(token | path to node) per query,
    float32), `read[b]` (logits of `read_ids` per read node [n, len(read_ids)]), `hidden[b]` (per hidden
    node [n_layers_kept, hidden_size] float32)."""

    logprob: list[torch.Tensor]
    read: list[torch.Tensor]
    hidden: list[list[torch.Tensor]]


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
    max_rows: int = DEFAULT_MAX_ROWS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_kv_tokens: int | None = None,
    max_logits: int = DEFAULT_MAX_LOGITS,
    pad_id: int = 0,
) -> TreeOutputs:
    """Run packed trees on the prefix cache, chunk by chunk (`_chunk_trees`), and return for each tree
    b and each query (node k, token t) in queries[b]: log P(t | prefix row, path to k), full-vocabulary,
    float32; the logits of `read_ids` at read_nodes[b]; the hidden states at hidden_nodes[b].

    A chunk's cache is the prefix's rows as they are (a view when the chunk's trees are rows 0..n-1 in
    order, else the selected rows once per tree), cut to the longest visible prefix; logits are computed
    only at nodes that are queried or read. Needs an attention implementation that takes a custom 4-D
    mask (sdpa, eager).
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
    out_lp = [torch.zeros(len(qs)) for qs in queries]
    out_read = [torch.zeros((len(r), len(read_ids or ()))) for r in read_nodes]
    out_hidden: list[list[torch.Tensor]] = [[] for _ in trees]
    read_index = torch.tensor(list(read_ids), device=device) if read_ids is not None else None
    kept_nodes = [sorted({k for k, _ in queries[b]} | set(read_nodes[b])) for b in range(n)]
    per_chunk_queries = max(1, max_logits // max(vocab, 1))
    chunks = _chunk_trees(trees, [len(k) for k in kept_nodes], max_rows, max_tokens, per_chunk_queries,
                          max_kv_tokens)
    for chunk in chunks:
        sub = [trees[b] for b in chunk]
        q = max(len(t.tokens) for t in sub)
        vmax = max(max(t.roots) for t in sub)
        rows = [t.row for t in sub]
        if rows == list(range(len(rows))):
            keys = [k[: len(rows), :, :vmax] for k in prefix.keys]
            values = [v[: len(rows), :, :vmax] for v in prefix.values]
        else:
            index = torch.tensor(rows, device=device)
            keys = [k[:, :, :vmax].index_select(0, index) for k in prefix.keys]
            values = [v[:, :, :vmax].index_select(0, index) for v in prefix.values]
        row_t = torch.tensor(rows, device=device)
        anc, depth, roots = (torch.from_numpy(x).to(device) for x in _tree_layout(sub, q))
        ids = torch.full((len(sub), q), pad_id, dtype=torch.long)
        for j, t in enumerate(sub):
            ids[j, : len(t.tokens)] = torch.tensor(t.tokens, dtype=torch.long)
        base = cum[row_t[:, None], roots]  # real prefix tokens before each node's root [b, q]
        position_ids = base + depth
        past = (torch.arange(vmax, device=device)[None, None, :] < roots[:, :, None]) \
            & real[row_t, :vmax].bool()[:, None, :]
        full = torch.cat([past, anc], dim=2)[:, None]
        mask: Any = full
        if window is not None:
            kpos = torch.cat([key_pos[row_t, :vmax][:, None, :].expand(-1, q, -1),
                              position_ids[:, None, :].expand(-1, q, -1)], dim=2)
            near = (kpos > position_ids[:, :, None] - window)[:, None]
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
        cache = DynamicCache(ddp_cache_data=list(zip(keys, values)))
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=position_ids,
                        past_key_values=cache, use_cache=True, logits_to_keep=keep.to(device),
                        output_hidden_states=want_hidden)
        logits = out.logits  # [kept nodes of the chunk, V], row-major over (tree, node)
        pos = 0
        for j, b in enumerate(chunk):
            where = {k: pos + i for i, k in enumerate(kept_nodes[b])}
            pos += len(kept_nodes[b])
            if queries[b]:
                sel = torch.tensor([where[k] for k, _ in queries[b]], device=device)
                toks = torch.tensor([t for _, t in queries[b]], device=device)
                rows_logits = logits[sel].float()
                lp = rows_logits.gather(1, toks[:, None])[:, 0] - torch.logsumexp(rows_logits, dim=-1)
                out_lp[b] = lp.cpu()
            if read_nodes[b]:
                sel = torch.tensor([where[k] for k in read_nodes[b]], device=device)
                out_read[b] = logits[sel][:, read_index].float().cpu()
            if hidden_nodes[b]:
                layers = _select_layers(len(out.hidden_states), hidden_layers)
                out_hidden[b] = [torch.stack([out.hidden_states[layer][j, k] for layer in layers]).float().cpu()
                                 for k in hidden_nodes[b]]
        del cache, out, logits
    return TreeOutputs(logprob=out_lp, read=out_read, hidden=out_hidden)


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
    the hidden states at the last context token.
    """

    row: int
    visible: int
    context: tuple[int, ...] = ()
    targets: tuple[tuple[int, ...], ...] = ()
    start: int = -1
    hidden: bool = False


@dataclass
class RequestScores:
    """Outputs of `score_requests`, aligned with its requests: `logprob[i][j]` for target j of request
    i, `hidden[i]` ([n_layers_kept, hidden_size] float32) for requests that asked."""

    logprob: list[list[float]]
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


class _TriePacker:
    """Builds the trees of `score_requests`: one trie per cache row, a new tree on the same row when a
    request's new nodes would pass `max_tree_tokens` (a request never straddles two trees)."""

    def __init__(self, max_tree_tokens: int):
        self.max_tree_tokens = max_tree_tokens
        self.trees: list[TokenTree] = []
        self.queries: list[list[tuple[int, int]]] = []
        self.hidden: list[list[int]] = []
        self._open: dict[int, tuple[int, dict]] = {}  # row -> (tree index, trie: (parent key, token) -> node)

    @staticmethod
    def _walk(trie: dict, root_key: Any, seq: Sequence[int]) -> int:
        """Number of tokens of `seq` already in the trie below `root_key`."""
        key, k = root_key, 0
        for tok in seq:
            node = trie.get((key, tok))
            if node is None:
                break
            key, k = node, k + 1
        return k

    def _insert(self, tree: TokenTree, trie: dict, root_key: Any, visible: int, seq: Sequence[int]) -> list[int]:
        """Nodes of `seq` below the root, adding the missing ones."""
        key, nodes = root_key, []
        for tok in seq:
            node = trie.get((key, tok))
            if node is None:
                node = tree.add_chain([tok], key if isinstance(key, int) else -1, visible)[0]
                trie[(key, tok)] = node
            nodes.append(node)
            key = node
        return nodes

    def add(self, req: Request) -> tuple[int, list[list[tuple[int, int] | None]], int | None]:
        """Place a request; return (tree index, per target the (node, token) query of each token or None
        where it comes from start_logprobs, hidden node)."""
        root_key = ("root", req.visible)
        seqs = [req.context] + [req.context + t[:-1] for t in req.targets]
        entry = self._open.get(req.row)
        if entry is not None:
            tree = self.trees[entry[0]]
            need = 0
            seen: set[tuple[int, ...]] = set()
            for s in seqs:  # upper bound on new nodes: tokens past what the trie holds, shared ones once
                k = self._walk(entry[1], root_key, s)
                for m in range(k + 1, len(s) + 1):
                    seen.add(tuple(s[:m]))
            need = len(seen)
            if tree.tokens and len(tree.tokens) + need > self.max_tree_tokens:
                entry = None
        if entry is None:
            self.trees.append(TokenTree(row=req.row, visible=req.visible))
            self.queries.append([])
            self.hidden.append([])
            entry = (len(self.trees) - 1, {})
            self._open[req.row] = entry
        b, trie = entry
        tree = self.trees[b]
        ctx_nodes = self._insert(tree, trie, root_key, req.visible, req.context)
        per_target = []
        for t in req.targets:
            nodes = ctx_nodes + self._insert(tree, trie, root_key, req.visible, req.context + t[:-1])[len(ctx_nodes):]
            qs: list[tuple[int, int] | None] = []
            for k, tok in enumerate(t):
                at = len(req.context) + k - 1  # index into context + t of the node predicting t[k]
                qs.append(None if at < 0 else (nodes[at], int(tok)))
            per_target.append(qs)
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
    cost no forward at all.
    """
    packer = _TriePacker(max_tree_tokens)
    placed = []
    for req in requests:
        if any(not t for t in req.targets):
            raise ValueError("empty target sequence")
        placed.append(packer.add(req))
    # queries per tree, deduplicated
    qindex: list[dict[tuple[int, int], int]] = [{} for _ in packer.trees]
    for b, per_target, _ in placed:
        for qs in per_target:
            for qn in qs:
                if qn is not None and qn not in qindex[b]:
                    qindex[b][qn] = len(packer.queries[b])
                    packer.queries[b].append(qn)
    outs = run_trees(model, prefix, packer.trees, packer.queries, hidden_nodes=packer.hidden,
                     hidden_layers=hidden_layers, max_rows=max_rows, max_tokens=max_tokens, pad_id=pad_id)
    logprob: list[list[float]] = []
    hidden: dict[int, torch.Tensor] = {}
    for i, (req, (b, per_target, hnode)) in enumerate(zip(requests, placed)):
        scores = []
        for t, qs in zip(req.targets, per_target):
            total = 0.0
            for tok, qn in zip(t, qs):
                if qn is None:
                    if start_logprobs is None or req.start < 0:
                        raise ValueError("a target with nothing fed before it needs a start_logprobs row")
                    total += float(start_logprobs[req.start, tok])
                else:
                    total += float(outs.logprob[b][qindex[b][qn]])
            scores.append(total)
        logprob.append(scores)
        if hnode is not None:
            hidden[i] = outs.hidden[b][packer.hidden[b].index(hnode)]
    return RequestScores(logprob=logprob, hidden=hidden)


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
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def answer_ids(tokenizer: Any, question: str, answer: str) -> tuple[int, ...]:
    """The ids `answer` has right after the text `question` in the tokenization of question + answer.

    Raises ValueError when the tokenizer merges the answer into the question's last token (then no id
    sequence after the question's ids spells question + answer).
    """
    q = tokenizer(question, add_special_tokens=False)["input_ids"]
    full = tokenizer(question + answer, add_special_tokens=False)["input_ids"]
    if full[: len(q)] != q or len(full) == len(q):
        raise ValueError(f"the answer {answer!r} merges with the end of the question {question[-20:]!r}: "
                         "its probability after the question's tokens is not defined")
    return tuple(full[len(q):])


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
    after it (`answer_ids`). A suffix may be a tuple of parts; they are concatenated.

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
    answer_cache: dict[str, tuple[tuple[int, ...], ...]] = {}

    def answers_after(question: str) -> tuple[tuple[int, ...], ...]:
        if question not in answer_cache:
            answer_cache[question] = tuple(answer_ids(tokenizer, question, a) for a in answers)
        return answer_cache[question]

    for lo in range(0, len(prefixes), batch_size):
        chunk = range(lo, min(lo + batch_size, len(prefixes)))
        batch = [i for i in chunk if texts[i]]
        if not batch:
            if progress is not None:
                progress.update(len(chunk))
            continue
        own_ids = tokenizer([prefixes[i] for i in batch], add_special_tokens=add_special_tokens)["input_ids"]
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
            full = tokenizer([prefixes[i] + t for t in texts[i]], add_special_tokens=add_special_tokens)["input_ids"]
            for text, ids in zip(texts[i], full):
                keep = _common_prefix(own, ids)
                requests.append(Request(row=r, visible=pad + keep, context=tuple(ids[keep:]),
                                        targets=answers_after(text), start=r if keep == len(ids) else -1))
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
