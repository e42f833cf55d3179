"""The generation stage: load a subset and the demo pool, draw seeded demos, build prompts, run one
prompting mode and write `generations/.../{prompting}/{subset}/seed{seed}.jsonl` (+ hidden states for
baseline) exactly as docs/formats.md "Generations" says.

Prompting modes: `baseline` (one generation per example: per-step label distributions, hidden states,
optionally the marginal), `icl_sweep` (the same per share of multi-label demos, a record per example
and ratio), `unary` (P(reasonable) per example and label) and `pairwise` (P(a) per ordered label pair,
`none` included; all pairs up to config `generation.pairwise_opponents` labels, a seeded budget of
pairs beyond, `pairwise_pairs`; both presentation orders, or one with `generation.pairwise_orders: one`,
`one_order`). Reproducible: the demos are drawn from `random.Random` seeded by the seed wildcard
(one demo set per seed, and per ratio in the sweep), torch is seeded, and decoding is greedy. Every
prompt is fitted to the model's context first (labeldist.context: a query text too long is shortened and
its record marked `truncated`; a prompt too long without it stops the run with a ContextError).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .artifacts.generations import write_generation_records
from .artifacts.hidden import write_hidden
from .artifacts.labels import read_label_set
from .artifacts.splits import SUBSET_SPLIT, demo_pool, read_split, read_subsets, select_records
from .config import validate_block
from .context import count_tokens, fit_queries
from .extraction import ExtractionSettings, extract
from .prompts import (
    NONE_LABEL,
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question_parts,
    render_prompt,
    sample_demos,
    unary_demos,
    unary_instruction,
    unary_question,
    uses_chat_template,
)
from .scoring import choice_probabilities

log = logging.getLogger(__name__)


# ---- data -----------------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """What a generation run needs from the data stage: the label set, the subset's examples
    (dicts with id, text, labels) in subsets.json order, the demo pool (train split minus the
    `train` subset) as id -> (text, labels), and the dataset's name (labels.json; for messages)."""

    label_set: list[str]
    examples: list[dict]
    pool: dict[str, tuple[str, list[str]]]
    dataset: str = ""


def load_task_data(data_files: Mapping[str, str], subset: str) -> TaskData:
    """Read labels.json, subsets.json, the subset's split and the train split (paths by data stage key:
    train, dev, test, labels, subsets)."""
    label_set = read_label_set(data_files["labels"])
    subsets = read_subsets(data_files["subsets"], required=(subset,))
    split = SUBSET_SPLIT[subset]
    train = read_split(data_files["train"], label_set)
    split_records = train if split == "train" else read_split(data_files[split], label_set)
    examples = select_records(split_records, subsets[subset], data_files["subsets"], subset)
    pool = {r["id"]: (r["text"], r["labels"]) for r in demo_pool(train, subsets)}
    return TaskData(label_set=label_set.labels, examples=examples, pool=pool, dataset=label_set.dataset)


def choose_demos(data: TaskData, spec: PromptSpec, rng: random.Random) -> list[str]:
    """Ids of the k demos (spec's sampling strategy and multi-label share) drawn with `rng`."""
    pool = [(i, labels) for i, (_, labels) in data.pool.items()]
    return sample_demos(pool, spec.k, spec.demo_sampling, data.label_set, rng, spec.multilabel_ratio)


def demo_rng(mode: str, seed: int, ratio: float | None = None) -> random.Random:
    """The seeded RNG of one run's demos: the same (mode family, seed, ratio) always gives the same draw.
    baseline, unary and pairwise share the baseline demo set; the sweep draws one set per ratio."""
    if mode == "icl_sweep":
        return random.Random(f"icl_sweep:{seed}:{ratio}")
    return random.Random(seed)


# ---- the prompting modes ---------------------------------------------------------------------------------
@dataclass
class GenerationOutput:
    """Records of one run (docs/formats.md) and, for baseline, hidden states [n, layers, hidden_size]
    in record order with the layer indices kept."""

    records: list[dict]
    hidden: torch.Tensor | None = None
    layers: list[int] | None = None


def describe_run(data: TaskData, model: Any) -> str:
    """`dataset 'x', model 'folder'`: what a message about a run's prompts names."""
    return f"dataset {data.dataset or '?'!r}, model {getattr(model, 'name_or_path', '') or type(model).__name__!r}"


