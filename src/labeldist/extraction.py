"""Generation with per-step label distributions, hidden states and the token-level marginal
(docs/methods.md sections 3 and 4).

Pipeline for one batch of prompts:

1. HF `generate`, greedy, left-padded, `output_logits=True`, `return_dict_in_generate=True`, stopping at
   the end of the label line / the next demo's input prefix (`stop_strings`) or EOS.
2. The generated ids (never re-tokenised text) are cut into *label slots* with a per-tokenizer table of
   each label's token ids as it appears in context (`LabelTokenTable`): after the output prefix for the
   first label, after the separator for the others.
3. At each slot: the raw logits of every label's first in-context token (from `generate`'s logits), and
   the full-vocabulary log-probability of every label's whole token sequence, teacher-forced on the
   generated prefix by `scoring.score_requests` on `generate`'s own KV cache (no re-encoding): every
   slot's labels of an example go into one packed token tree on its cache row, one forward for the
   batch; the tokens a label shares with what was generated at the slot (all of them for the emitted
   label) are read off `generate`'s logits and cost nothing.
4. The hidden states (all layers or a selection) at the position whose output is the first label step,
   from a node of the same tree.
5. Optionally the marginal search (`marginal_search`), from the first slot's label scores of step 3.

`generate` runs with a plain `DynamicCache()`, which keeps every position in every layer (a model's
sliding-window layers mask by position instead of evicting), so the cache serves every slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .config import label_key
from .prompts import NONE_LABEL, PromptSpec, example_block, format_labels, label_list_prefix, \
    label_separator, render_prompt
from transformers import DynamicCache

from .scoring import PrefixCache, Request, score_requests, tokens_in_context
from .settings import FromConfig

log = logging.getLogger(__name__)

# Characters that may surround a label slot without being part of it.
_STRIP_CHARS = " \t\r\n\"'[]{}"


# ---- the label token table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelTokenTable:
    """Token ids of the label list grammar for one tokenizer, prompt layout and label set.

    labels: the label set followed by `none` (L+1). first[i] / later[i]: token ids of labels[i] when it
    is the first label of the list / follows a separator. lead: tokens between the start of the
    generation and the first label (json: ` {"label": ["`). sep: tokens between two labels. end: tokens
    after the last label (`\\n`, json `"]}\\n`; chat: EOS, json `"]}` + EOS). fmt: comma or json.
    end_alternatives: every token sequence that ends the list (see `ends`).
    """

    labels: tuple[str, ...]
    first: tuple[tuple[int, ...], ...]
    later: tuple[tuple[int, ...], ...]
    lead: tuple[int, ...]
    sep: tuple[int, ...]
    end: tuple[int, ...]
    fmt: str
    eos_ids: frozenset[int] = frozenset()
    end_alternatives: tuple[tuple[int, ...], ...] = ()

    @property
    def ends(self) -> tuple[tuple[int, ...], ...]:
        """The token sequences that end the label list, none a prefix of another, so that P(END) is the
        sum of their probabilities (docs/methods.md section 4, marginal search). A closing line break may
        merge with the blank line after it (Gemma writes `"]}` + `\\n\\n` after the demos' blocks, never
        `\\n`), and a chat model may stop at any of its EOS ids; `end` alone would miss that mass."""
        return self.end_alternatives or (self.end,)

    @property
    def none_index(self) -> int:
        """Index of `none` in `labels` (the last one)."""
        return len(self.labels) - 1

    def slot_ids(self, slot_index: int) -> tuple[tuple[int, ...], ...]:
        """The in-context token ids of every label at slot number `slot_index` (0 = first)."""
        return self.first if slot_index == 0 else self.later

    def first_token_ids(self, slot_index: int) -> list[int]:
        """First token of every label at slot `slot_index` (L+1 ids, `none` last)."""
        return [ids[0] for ids in self.slot_ids(slot_index)]


def _split_head(tokenizer: Any, ids: Sequence[int], head_text: str) -> int:
    """Number of leading `ids` that spell (a prefix of) `head_text`: where the label's own tokens begin."""
    k = 0
    while k < len(ids):
        text = tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        if not head_text.startswith(text):
            break
        k += 1
    return k


