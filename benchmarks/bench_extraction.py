"""Speed of the core measurement, side by side in one run, on the tiny model.

Measured (examples per second, median over interleaved repeats):
- `plain`: batched HF `generate` with `output_logits`/`output_scores`, the same prompts, stopping and
  max_new_tokens as ours, nothing else;
- `extraction`: our baseline extraction (generate + label slots + first-token and whole-label
  distributions + hidden states), marginal off;
- `marginal`: the same with the marginal search on (reported separately);
- `unary` and `pairwise`: our shared-prefix unary (L prompts per example) and pairwise (L+1 choose 2,
  both orders) prompts, L = 7 labels.

Targets (time ratios; issue 25): extraction / plain <= 1.10, unary / extraction <= 1.5, pairwise /
extraction <= 3, marginal / extraction <= 1.3. The last line printed is exactly
`extraction_overhead=<r> unary_vs_baseline=<r> pairwise_vs_baseline=<r> marginal_vs_extraction=<r>`.

On a GPU the forwards get cheap and the host's work per example is what is left, so this tiny model on
one CPU thread is the proxy for it. Where the time goes after issue 25 (cProfile, 64 examples; the
shares are of each run's time, profiler overhead included, which inflates the Python parts):
- unary: the model's forwards ~88% (encoding the prefixes ~2/3 of the run, the label suffixes the
  rest); tokenization ~4%: each prompt prefix is tokenized once and each prompt string only from the
  prefix's last word on (`scoring.split_tokenizations`; before, every question re-tokenized the whole
  prompt: 7 full tokenizations per example, and pairwise 56, ~45% of pairwise's time then).
- pairwise: the forwards ~76% (a 175-token prefix and 272 suffix-tree nodes per example against
  extraction's 132 + ~5 tokens: the ratio is bounded below by about that token ratio, ~3.3, unless
  fewer tokens are scored or packed differently, which would change the numbers); trie packing (`_TriePacker`, a dict lookup per suffix token and
  five list appends per new node) ~10%; tail tokenization ~6%; tree layout and masks ~1%; one softmax
  per suffix ~1%.
- marginal search: per depth one packed forward over the frontier paths (their tokens, ~1/3 of the
  prompt's, are most of what it adds: about 1.2-1.3x extraction from the forwards alone on this
  machine); on the host per frontier path a Request, its trie insert and a float64 exp over its
  choices (kept per path: batching it could change a probability's last bit), per tree a gather and
  logsumexp over the vocabulary, and the Extension of kept paths (`build_extension`, a loop per node).
- extraction: HF `generate` (stop strings, per-step logits) is nearly all of it; our scoring pass is
  one node per example (the hidden state) plus the labels not already generated.

Usage: .venv/bin/python benchmarks/bench_extraction.py [--model results/models/tiny/base] [--examples 64]
Without --model (and without results/models/tiny/base), or with --build, a tiny model is built and briefly
pretrained here; its tokenizer and corpus include unary and pairwise prompts, so `reasonable`, ` b` etc.
are single tokens as in a real LLM's vocabulary (the workflow's tiny tokenizer spells them in pieces,
which makes unary/pairwise prompts several times longer in tokens).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from labeldist.config import default_block  # noqa: E402
from labeldist.extraction import ExtractionSettings, build_label_table, extract, greedy_generate  # noqa: E402
from labeldist.models import (  # noqa: E402
    build_pretrain_corpus,
    build_tiny_llama,
    load_causal_lm,
    pretrain,
    train_tokenizer,
)
from labeldist.prompts import (  # noqa: E402
    NONE_LABEL,
    PAIRWISE_ANSWERS,
    UNARY_ANSWERS,
    PromptSpec,
    choice_documents,
    choice_prompt,
    pairwise_demos,
    pairwise_instruction,
    pairwise_question_parts,
    render_prompt,
    sample_demos,
    unary_demos,
    unary_instruction,
    unary_question,
)
from labeldist.scoring import choice_probabilities  # noqa: E402

LABELS = ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"]
WORDS = ("the day was long and I felt so happy then sad about my friend who left the town but we "
         "laughed at the old jokes and worried about tomorrow").split()
SPEC = PromptSpec.from_config(dict(
    instruction="Classify the following inputs into none, one, or multiple the following emotions per "
                "input: {labels}. Output exactly these emotions and no others.",
    k=4, label_format="comma",
))


def synthetic_records(n: int, seed: int) -> list[dict]:
    """Random texts with 0-3 labels, in the data stage's record shape."""
    rng = random.Random(seed)
    return [{"id": f"b{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(6, 14))),
             "labels": sorted(rng.sample(LABELS, rng.choice([0, 1, 1, 2, 2, 3])), key=LABELS.index)}
            for i in range(n)]


