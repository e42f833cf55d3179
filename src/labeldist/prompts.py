"""Prompts (docs/methods.md section 2): instruction + k demonstrations + the query, label formats, parsing,
and seeded demo sampling.

Plain-text layout (base models)::

    {instruction}

    Input: {demo text}
    Labels: joy, fear

    Input: {query}
    Labels:

The completion a model should produce is the formatted label list followed by a newline
(`completion_text`). Chat models get the same blocks as user/assistant turns (`chat_messages`).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

from .config import NONE_LABEL, label_key, validate_block
from .settings import FromConfig
LABEL_FORMATS = ("comma", "json")


@dataclass(frozen=True)
class PromptSpec(FromConfig):
    """One prompt template from config `prompts.<name>` (`from_config`; defaults: the config schema's
    `prompt` definition, labeldist.config.validate_block("prompt", ...) fills them in)."""

    CONFIG_BLOCK: ClassVar[str] = "prompts.<name>"

    instruction: str
    k: int
    label_format: str
    demo_sampling: str
    multilabel_ratio: float
    input_prefix: str
    output_prefix: str
    use_chat_template: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], key: str = "prompts.<name>") -> "PromptSpec":
        """Return the spec of a `prompts.<name>` block, validated against the schema's `prompt` definition
        with its defaults filled in (labeldist.config.validate_block; idempotent on a validated block), so
        a caller may pass the block as written; ConfigError names `key` and the key at fault."""
        return super().from_config(validate_block("prompt", cfg, key))

    @property
    def stop_string(self) -> str:
        """Generation stops at the next demo's input prefix (or at the end of the label line)."""
        return self.input_prefix.strip()


@dataclass(frozen=True)
class ParsedLabels:
    """Labels read from an output: `labels` known and deduplicated in emission order (none excluded)."""

    labels: list[str]
    unknown: list[str]
    repeated: list[str]
    said_none: bool

    @property
    def no_label(self) -> bool:
        """True when the output named no label at all, not even `none`."""
        return not self.labels and not self.unknown and not self.said_none


def format_labels(labels: Sequence[str], fmt: str) -> str:
    """The label list as the model should write it; an empty set is written as `none`.

    comma: ``joy, fear``; json: ``{"label": ["joy", "fear"]}``.
    """
    items = list(labels) if labels else [NONE_LABEL]
    if fmt == "comma":
        return ", ".join(items)
    if fmt == "json":
        return json.dumps({"label": items}, ensure_ascii=False)
    raise ValueError(f"unknown label format {fmt!r} (use one of {LABEL_FORMATS})")


def label_separator(fmt: str) -> str:
    """The text written between two labels in format `fmt`."""
    return ", " if fmt == "comma" else '", "'


def label_list_prefix(fmt: str) -> str:
    """The text written before the first label in format `fmt`."""
    return "" if fmt == "comma" else '{"label": ["'


def split_label_strings(text: str, fmt: str) -> list[str]:
    """The raw label strings of one output line, in order, before matching against the label set."""
    line = text.strip().split("\n", 1)[0].strip()
    if not line:
        return []
    if fmt == "json":
        try:
            obj = json.loads(line)
            items = obj.get("label", []) if isinstance(obj, dict) else obj
            if isinstance(items, str):
                items = [items]
            if isinstance(items, list):
                return [str(x).strip() for x in items if str(x).strip()]
        except json.JSONDecodeError:
            pass
        # Truncated or malformed JSON: take the quoted strings, else fall back to commas.
        quoted = re.findall(r'"([^"]*)"', line)
        quoted = [q for q in quoted if q != "label"]
        if quoted:
            return [q.strip() for q in quoted if q.strip()]
        line = line.strip("{}[] ")
    return [part.strip().strip('"').strip() for part in line.split(",") if part.strip().strip('"').strip()]


def parse_labels(text: str, fmt: str, label_set: Sequence[str]) -> ParsedLabels:
    """Match an output's label strings to the label set (case-insensitive: labeldist.config.label_key, the
    key by which every label set is checked to hold distinct labels), keeping emission order.

    A label emitted twice counts once (listed in `repeated`); strings outside the label set are listed in
    `unknown`; `none` is recorded in `said_none`.
    """
    lookup = {label_key(label): label for label in label_set}
    labels: list[str] = []
    unknown: list[str] = []
    repeated: list[str] = []
    said_none = False
    for raw in split_label_strings(text, fmt):
        key = label_key(raw)
        if key == NONE_LABEL:
            said_none = True
        elif key in lookup:
            label = lookup[key]
            if label in labels:
                repeated.append(label)
            else:
                labels.append(label)
        else:
            unknown.append(raw)
    return ParsedLabels(labels=labels, unknown=unknown, repeated=repeated, said_none=said_none)