def _split_common_head(
    tokenizer: Any, seqs: list[tuple[int, ...]], head_text: str
) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """Split each label's ids (head text + label, in context) into the head shared by all labels and
    the label's own ids. The shared head is the shortest one any label has, so a label whose leading
    space is a token of its own (` ` + `z` ...) keeps that token, and every label starts at the same
    position."""
    k = min(_split_head(tokenizer, ids, head_text) for ids in seqs)
    heads = {ids[:k] for ids in seqs}
    if len(heads) > 1:
        log.warning("the label list's %r tokenizes differently before different labels", head_text)
    return [tuple(ids[k:]) for ids in seqs], tuple(seqs[0][:k])


def completion_lead(spec: PromptSpec, chat: bool) -> str:
    """Text the model writes between the end of the prompt and the label list (plain: the output
    prefix's trailing space, since the prompt ends without it; chat: nothing)."""
    if chat:
        return ""
    probe = "x"
    return example_block(probe, [], spec)[len(example_block(probe, None, spec)):][: -len(
        format_labels([], spec.label_format) + "\n")]


def build_label_table(
    tokenizer: Any, spec: PromptSpec, label_set: Sequence[str], chat: bool = False,
    eos_ids: Sequence[int] = (),
) -> LabelTokenTable:
    """The label token table for `tokenizer`, measured in a real prompt context (see LabelTokenTable).

    Each label's ids are read off the tokenization of prompt + label list, so BPE merges with the
    preceding space or quote are exactly those the model sees in the demos.
    """
    labels = tuple(label_set) + (NONE_LABEL,)
    fmt = spec.label_format
    context = render_prompt(spec, label_set, [], "x", tokenizer if chat else None)
    lead_text = completion_lead(spec, chat) + label_list_prefix(fmt)
    sep_text = label_separator(fmt)
    anchor = labels[0]
    closing = format_labels([anchor], fmt)[len(label_list_prefix(fmt)) + len(anchor):]

    first, lead = _split_common_head(
        tokenizer, [tokens_in_context(tokenizer, context, lead_text + label) for label in labels], lead_text)
    anchor_ctx = context + lead_text + anchor
    later, sep = _split_common_head(
        tokenizer, [tokens_in_context(tokenizer, anchor_ctx, sep_text + label) for label in labels], sep_text)
    eos = _eos_ids(tokenizer) | {int(i) for i in eos_ids}
    # the list ends with its closing and a line break (the demos' blocks are followed by a blank line,
    # which BPE vocabularies may merge into one `\n\n` token); a chat turn is the closed list, then EOS
    if chat and eos:
        closed = tuple(tokens_in_context(tokenizer, anchor_ctx, closing)) if closing else ()
        alternatives = [closed + (i,) for i in sorted(eos)]
        end = closed + (min(eos),)
    else:
        alternatives = [tuple(tokens_in_context(tokenizer, anchor_ctx, closing + nl)) for nl in ("\n", "\n\n")]
        end = alternatives[0]
    empty = [labels[i] for i, ids in enumerate(first) if not ids] + \
            [labels[i] for i, ids in enumerate(later) if not ids]
    if empty:
        raise ValueError(f"labels {sorted(set(empty))} have no tokens of their own in context")
    return LabelTokenTable(labels=labels, first=tuple(first), later=tuple(later), lead=lead, sep=sep,
                           end=tuple(end), fmt=fmt, eos_ids=frozenset(eos),
                           end_alternatives=_prefix_free(alternatives))