def _extraction_records(
    model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, demo_ids: list[str],
    settings: ExtractionSettings, extra: Mapping[str, Any], progress: bool,
) -> tuple[list[dict], list[torch.Tensor | None]]:
    demos = [data.pool[i] for i in demo_ids]
    fitted = fit_queries([ex["text"] for ex in data.examples],
                         lambda text: render_prompt(spec, data.label_set, demos, text, tokenizer), tokenizer,
                         model.config, settings.max_new_tokens, add_special_tokens=not uses_chat_template(spec, tokenizer),
                         where=describe_run(data, model))
    results = extract(model, tokenizer, [f.prompt for f in fitted], spec, data.label_set, settings,
                      add_special_tokens=not uses_chat_template(spec, tokenizer), progress=progress)
    records = [{"id": ex["id"], "demo_ids": list(demo_ids), **extra, "truncated": f.truncated, **res.record}
               for ex, f, res in zip(data.examples, fitted, results)]
    return records, [res.hidden for res in results]


def _hidden_layers(cfg: Mapping[str, Any], model: Any) -> list[int]:
    n_states = int(model.config.get_text_config().num_hidden_layers) + 1
    layers = cfg["hidden_layers"]
    return list(range(n_states)) if layers == "all" else [int(i) for i in layers]


def baseline(model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, gen_cfg: Mapping[str, Any],
             seed: int, progress: bool = True) -> GenerationOutput:
    """One generation per example with per-step distributions, hidden states and (config) marginal."""
    demo_ids = choose_demos(data, spec, demo_rng("baseline", seed))
    settings = ExtractionSettings.from_config(dict(gen_cfg), hidden=True)
    records, hidden = _extraction_records(model, tokenizer, data, spec, demo_ids, settings, {}, progress)
    layers = _hidden_layers(gen_cfg, model)
    size = model.config.get_text_config().hidden_size
    stacked = torch.stack(hidden) if hidden else torch.zeros(0, len(layers), size)
    return GenerationOutput(records, stacked, layers)


def icl_sweep(model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, gen_cfg: Mapping[str, Any],
              seed: int, progress: bool = True) -> GenerationOutput:
    """Baseline generation once per share of multi-label demos (config icl_sweep_ratios), no marginal."""
    settings = ExtractionSettings.from_config(dict(gen_cfg), marginal=False)
    records: list[dict] = []
    for ratio in gen_cfg["icl_sweep_ratios"]:
        spec_r = replace(spec, demo_sampling="multilabel", multilabel_ratio=float(ratio))
        demo_ids = choose_demos(data, spec_r, demo_rng("icl_sweep", seed, ratio))
        recs, _ = _extraction_records(model, tokenizer, data, spec_r, demo_ids, settings,
                                      {"ratio": float(ratio)}, progress)
        records += recs
    return GenerationOutput(records)


# ---- pairwise: which pairs ---------------------------------------------------------------------------
DEFAULT_PAIRWISE_OPPONENTS = 11
"""Default of config `generation.pairwise_opponents`: all pairs for up to 11 labels (every dataset of the
study), a budget of about 6 pairs per label beyond."""