def instruction_text(spec: PromptSpec, label_set: Sequence[str]) -> str:
    """The instruction with `{labels}` filled in by the comma-separated label set."""
    return spec.instruction.replace("{labels}", ", ".join(label_set)).strip()


def completion_text(labels: Sequence[str], spec: PromptSpec) -> str:
    """What the model should generate for a gold label set: the formatted list and a newline."""
    return format_labels(labels, spec.label_format) + "\n"


def example_block(text: str, labels: Sequence[str] | None, spec: PromptSpec) -> str:
    """One `Input: ... / Labels: ...` block; with labels=None the block ends after the output prefix."""
    block = f"{spec.input_prefix}{text}\n{spec.output_prefix}"
    if labels is None:
        return block.rstrip(" ") if spec.output_prefix.endswith(" ") else block
    return block + completion_text(labels, spec)


def build_prompt(
    spec: PromptSpec,
    label_set: Sequence[str],
    demos: Sequence[tuple[str, Sequence[str]]],
    query: str,
) -> str:
    """The plain-text prompt: instruction, demos (text, labels), and the query awaiting its labels.

    The prompt ends with the output prefix without its trailing space, so the model's first generated
    token carries the space (as it does in the demos, where BPE tokenizers merge it into the label).
    """
    parts = [instruction_text(spec, label_set), ""]
    for text, labels in demos:
        parts.append(example_block(text, labels, spec))
    parts.append(example_block(query, None, spec))
    return "\n".join(parts)


def chat_messages(
    spec: PromptSpec,
    label_set: Sequence[str],
    demos: Sequence[tuple[str, Sequence[str]]],
    query: str,
) -> list[dict[str, str]]:
    """The same prompt as chat turns: the instruction as system, each demo as a user/assistant pair."""
    messages = [{"role": "system", "content": instruction_text(spec, label_set)}]
    for text, labels in demos:
        messages.append({"role": "user", "content": f"{spec.input_prefix}{text}"})
        messages.append({"role": "assistant", "content": format_labels(labels, spec.label_format)})
    messages.append({"role": "user", "content": f"{spec.input_prefix}{query}"})
    return messages


def uses_chat_template(spec: PromptSpec, tokenizer: Any) -> bool:
    """True when `render_prompt` uses the tokenizer's chat template for this spec: asked for and present
    (a model without one gets plain text, the documented fallback; `chat_fallback_note` says so)."""
    return bool(spec.use_chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None))


def chat_fallback_note(spec: PromptSpec, tokenizer: Any, model: str) -> str | None:
    """The log line for a prompt that asks for a chat template with a model that has none (plain-text
    prompts instead); None when there is nothing to say."""
    if spec.use_chat_template and not uses_chat_template(spec, tokenizer):
        return (f"the prompt asks for a chat template (use_chat_template) but {model} has none: plain-text "
                "prompts, the documented fallback")
    return None


def render_prompt(
    spec: PromptSpec,
    label_set: Sequence[str],
    demos: Sequence[tuple[str, Sequence[str]]],
    query: str,
    tokenizer: Any = None,
) -> str:
    """The prompt string for a model: its chat template when the spec asks for it and it has one."""
    if uses_chat_template(spec, tokenizer):
        return tokenizer.apply_chat_template(
            chat_messages(spec, label_set, demos, query), tokenize=False, add_generation_prompt=True
        )
    return build_prompt(spec, label_set, demos, query)


def sample_demos(
    pool: Sequence[tuple[str, Sequence[str]]],
    k: int,
    strategy: str,
    label_set: Sequence[str],
    rng: random.Random,
    multilabel_ratio: float = 0.5,
) -> list[str]:
    """Ids of k demonstrations drawn from `pool` (id, gold labels) with a seeded `rng`.

    multilabel: round(k * ratio) examples with >= 2 labels, the rest with exactly one label (topped up
    from the other examples when a group runs short); uniform: k // |L| examples per label, the rest
    random; random: k examples at random. The returned order is shuffled.
    """
    if k <= 0 or not pool:
        return []
    k = min(k, len(pool))
    ids = [i for i, _ in pool]
    chosen: list[str] = []
    if strategy == "multilabel":
        multi = [i for i, labels in pool if len(labels) >= 2]
        single = [i for i, labels in pool if len(labels) == 1]
        n_multi = min(round(k * multilabel_ratio), len(multi))
        chosen = rng.sample(multi, n_multi)
        chosen += rng.sample(single, min(k - len(chosen), len(single)))
    elif strategy == "uniform":
        per_label = k // max(len(label_set), 1)
        for label in label_set:
            having = [i for i, labels in pool if label in labels and i not in chosen]
            chosen += rng.sample(having, min(per_label, len(having)))
    elif strategy != "random":
        raise ValueError(f"unknown demo sampling {strategy!r} (use multilabel, uniform or random)")
    rest = [i for i in ids if i not in set(chosen)]
    chosen += rng.sample(rest, k - len(chosen))
    rng.shuffle(chosen)
    return chosen