def _prefix_free(seqs: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """The distinct sequences of `seqs`, shortest first, without any that extends a kept one (its
    probability is part of the shorter one's): the events "the continuation starts with s" are disjoint."""
    kept: list[tuple[int, ...]] = []
    for seq in sorted(set(map(tuple, seqs)), key=lambda t: (len(t), t)):
        if seq and not any(seq[:len(k)] == k for k in kept):
            kept.append(seq)
    return tuple(kept)


def _eos_ids(obj: Any) -> set[int]:
    """EOS ids of a tokenizer or generation config (`eos_token_id`: an id, a list, or None)."""
    eos = getattr(obj, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(i) for i in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def model_eos_ids(model: Any) -> set[int]:
    """EOS ids the model's generation config stops at (chat models add their end-of-turn token)."""
    return _eos_ids(getattr(model, "generation_config", None))


# ---- segmentation of generated ids into label slots ---------------------------------------------------
class TokenText:
    """Decoded text of single token ids (cached) and of id sequences, for one tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        """The text of one token."""
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False,
                                                           clean_up_tokenization_spaces=False)
        return self._pieces[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of an id sequence, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass(frozen=True)
class LabelSlot:
    """One label slot in the generated ids: tokens [position, end), the label (index into the table's
    labels, None for a string outside the label set), its text, and whether its ids are exactly the
    label's in-context ids."""

    position: int
    end: int
    label: int | None
    text: str
    exact: bool


def _is_boundary(piece: str, token_id: int, table: LabelTokenTable) -> bool:
    """True when a token closes a label slot: a separator/closing quote, a line end, or EOS."""
    if token_id in table.eos_ids or "\n" in piece:
        return True
    head = piece.lstrip(" ")
    if not head:
        return False
    return head[0] == "," or (table.fmt == "json" and head[0] in "\"]}")


def _is_filler(piece: str, fmt: str) -> bool:
    """True for a token made only of spaces (and quotes/brackets in json): padding around a label."""
    return "\n" not in piece and piece.strip(" \"[{" if fmt == "json" else " ") == ""


def _skip_lead(ids: Sequence[int], table: LabelTokenTable, text: TokenText) -> int:
    """Position of the first label slot: after the table's lead when the output starts with it, else
    (json) after the opening bracket if one comes early, else at the start."""
    lead = table.lead
    if tuple(ids[: len(lead)]) == lead:
        return len(lead)
    if table.fmt == "json":
        for i in range(min(len(ids), len(lead) + 4)):
            p = text.piece(ids[i])
            if "\n" in p:
                break
            if "[" in p:
                return i + 1
    return 0


def _exact_match(ids: Sequence[int], pos: int, cands: Sequence[tuple[int, ...]], table: LabelTokenTable,
                 text: TokenText) -> tuple[int, int] | None:
    """(label index, length) of the longest candidate whose ids start at `pos` and are followed by a
    boundary (or the end of the ids), or None."""
    n = len(ids)
    best = None
    for li, cand in enumerate(cands):
        m = len(cand)
        if tuple(ids[pos : pos + m]) == cand and (
            pos + m == n or _is_boundary(text.piece(ids[pos + m]), ids[pos + m], table)
        ):
            if best is None or m > best[1]:
                best = (li, m)
    return best


def segment_label_slots(
    ids: Sequence[int], table: LabelTokenTable, text: TokenText, lookup: dict[str, int] | None = None
) -> tuple[list[LabelSlot], int]:
    """Cut generated ids (already cut at the stop) into label slots; return (slots, list_start).

    A slot starts after the list's lead (first slot) or after a separator. There, the longest label
    whose in-context ids match and are followed by a boundary (separator, closing quote, line end, EOS,
    end of ids) wins. Otherwise filler tokens (spaces; quotes in json) are skipped and the match is tried
    again; failing that, the slot runs to the next boundary and its text is matched case-insensitively
    against the label set (`lookup`: labeldist.config.label_key of each label -> index), else it is unknown
    (label None).
    After a slot, the table's separator ids, or else any run of tokens made only of commas, spaces (and
    quotes in json) containing a comma, lead to the next slot; anything else ends the list.
    `list_start` is where the first slot starts (or would).
    """
    if lookup is None:
        lookup = {label_key(label): i for i, label in enumerate(table.labels)}
    n = len(ids)
    pos = _skip_lead(ids, table, text)
    list_start = pos
    slots: list[LabelSlot] = []
    sep_chars = ", \"" if table.fmt == "json" else ", "
    slot_index = 0
    while pos < n:
        if ids[pos] in table.eos_ids or "\n" in text.piece(ids[pos]):
            break
        cands = table.slot_ids(slot_index)
        best = _exact_match(ids, pos, cands, table, text)
        if best is None:
            while pos < n - 1 and _is_filler(text.piece(ids[pos]), table.fmt):
                pos += 1
            best = _exact_match(ids, pos, cands, table, text)
        if slot_index == 0:
            list_start = pos
        if best is not None:
            end = pos + best[1]
            slots.append(LabelSlot(pos, end, best[0], table.labels[best[0]], True))
        else:
            end = pos + 1
            while end < n and not _is_boundary(text.piece(ids[end]), ids[end], table):
                end += 1
            raw = text.decode(ids[pos:end]).strip(_STRIP_CHARS)
            if raw:
                slots.append(LabelSlot(pos, end, lookup.get(label_key(raw)), raw, False))
        if table.sep and tuple(ids[end : end + len(table.sep)]) == table.sep:
            k, comma = end + len(table.sep), True
        else:
            k, comma = end, False
            while k < n:
                p = text.piece(ids[k])
                if ids[k] in table.eos_ids or "\n" in p or not p or any(ch not in sep_chars for ch in p):
                    break
                comma = comma or "," in p
                k += 1
        if not comma or k >= n:
            break
        pos = k
        slot_index += 1
    return slots, list_start


def summarize_slots(slots: Sequence[LabelSlot], table: LabelTokenTable) -> tuple[list[str], list[str], list[str]]:
    """(labels, unknown, repeated) of an output's slots: known labels deduplicated in emission order
    (`none` excluded), unknown slot strings, and each repeat of an already emitted label."""
    labels: list[str] = []
    unknown: list[str] = []
    repeated: list[str] = []
    for slot in slots:
        if slot.label is None:
            unknown.append(slot.text)
        elif slot.label != table.none_index:
            name = table.labels[slot.label]
            (repeated if name in labels else labels).append(name)
    return labels, unknown, repeated


# ---- extraction -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractionSettings(FromConfig):
    """What `extract` computes: config `generation` (defaults: the config schema) plus two settings that are
    not config keys as such, with their defaults here: `hidden_layers` None (no hidden states; `from_config`
    with `hidden` reads the config's "all" or layer indices) and `max_rows` (rows per scoring chunk)."""

    CONFIG_BLOCK: ClassVar[str] = "generation"

    max_new_tokens: int
    batch_size: int
    marginal: bool
    marginal_top_p: float
    marginal_min_prob: float
    marginal_max_depth: int
    hidden_layers: str | list[int] | None = None  # None: no hidden states; "all" or layer indices
    max_rows: int = 64

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], marginal: bool | None = None,
                    hidden: bool = False) -> "ExtractionSettings":
        """From a validated config `generation` block (a missing key is a ConfigError naming it);
        `marginal`/`hidden` override whether those are computed."""
        cls.require_keys(cfg, ("hidden_layers",) if hidden else ())
        return cls(
            max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"],
            marginal=cfg["marginal"] if marginal is None else marginal,
            marginal_top_p=cfg["marginal_top_p"], marginal_min_prob=cfg["marginal_min_prob"],
            marginal_max_depth=cfg["marginal_max_depth"],
            hidden_layers=cfg["hidden_layers"] if hidden else None,
        )