def pairwise_pairs(labels: Sequence[str], opponents: int | str = DEFAULT_PAIRWISE_OPPONENTS,
                   rng: random.Random | None = None) -> list[tuple[str, str]]:
    """Return the ordered pairs (a, b) of pairwise prompting over `labels` + `none`, both presentation
    orders of each chosen unordered pair, grouped by first item in label order (`none` last).

    `opponents` (config `generation.pairwise_opponents`): `all`, or k. When every label has at most k
    possible opponents (L <= k, or `all`) every pair is asked: (L+1) L ordered pairs. Otherwise (the
    pair budget for large L) each label is compared with `none`, which anchors q(l) = sigmoid(s_l -
    s_none) directly, and with at least k - 1 other labels drawn with `rng`: ceil((k-1)/2) rounds of a
    random cycle through all labels (a cycle edge is kept while one of its ends still needs opponents),
    then each label short of k - 1 gets random new opponents, preferring labels also short. So every
    label meets at least k items (`none` included), the comparison graph is connected through `none`,
    and about L (k + 1) / 2 unordered pairs are asked instead of L (L + 1) / 2: linear in L.
    Hand-written (no library samples comparison graphs); reproducible for a seeded `rng`.
    """
    options = list(labels) + [NONE_LABEL]
    n = len(labels)
    if opponents == "all" or n <= int(opponents):
        return [(a, b) for a in options for b in options if a != b]
    need = int(opponents) - 1
    if need < 0:
        raise ValueError(f"pairwise_opponents must be `all` or >= 1, got {opponents!r}")
    rng = rng or random.Random(0)
    chosen = {frozenset((i, n)) for i in range(n)}  # every label against none (index n)
    degree = [0] * n

    def add(i: int, j: int) -> None:
        chosen.add(frozenset((i, j)))
        degree[i] += 1
        degree[j] += 1

    for _ in range((need + 1) // 2):
        cycle = rng.sample(range(n), n)
        for pos, i in enumerate(cycle):
            j = cycle[(pos + 1) % n]
            if i != j and frozenset((i, j)) not in chosen and (degree[i] < need or degree[j] < need):
                add(i, j)
    for i in rng.sample(range(n), n):
        while degree[i] < need:
            free = [j for j in range(n) if j != i and frozenset((i, j)) not in chosen]
            short = [j for j in free if degree[j] < need]
            add(i, rng.choice(short or free))
    return [(options[i], options[j]) for i in range(n + 1) for j in range(n + 1)
            if i != j and frozenset((i, j)) in chosen]


def one_order(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> list[tuple[str, str]]:
    """Return the pairs (a, b) of `pairs` whose a comes before b in the order of `labels` + `none`, in the
    order of `pairs`: each unordered pair once, in the study's presentation order (the study asks
    itertools.combinations over its labels + none, so `none` is always b). Config
    `generation.pairwise_orders: one`; `pairs` holds both orders of every pair (`pairwise_pairs`)."""
    rank = {item: i for i, item in enumerate(list(labels) + [NONE_LABEL])}
    return [(a, b) for a, b in pairs if rank[a] < rank[b]]


def pairwise_keys(labels: Sequence[str], gen_cfg: Mapping[str, Any], seed: int) -> list[tuple[str, str]]:
    """Return the ordered pairs a pairwise run with `seed` asks, the same for every example: `pairwise_pairs`
    under config `generation.pairwise_opponents`, each pair in both orders or (`pairwise_orders: one`)
    once, `one_order`. `gen_cfg` is a validated `generation` block."""
    pairs = pairwise_pairs(labels, gen_cfg.get("pairwise_opponents", DEFAULT_PAIRWISE_OPPONENTS),
                           random.Random(f"pairwise_pairs:{seed}"))
    return one_order(pairs, labels) if gen_cfg["pairwise_orders"] == "one" else pairs


def _choice_run(model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, gen_cfg: Mapping[str, Any],
                seed: int, kind: str, progress: bool) -> tuple[list[str], list[list[float]], list, list[bool]]:
    """Shared body of unary and pairwise: demos, one shared-prefix prompt per example (its query text
    shortened where the prefix with the longest question and answer would not fit the model's context),
    probabilities, and which examples' texts were shortened."""
    demo_ids = choose_demos(data, spec, demo_rng("baseline", seed))
    demos = [data.pool[i] for i in demo_ids]
    rng = random.Random(f"{kind}:{seed}")
    if kind == "unary":
        marked = unary_demos(demos, data.label_set, rng)
        instruction = unary_instruction(spec, data.label_set)
        keys = list(data.label_set)
        questions = [unary_question(l) for l in keys]
        answers = UNARY_ANSWERS
    else:
        marked = pairwise_demos(demos, data.label_set, rng)
        instruction = pairwise_instruction(spec, data.label_set)
        keys = pairwise_keys(data.label_set, gen_cfg, seed)
        questions = [pairwise_question_parts(a, b) for a, b in keys]
        answers = PAIRWISE_ANSWERS
    longest = max(questions, key=lambda q: count_tokens(tokenizer, q if isinstance(q, str) else "".join(q), False))

    def whole(text: str) -> str:  # the longest prompt of an example: prefix, longest question, longest answer
        one = choice_prompt(spec, instruction, marked, text, [longest], answers, tokenizer)
        return one.prefix + "".join(one.suffixes[0]) + max(one.answer_texts, key=len)

    fitted = fit_queries([ex["text"] for ex in data.examples], whole, tokenizer, model.config,
                         int(gen_cfg["max_new_tokens"]), add_special_tokens=not uses_chat_template(spec, tokenizer),
                         where=describe_run(data, model))
    prompts = [choice_prompt(spec, instruction, marked, f.text, questions, answers, tokenizer) for f in fitted]
    bar = tqdm(total=len(prompts), desc=kind, unit="ex", disable=not progress)
    probs = choice_probabilities(
        model, tokenizer, [p.prefix for p in prompts], [p.suffixes for p in prompts],
        prompts[0].answer_texts if prompts else (), add_special_tokens=not uses_chat_template(spec, tokenizer),
        batch_size=int(gen_cfg["batch_size"]), progress=bar,
    )
    bar.close()
    return demo_ids, probs, keys, [f.truncated for f in fitted]


def unary(model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, gen_cfg: Mapping[str, Any],
          seed: int, progress: bool = True) -> GenerationOutput:
    """P(reasonable) per example and label (no `none`), the prompt prefix shared over labels."""
    demo_ids, probs, keys, cut = _choice_run(model, tokenizer, data, spec, gen_cfg, seed, "unary", progress)
    return GenerationOutput([
        {"id": ex["id"], "demo_ids": list(demo_ids), "truncated": t, "p_reasonable": dict(zip(keys, p))}
        for ex, p, t in zip(data.examples, probs, cut)
    ])


def pairwise(model: Any, tokenizer: Any, data: TaskData, spec: PromptSpec, gen_cfg: Mapping[str, Any],
             seed: int, progress: bool = True) -> GenerationOutput:
    """P(a) per example and ordered label pair (`none` included; the pairs of `pairwise_keys`: both
    presentation orders, or one under `generation.pairwise_orders: one`; the same for every example)."""
    demo_ids, probs, keys, cut = _choice_run(model, tokenizer, data, spec, gen_cfg, seed, "pairwise", progress)
    return GenerationOutput([
        {"id": ex["id"], "demo_ids": list(demo_ids), "truncated": t,
         "pairs": [{"a": a, "b": b, "p_a": p_a} for (a, b), p_a in zip(keys, p)]}
        for ex, p, t in zip(data.examples, probs, cut)
    ])


MODES = {"baseline": baseline, "icl_sweep": icl_sweep, "unary": unary, "pairwise": pairwise}


def run_prompting(model: Any, tokenizer: Any, data: TaskData, prompting: str, spec: PromptSpec,
                  gen_cfg: Mapping[str, Any], seed: int, progress: bool = True) -> GenerationOutput:
    """Seed torch and run one prompting mode on the subset; return its records (and hidden states).
    `gen_cfg`: the config `generation` block, as written or validated (the schema's defaults are filled
    in here; ConfigError names a bad key)."""
    if prompting not in MODES:
        raise ValueError(f"unknown prompting mode {prompting!r} (use one of {', '.join(MODES)})")
    gen_cfg = validate_block("generation", gen_cfg, "generation")
    torch.manual_seed(seed)
    return MODES[prompting](model, tokenizer, data, spec, gen_cfg, seed, progress=progress)


# ---- files --------------------------------------------------------------------------------------------
def write_generation(output: GenerationOutput, path: str | os.PathLike,
                     hidden_path: str | os.PathLike | None = None) -> None:
    """Write the records (JSONL) and, when a path is given, the hidden states, atomically."""
    write_generation_records(path, output.records)
    if hidden_path is not None:
        if output.hidden is None:
            raise ValueError("a hidden-state file was asked for but this mode produces none")
        write_hidden(hidden_path, output.hidden, [r["id"] for r in output.records], output.layers or [])


def generate_file(
    model_dir: str | os.PathLike,
    data_files: Mapping[str, str],
    prompting: str,
    subset: str,
    seed: int,
    gen_cfg: Mapping[str, Any],
    prompt_cfg: Mapping[str, Any],
    model_cfg: Mapping[str, Any],
    output: str | os.PathLike,
    hidden_output: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> GenerationOutput:
    """The generation rule: load the model folder and data, run `prompting` on `subset` with `seed`,
    write the generation file (and the hidden-state file for baseline); return what was written."""
    from .hf import set_threads
    from .models import load_causal_lm

    set_threads(threads)
    data = load_task_data(data_files, subset)
    spec = PromptSpec.from_config(prompt_cfg)
    model, tokenizer = load_causal_lm(model_dir, device=device, dtype=model_cfg["dtype"],
                                      load_in_4bit=bool(model_cfg["load_in_4bit"]))
    log.info("%s on %s/%s: %d examples, %d demos in the pool, seed %d", prompting, subset,
             model_dir, len(data.examples), len(data.pool), seed)
    result = run_prompting(model, tokenizer, data, prompting, spec, gen_cfg, int(seed))
    write_generation(result, output, hidden_output if prompting == "baseline" else None)
    return result