# ---- unary and pairwise prompts (docs/methods.md section 4, "Zero-shot, extra prompts") -------------------
UNARY_ANSWERS = ("reasonable", "unreasonable")
PAIRWISE_ANSWERS = ("a", "b")
_SUFFIX_MARKER = "\x00SUFFIX\x00"


def unary_question(label: str) -> str:
    """The label-specific end of a unary prompt: `Label: {l}` / `Is the label reasonable:`."""
    return f"Label: {label}\nIs the label reasonable:"


def pairwise_question(a: str, b: str) -> str:
    """The pair-specific end of a pairwise prompt, `a: {a}` / `b: {b}` / `Answer:`; the answer is `a` or
    `b` (the instruction says which label fits the input better)."""
    return "".join(pairwise_question_parts(a, b))


def pairwise_question_parts(a: str, b: str) -> tuple[str, str]:
    """`pairwise_question` in two parts: the one every pair with first label `a` shares, then the rest
    (so the shared part can be computed once per example and first label)."""
    return f"a: {a}\nb:", f" {b}\nAnswer:"


def unary_instruction(spec: PromptSpec, label_set: Sequence[str]) -> str:
    """The instruction of unary prompts: the task's instruction plus what the answer means."""
    return instruction_text(spec, label_set) + \
        "\nFor each input, say whether the given label is reasonable or unreasonable."


def pairwise_instruction(spec: PromptSpec, label_set: Sequence[str]) -> str:
    """The instruction of pairwise prompts: the task's instruction plus what the answer means."""
    return instruction_text(spec, label_set) + \
        "\nFor each input, say which of the two labels, a or b, fits it better."


def unary_demos(
    demos: Sequence[tuple[str, Sequence[str]]], label_set: Sequence[str], rng: random.Random
) -> list[tuple[str, str, str]]:
    """(text, question, answer) per demo: alternately (random start) a gold label marked `reasonable`
    and a non-gold label marked `unreasonable`; a demo without the needed kind of label gets the other
    kind, and the next demo is asked for the kind still owed."""
    out = []
    want = rng.random() < 0.5
    for text, gold in demos:
        gold = [g for g in gold if g in label_set]
        wrong = [l for l in label_set if l not in gold]
        reasonable = (want and bool(gold)) or not wrong
        if reasonable == want:
            want = not want
        label = rng.choice(gold) if reasonable else rng.choice(wrong)
        out.append((text, unary_question(label), UNARY_ANSWERS[0] if reasonable else UNARY_ANSWERS[1]))
    return out


def pairwise_demos(
    demos: Sequence[tuple[str, Sequence[str]]], label_set: Sequence[str], rng: random.Random
) -> list[tuple[str, str, str]]:
    """(text, question, answer) per demo: a gold label (`none` for an empty set) against a wrong one
    (`none` counts as wrong when gold labels exist), in random order; the answer names the gold one."""
    out = []
    options = list(label_set) + [NONE_LABEL]
    for text, gold in demos:
        right = [g for g in gold if g in label_set] or [NONE_LABEL]
        wrong = [o for o in options if o not in right]
        g, w = rng.choice(right), rng.choice(wrong)
        if rng.random() < 0.5:
            out.append((text, pairwise_question(g, w), PAIRWISE_ANSWERS[0]))
        else:
            out.append((text, pairwise_question(w, g), PAIRWISE_ANSWERS[1]))
    return out


@dataclass(frozen=True)
class ChoicePrompt:
    """Prompts sharing one prefix: `prefix` (instruction, demos, the query's input line) + each of
    `suffixes` (one question each, as a tuple of parts whose concatenation is the question's text);
    the answers follow as `answer_texts` (e.g. " a", " b")."""

    prefix: str
    suffixes: list[tuple[str, ...]]
    answer_texts: tuple[str, ...]