@dataclass
class Extraction:
    """The per-example output of `extract`: a record (docs/formats.md fields minus id/demo_ids/ratio),
    when asked the hidden states [n_layers_kept, hidden_size] at the first label step, and the
    generated ids the record describes."""

    record: dict
    hidden: torch.Tensor | None = None
    generated_ids: list[int] = field(default_factory=list)  # cut at the stop token


def _stop_strings(spec: PromptSpec) -> list[str]:
    """Generation stops at the end of the label line or at the next demo's input prefix."""
    return [s for s in ("\n", spec.stop_string) if s]


def _cut_at_stop(ids: list[int], stops: Sequence[str], table: LabelTokenTable, text: TokenText) -> tuple[int, bool]:
    """(number of generated tokens up to and including the stop token or EOS, whether one was found)."""
    acc = ""
    for i, tok in enumerate(ids):
        if tok in table.eos_ids:
            return i + 1, True
        acc += text.piece(tok)
        if any(s in acc for s in stops):
            return i + 1, True
    return len(ids), False


def _output_text(text: str, spec: PromptSpec) -> str:
    """The label line of a decoded output: up to the first newline or next input prefix, stripped."""
    line = text.split("\n", 1)[0]
    if spec.stop_string and spec.stop_string in line:
        line = line.split(spec.stop_string, 1)[0]
    return line.strip()