def build_model(steps: int) -> tuple:
    """A tiny Llama (the workflow's builder) pretrained for `steps` on prompt-format documents: label
    lists, and (a quarter) unary and pairwise prompts, so their words are tokens of the vocabulary."""
    records = synthetic_records(400, seed=1)
    docs = build_pretrain_corpus(records, LABELS, SPEC, n_docs=steps * 12, seed=0)
    docs += choice_documents([(r["text"], r["labels"]) for r in records], LABELS, SPEC, steps * 4,
                             random.Random(0))
    random.Random(0).shuffle(docs)
    tok = train_tokenizer(docs, 1024)
    cfg = dict(hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
               max_position_embeddings=512)
    model = build_tiny_llama(tok, cfg, seed=0)
    pretrain(model, tok, docs, steps=steps, batch_size=16, lr=3e-3, seed=0, log_every=10 ** 9)
    return model.eval(), tok


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder (default: results/models/tiny/base if present)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--build", action="store_true",
                        help="build the tiny model here even if results/models/tiny/base exists")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    default = REPO / "results" / "models" / "tiny" / "base"
    path = args.model or (str(default) if (default / "config.json").exists() and not args.build else None)
    if path:
        model, tok = load_causal_lm(path, device="cpu", dtype="float32")
        print(f"model: {path}")
    else:
        model, tok = build_model(args.pretrain_steps)
        print(f"model: built here ({args.pretrain_steps} pretraining steps)")
    n_params = sum(p.numel() for p in model.parameters())

    pool = synthetic_records(200, seed=2)
    queries = synthetic_records(args.examples, seed=3)
    demo_ids = sample_demos([(r["id"], r["labels"]) for r in pool], SPEC.k, SPEC.demo_sampling, LABELS,
                            random.Random(0), SPEC.multilabel_ratio)
    by_id = {r["id"]: r for r in pool}
    demos = [(by_id[i]["text"], by_id[i]["labels"]) for i in demo_ids]
    prompts = [render_prompt(SPEC, LABELS, demos, q["text"], tok) for q in queries]
    table = build_label_table(tok, SPEC, LABELS)
    base = ExtractionSettings.from_config({**default_block("generation"), "max_new_tokens": args.max_new_tokens,
                                           "batch_size": args.batch_size, "hidden_layers": "all"},
                                          marginal=False, hidden=True)
    with_marginal = ExtractionSettings(**{**base.__dict__, "marginal": True})
    pad_id = tok.pad_token_id

    def plain():
        for lo in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[lo : lo + args.batch_size], return_tensors="pt", padding=True)
            greedy_generate(model, tok, enc, SPEC, base, pad_id)  # output_logits, return_dict_in_generate

    def ours(settings):
        return lambda: extract(model, tok, prompts, SPEC, LABELS, settings, table=table, progress=False)

    rng = random.Random(0)
    u_demos = unary_demos(demos, LABELS, rng)
    p_demos = pairwise_demos(demos, LABELS, rng)
    options = LABELS + [NONE_LABEL]
    pairs = [(a, b) for a in options for b in options if a != b]
    u_prompts = [choice_prompt(SPEC, unary_instruction(SPEC, LABELS), u_demos, q["text"],
                               [unary_question(l) for l in LABELS], UNARY_ANSWERS, tok) for q in queries]
    p_prompts = [choice_prompt(SPEC, pairwise_instruction(SPEC, LABELS), p_demos, q["text"],
                               [pairwise_question_parts(a, b) for a, b in pairs], PAIRWISE_ANSWERS, tok)
                 for q in queries]

    def choice(ps):
        return lambda: choice_probabilities(model, tok, [p.prefix for p in ps], [p.suffixes for p in ps],
                                            ps[0].answer_texts, batch_size=args.batch_size)

    runs = {"plain": plain, "extraction": ours(base), "marginal": ours(with_marginal),
            "unary": choice(u_prompts), "pairwise": choice(p_prompts)}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up (caches, stop-string tables, allocator)
            fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    results = extract(model, tok, prompts, SPEC, LABELS, base, table=table, progress=False)
    n_tok = statistics.mean(r.record["n_tokens"] for r in results)
    n_steps = statistics.mean(len(r.record["steps"]) for r in results)

    def n_ids(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def choice_tokens(p) -> str:
        distinct = {parts[: i + 1] for parts in p.suffixes for i in range(len(parts))}
        suffix = sum(n_ids(key[-1]) for key in distinct)  # shared parts run once (score_trees)
        return f"{n_ids(p.prefix)} + {suffix} suffix tokens, answers {[n_ids(a) for a in p.answer_texts]} tokens"

    print(f"{n_params} parameters, {args.examples} examples, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), {args.repeats} repeats")
    print(f"per example: baseline prompt ~{statistics.mean(n_ids(p) for p in prompts):.0f} tokens, "
          f"{n_tok:.1f} generated tokens, {n_steps:.1f} label steps; "
          f"unary {choice_tokens(u_prompts[0])}; pairwise {choice_tokens(p_prompts[0])}")
    for name in runs:
        print(f"  {name:<11} {args.examples / med[name]:8.1f} examples/s   "
              f"(median {med[name]:.3f} s, min {min(times[name]):.3f} s)")
    print(f"marginal search cost: {med['marginal'] / med['extraction']:.2f}x extraction without it")
    print(f"extraction_overhead={med['extraction'] / med['plain']:.3f} "
          f"unary_vs_baseline={med['unary'] / med['extraction']:.3f} "
          f"pairwise_vs_baseline={med['pairwise'] / med['extraction']:.3f} "
          f"marginal_vs_extraction={med['marginal'] / med['extraction']:.3f}")


if __name__ == "__main__":
    main()