def choice_prompt(
    spec: PromptSpec,
    instruction: str,
    demos: Sequence[tuple[str, str, str]],
    query: str,
    questions: Sequence[str | tuple[str, ...]],
    answers: Sequence[str],
    tokenizer: Any = None,
) -> ChoicePrompt:
    """A unary/pairwise prompt split into its shared prefix and per-question suffixes.

    Plain text: the instruction, then each demo as `Input: {text}` / `{question} {answer}` (blank line
    between blocks), then `Input: {query}` / `{question}`. With the chat template (when the spec asks
    for it and the tokenizer has one): instruction as system, demos as user/assistant turns, the query
    as the last user turn; the rendered text is cut where the question starts. A question may be given
    in parts (`pairwise_question_parts`); they are kept apart in `suffixes`.
    """
    parts = [(q,) if isinstance(q, str) else tuple(q) for q in questions]
    if spec.use_chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": instruction}]
        for text, question, answer in demos:
            messages.append({"role": "user", "content": f"{spec.input_prefix}{text}\n{question}"})
            messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": f"{spec.input_prefix}{query}\n{_SUFFIX_MARKER}"})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prefix, tail = rendered.split(_SUFFIX_MARKER, 1)
        return ChoicePrompt(prefix, [q[:-1] + (q[-1] + tail,) for q in parts], tuple(answers))
    blocks = [instruction.strip(), ""]
    for text, question, answer in demos:
        blocks.append(f"{spec.input_prefix}{text}\n{question} {answer}\n")
    blocks.append(f"{spec.input_prefix}{query}\n")
    return ChoicePrompt("\n".join(blocks), parts, tuple(" " + a for a in answers))


def choice_documents(
    examples: Sequence[tuple[str, Any]],
    label_set: Sequence[str],
    spec: PromptSpec,
    n_docs: int,
    rng: random.Random,
    labels_of: Callable[[Any, random.Random], Sequence[str]] | None = None,
    vote_queries: bool = False,
) -> list[str]:
    """`n_docs` complete unary and pairwise prompts (half each) with their answers, for a corpus that
    should teach a model these formats (and a tokenizer their words: `reasonable`, ` b`, ...).

    Each document draws k demos and a query from `examples` (text, gold labels); the query's question
    and answer are made the way `unary_demos` / `pairwise_demos` make a demo's.

    `labels_of(item, rng)`, when given, turns an example's second field into the label set it shows,
    drawn afresh each time it is used (e.g. one annotator's vote out of a record). `vote_queries` makes
    the query's answer a vote with the annotators' frequencies: the question is picked with one draw
    (half the time a label, or pair member, that this draw names; else a uniform label, or ordered pair
    of the labels and `none`) and answered by a second, independent draw: `reasonable` iff the label is
    in it; `a` iff a is in it and b is not (`none` stands for an empty set), `b` for the reverse, a fair
    coin when both or neither are. So P(reasonable) = p_ref(label) and P(a) = 1/2 + (p_ref(a) -
    p_ref(b)) / 2 over annotator votes. Each unary demo's kind (gold or wrong label) is then its own coin,
    not alternating, so no answer can be read off the pattern of the ones before it.
    """
    docs = []
    options = list(label_set) + [NONE_LABEL]
    for i in range(n_docs):
        unary = i % 2 == 0
        picked = rng.sample(list(examples), min(spec.k + 1, len(examples)))
        query_item = picked[-1][1]
        if labels_of is not None:
            picked = [(text, list(labels_of(item, rng))) for text, item in picked]
        if not vote_queries:
            marked = (unary_demos if unary else pairwise_demos)(picked, label_set, rng)
        elif unary:
            marked = [q for demo in picked[:-1] for q in unary_demos([demo], label_set, rng)]
        else:
            marked = pairwise_demos(picked[:-1], label_set, rng)
        if vote_queries:
            text, hint = picked[-1][0], set(picked[-1][1]) or {NONE_LABEL}
            vote = set(labels_of(query_item, rng) if labels_of is not None else hint) or {NONE_LABEL}
            if unary:
                named = [l for l in label_set if l in hint]
                label = rng.choice(named) if named and rng.random() < 0.5 else rng.choice(list(label_set))
                marked.append((text, unary_question(label), UNARY_ANSWERS[label not in vote]))
            else:
                if rng.random() < 0.5:
                    a = rng.choice([o for o in options if o in hint])
                    a, b = rng.sample([a, rng.choice([o for o in options if o != a])], 2)
                else:
                    a, b = rng.sample(options, 2)
                first = rng.random() < 0.5 if (a in vote) == (b in vote) else a in vote
                marked.append((text, pairwise_question(a, b), PAIRWISE_ANSWERS[not first]))
        instruction = (unary_instruction if unary else pairwise_instruction)(spec, label_set)
        answers = UNARY_ANSWERS if unary else PAIRWISE_ANSWERS
        prompt = choice_prompt(spec, instruction, marked[:-1], picked[-1][0], [marked[-1][1]], answers)
        docs.append(prompt.prefix + "".join(prompt.suffixes[0]) + " " + marked[-1][2] + "\n")
    return docs