def extract(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    spec: PromptSpec,
    label_set: Sequence[str],
    settings: ExtractionSettings,
    *,
    table: LabelTokenTable | None = None,
    add_special_tokens: bool = True,
    progress: bool = True,
) -> list[Extraction]:
    """Generate for every prompt and return its record with per-step label distributions (module doc).

    Record fields: output_text, labels (known, deduplicated, emission order, `none` excluded), unknown,
    repeated, n_tokens, hit_max_tokens, no_label, steps [{position, label, first_token_logits,
    whole_label_logprobs, label_logprob}], and marginal when settings.marginal.
    """
    chat = bool(spec.use_chat_template and getattr(tokenizer, "chat_template", None))
    table = table or build_label_table(tokenizer, spec, label_set, chat=chat, eos_ids=model_eos_ids(model))
    text = TokenText(tokenizer)
    out: list[Extraction] = []
    bar = tqdm(total=len(prompts), desc="generate", unit="ex", disable=not progress)
    for lo in range(0, len(prompts), settings.batch_size):
        batch = list(prompts[lo : lo + settings.batch_size])
        out.extend(extract_batch(model, tokenizer, batch, spec, table, settings, text=text,
                                 add_special_tokens=add_special_tokens))
        bar.update(len(batch))
    bar.close()
    return out


def greedy_generate(model: Any, tokenizer: Any, enc: dict, spec: PromptSpec, settings: ExtractionSettings,
                    pad_id: int) -> Any:
    """Return HF `generate`'s output for a tokenized left-padded batch: greedy, stopping at the label
    line's end / next input prefix (`stop_strings`) or EOS, with raw per-step logits (`output_logits`)
    and the KV cache (`past_key_values`, a `DynamicCache` holding every position of every layer)."""
    with torch.inference_mode():
        return model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1,
            temperature=None, top_p=None, top_k=None,
            return_dict_in_generate=True, output_logits=True, use_cache=True,
            past_key_values=DynamicCache(),
            stop_strings=_stop_strings(spec), tokenizer=tokenizer, pad_token_id=pad_id,
        )


def extract_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    spec: PromptSpec,
    table: LabelTokenTable,
    settings: ExtractionSettings,
    *,
    text: TokenText | None = None,
    add_special_tokens: bool = True,
) -> list[Extraction]:
    """`extract` for one batch (one `generate` call and one chunked scoring pass on its cache)."""
    text = text or TokenText(tokenizer)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(table.eos_ids or {0})
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    gen = greedy_generate(model, tokenizer, enc, spec, settings, pad_id)
    n_prompt = enc["input_ids"].shape[1]
    sequences = gen.sequences
    n_gen = sequences.shape[1] - n_prompt
    logits = torch.stack(gen.logits, dim=1).float()  # [B, T, V] raw logits of each generated step
    logprobs = torch.log_softmax(logits, dim=-1)
    start_table = logprobs.reshape(-1, logprobs.shape[-1])  # row b * n_gen + t
    prefix = PrefixCache.from_cache(gen.past_key_values, enc["attention_mask"])
    stops = _stop_strings(spec)
    lookup = {label_key(label): i for i, label in enumerate(table.labels)}

    per_example = []
    requests: list[Request] = []
    for b in range(len(prompts)):
        ids = sequences[b, n_prompt:].tolist()
        n_tok, stopped = _cut_at_stop(ids, stops, table, text)
        ids = ids[:n_tok]
        slots, list_start = segment_label_slots(ids, table, text, lookup)
        step_requests = []
        for s_index, slot in enumerate(slots):
            # per label: log-prob of the tokens it shares with the generated ids, read off generate's
            # logits, and a request for the rest below the cache at the end of the shared part
            per_label = []
            for label_ids in table.slot_ids(s_index):
                m = 0
                while m < len(label_ids) and slot.position + m < n_gen - 1 and \
                        slot.position + m < len(ids) and ids[slot.position + m] == label_ids[m]:
                    m += 1
                known = sum(float(logprobs[b, slot.position + j, label_ids[j]]) for j in range(m))
                if m == len(label_ids):
                    per_label.append((known, None))
                else:
                    per_label.append((known, len(requests)))
                    requests.append(Request(row=b, visible=n_prompt + slot.position + m, targets=(label_ids[m:],),
                                            start=b * n_gen + slot.position + m))
            step_requests.append(per_label)
        hidden_request = None
        if settings.hidden_layers is not None:
            a = n_prompt + (slots[0].position if slots else 0) - 1
            hidden_request = len(requests)
            requests.append(Request(row=b, visible=a, context=(int(sequences[b, a]),), hidden=True))
        per_example.append((ids, n_tok, stopped, slots, list_start, step_requests, hidden_request))

    res = score_requests(model, prefix, requests, start_logprobs=start_table,
                         hidden_layers=settings.hidden_layers, max_rows=settings.max_rows, pad_id=pad_id)

    results: list[Extraction] = []
    roots = []
    whole_label = [[torch.tensor([known + (res.logprob[r][0] if r is not None else 0.0) for known, r in per_label],
                                 dtype=torch.float32) for per_label in ex[5]] for ex in per_example]
    for b, (ids, n_tok, stopped, slots, list_start, step_requests, hidden_request) in enumerate(per_example):
        steps = []
        for s_index, (slot, per_label) in enumerate(zip(slots, step_requests)):
            firsts = table.first_token_ids(s_index)
            whole = whole_label[b][s_index]
            emitted = sum(float(logprobs[b, t, ids[t]]) for t in range(slot.position, slot.end))
            steps.append({
                "position": slot.position,
                "label": table.labels[slot.label] if slot.label is not None else None,
                "first_token_logits": logits[b, slot.position, firsts].tolist(),
                "whole_label_logprobs": whole.tolist(),
                "label_logprob": emitted,
            })
        labels, unknown, repeated = summarize_slots(slots, table)
        record = {
            "output_text": _output_text(text.decode(ids), spec),
            "labels": labels, "unknown": unknown, "repeated": repeated,
            "n_tokens": n_tok, "hit_max_tokens": (not stopped) and n_tok >= settings.max_new_tokens,
            "no_label": not slots, "steps": steps,
        }
        hidden = res.hidden.get(hidden_request) if hidden_request is not None else None
        results.append(Extraction(record=record, hidden=hidden, generated_ids=ids))
        if settings.marginal:
            if slots:
                roots.append(MarginalRoot(row=b, visible=n_prompt + slots[0].position,
                                          root_logprobs=whole_label[b][0]))
            else:
                roots.append(_empty_root(b, n_prompt, n_gen, list_start, table, sequences))
    if settings.marginal:
        marginals = marginal_search(model, prefix, roots, table, settings, start_logprobs=start_table, pad_id=pad_id)
        for ex, marg in zip(results, marginals):
            ex.record["marginal"] = marg
    return results


# ---- the token-level marginal (Praharaj & Kasundra) --------------------------------------------------
def _empty_root(b: int, n_prompt: int, n_gen: int, list_start: int, table: "LabelTokenTable",
                sequences: torch.Tensor) -> "MarginalRoot":
    """The marginal search's root for an output with no label slot: where its first label would start.

    When the output never wrote the list's lead (json), the canonical lead is fed after the prompt.
    """
    if list_start == 0 and table.lead:
        return MarginalRoot(row=b, visible=n_prompt, feed=table.lead)
    if list_start < n_gen:
        return MarginalRoot(row=b, visible=n_prompt + list_start, start=b * n_gen + list_start)
    a = n_prompt + list_start - 1
    return MarginalRoot(row=b, visible=a, feed=(int(sequences[b, a]),))


@dataclass
class MarginalRoot:
    """Where one example's label list starts: cache row, visible prefix length, tokens to feed first
    (e.g. the json lead when the output never reached it), and, if known, the first slot's whole-label
    log-probs (L+1)."""

    row: int
    visible: int
    feed: tuple[int, ...] = ()
    start: int = -1
    root_logprobs: torch.Tensor | None = None


@dataclass
class _Node:
    """A path of the marginal search: its labels, its probability, and the token ids still to feed:
    below its root's visible prefix (`attach` -1: the root's feed and the first label) or below node
    `attach` of the previous depth's extension (the last token of its last label; the separator and the
    label's other tokens were run there)."""

    example: int
    labels: tuple[int, ...]
    prob: float
    context: tuple[int, ...] = ()
    attach: int = -1
    end: tuple[int, int] | None = None  # (tree, node) of the previous pass that the path continues

def _nucleus(scores: Sequence[float], top_p: float) -> list[int]:
    """Indices of the smallest set of choices whose normalised mass reaches top_p, most probable first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept, cum = [], 0.0
    for i in order:
        kept.append(i)
        cum += scores[i]
        if cum >= top_p - 1e-12:
            break
    return kept


def marginal_search(
    model: Any,
    prefix: PrefixCache,
    roots: Sequence[MarginalRoot],
    table: LabelTokenTable,
    settings: ExtractionSettings,
    *,
    start_logprobs: torch.Tensor | None = None,
    pad_id: int = 0,
) -> list[list[float]]:
    """P(label l appears anywhere in the label list), per example, by bounded search (L+1 values).

    The search runs over label-list continuations from the first label slot, on the KV-cache scorer:

    1. Root slot: the choices are the L+1 labels, scored by their whole-label probabilities s(c) =
       P(ids_first(c) | prefix). `none` is terminal (the empty list).
    2. After k >= 1 labels: the choices are END, scored P(end ids | prefix, path), and every label c
       not yet on the path (`none` excluded), scored P(sep ids + ids_later(c) | prefix, path).
    3. Choices are normalised to q(c) = s(c) / sum s over the node's choices (the grammar-constrained
       distribution); the nucleus keeps the most probable choices until their q reaches
       `marginal_top_p`. A child's path probability is its parent's times q(c); children below
       `marginal_min_prob` are pruned, except the node's most probable choice (so the greedy grammar
       path is always explored and the explored mass is never zero).
    4. A path is complete at END, at `none`, or when it holds `marginal_max_depth` labels.
    5. marginal(l) = sum of the probabilities of complete paths containing l / sum over all complete
       paths (normalised by the mass explored); marginal(none) is the mass of the `none` path.

    Cost: the root slot's scores come from extraction (step 3 of the module doc). Then one packed
    scoring pass per depth over all examples (`scoring.score_requests`): each frontier path's new
    tokens are fed on its example's cache row, with END and every separator + label continuation as
    targets, all of a row in one trie; the prompt's keys and values are used in place, never copied per
    path, and the tokens of the paths that go on are kept (`scoring.Extension`) for the next depth, so no
    token is run twice.
    """
    n_labels = len(table.labels)
    none = table.none_index
    totals = [0.0] * len(roots)
    marg = [[0.0] * n_labels for _ in roots]

    def complete(example: int, labels: tuple[int, ...], prob: float) -> None:
        totals[example] += prob
        for li in labels:
            marg[example][li] += prob

    def expand(node: _Node, choices: list[int | None], scores: list[float], frontier: list[_Node],
               ends: list | None = None) -> None:
        total = sum(scores)
        if total <= 0:
            complete(node.example, node.labels, node.prob)
            return
        q = [x / total for x in scores]
        for rank, ci in enumerate(_nucleus(q, settings.marginal_top_p)):
            prob = node.prob * q[ci]
            if rank > 0 and prob < settings.marginal_min_prob:
                continue
            choice = choices[ci]
            if choice is None:  # END
                complete(node.example, node.labels, prob)
                continue
            labels = node.labels + (choice,)
            if choice == none or len(labels) >= settings.marginal_max_depth:
                complete(node.example, labels, prob)
                continue
            if not node.labels:  # below the root: feed the root's tokens and the whole first label
                frontier.append(_Node(node.example, labels, prob, roots[node.example].feed + table.first[choice]))
            else:  # the separator and the label but its last token ran in this pass
                frontier.append(_Node(node.example, labels, prob, table.later[choice][-1:], end=ends[ci]))

    # depth 0: the root slots (scored by extraction where it reached one)
    need = [i for i, r in enumerate(roots) if r.root_logprobs is None]
    if need:
        scored = score_requests(
            model, prefix, [Request(row=roots[i].row, visible=roots[i].visible, context=roots[i].feed,
                                    targets=table.first, start=roots[i].start) for i in need],
            start_logprobs=start_logprobs, hidden_layers=None, max_rows=settings.max_rows, pad_id=pad_id).logprob
        for i, lp in zip(need, scored):
            roots[i].root_logprobs = torch.tensor(lp, dtype=torch.float32)
    frontier: list[_Node] = []
    for i, root in enumerate(roots):
        expand(_Node(i, (), 1.0), list(range(n_labels)), torch.exp(root.root_logprobs.double()).tolist(), frontier)

    # deeper: END or a further label, one packed pass per depth
    extension = None
    continued = [table.sep + ids for ids in table.later]  # a further label: separator + its ids
    while frontier:
        options = [[c for c in range(n_labels) if c != none and c not in n.labels] for n in frontier]
        n_end = len(table.ends)
        res = score_requests(
            model, prefix,
            [Request(row=roots[n.example].row, visible=roots[n.example].visible, context=n.context,
                     targets=table.ends + tuple(continued[c] for c in opts), attach=n.attach)
             for n, opts in zip(frontier, options)],
            hidden_layers=None, extension=extension, keep_kv=True, max_rows=settings.max_rows, pad_id=pad_id)
        next_frontier: list[_Node] = []
        for node, opts, lp, ends in zip(frontier, options, res.logprob, res.ends):
            probs = torch.exp(torch.tensor(lp, dtype=torch.float64)).tolist()
            # END: the summed probability of its (prefix-free) token sequences
            expand(node, [None] + opts, [sum(probs[:n_end])] + probs[n_end:], next_frontier,
                   [None] + list(ends[n_end:]))
        extension, where = res.extension([n.end for n in next_frontier])
        frontier = [_Node(n.example, n.labels, n.prob, n.context, attach=where[n.end]) for n in next_frontier]
    return [[m / t if t > 0 else 0.0 for m in row] for row, t in zip(marg, totals)]
