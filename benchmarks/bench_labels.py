"""Cost per example as the label set grows (L = 7, 28, 120), every prompting mode, ours against the naive
approach that re-runs the whole prompt for every label (or pair), printed side by side in one run.

For each L, on the synthetic generator's data (the 7 study emotions; `many_label_names(L)` two-word labels
for 28 and 120) and one tiny Llama built and briefly pretrained here on prompts of all three label sets:
- `plain`: HF `generate` (greedy, `output_logits`), nothing else: the floor of any generation;
- `baseline`: our baseline prompting (generate + label slots + first-token and whole-label
  distributions of all L+1 labels at every label step on generate's own KV cache + hidden states);
  `naive_baseline`: the same generate, then every label's whole-label score at every step by a full
  forward of prompt + generated prefix + label;
- `unary`: our unary prompting (one prompt prefix per example, the L label questions packed behind it);
  `naive_unary`: one full forward per (example, label) prompt;
- `pairwise`: our pairwise prompting with the default pair budget (config `generation.pairwise_opponents`
  11: all pairs up to 11 labels, about 6 per label beyond, `labeldist.generation.pairwise_pairs`);
  `naive_pairwise`: one full forward per (example, ordered pair) prompt of the same pairs;
  `naive_pairwise_all` (reported, not a target): every ordered pair, (L+1) L prompts.
Ours: median over interleaved repeats. Naive forwards are batched (`--batch-size`, left-padded) and timed on
up to `--naive-sample` sequences per mode and L, then scaled to their full count (they cost the same per
sequence of the same length; 120 labels x 1,440 pair prompts would take minutes to run in full).

Ratios are seconds per example over our `baseline` at the same L (whose prompt lists the same L labels).
Target: unary at L = 120 <= 10x baseline, where naive unary costs about L x.
The last line is `name=value` pairs: `{mode}_L{L}_vs_baseline` for ours and `naive_{mode}_L{L}_vs_baseline`
for the naive counterparts, then `baseline_L120_vs_L7` (how baseline itself grows with L) and, at L = 120,
`{mode}_L120_vs_plain` (against generation alone, a stricter denominator than our baseline).

Usage: .venv/bin/python benchmarks/bench_labels.py [--examples 8] [--repeats 3] [--threads 1]
       [--save-model DIR | --model DIR]   (reuse a model built by an earlier run)
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

from labeldist.data import load_labelled_data  # noqa: E402
from labeldist.data.synthetic import many_label_names  # noqa: E402
from labeldist.config import default_block  # noqa: E402
from labeldist.extraction import ExtractionSettings, build_label_table, extract, greedy_generate  # noqa: E402
from labeldist.generation import DEFAULT_PAIRWISE_OPPONENTS, pairwise_pairs  # noqa: E402
from labeldist.models import (  # noqa: E402
    build_pretrain_corpus,
    build_tiny_llama,
    load_causal_lm,
    pretrain,
    train_tokenizer,
)
from labeldist.prompts import (  # noqa: E402
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

SIZES = (7, 28, 120)
EMOTIONS = ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"]
SPEC = PromptSpec.from_config(dict(
    instruction="Classify the following inputs into none, one, or multiple the following emotions per "
                "input: {labels}. Output exactly these emotions and no others.",
    k=4, label_format="comma",
))


def label_set(n: int) -> list[str]:
    """The benchmark's label set of size n: the study's 7 emotions, else n generated two-word names."""
    return list(EMOTIONS) if n == len(EMOTIONS) else many_label_names(n)


def records(n_labels: int) -> dict[str, list[dict]]:
    """Synthetic train and test records (data stage shape) over `label_set(n_labels)`."""
    data = load_labelled_data("bench", {"loader": "synthetic", "synthetic": {"labels": label_set(n_labels), "n_train": 400, "n_dev": 10,
                                                  "n_test": 64, "seed": n_labels}})
    return {s: [ex.to_record() for ex in data.splits[s]] for s in ("train", "test")}


def build_model(steps: int) -> tuple:
    """A tiny Llama (the workflow's builder, 1,024 positions) pretrained for `steps` on prompt-format
    documents of all three label sets, a quarter of them unary/pairwise prompts."""
    docs: list[str] = []
    for n in SIZES:
        train = records(n)["train"]
        labels = label_set(n)
        docs += build_pretrain_corpus(train, labels, SPEC, n_docs=steps * 4, seed=n)
        docs += choice_documents([(r["text"], r["labels"]) for r in train], labels, SPEC, steps,
                                 random.Random(n))
    random.Random(0).shuffle(docs)
    tok = train_tokenizer(docs, 1024)
    cfg = dict(hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
               max_position_embeddings=1024)
    model = build_tiny_llama(tok, cfg, seed=0)
    pretrain(model, tok, docs, steps=steps, batch_size=16, lr=3e-3, seed=0, log_every=10 ** 9)
    return model.eval(), tok


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def naive_seconds(model, tok, sequences: list[list[int]], batch_size: int, sample: int,
                  rng: random.Random) -> float:
    """Seconds to run every sequence through one plain full forward (left-padded batches), measured on
    a random sample of at most `sample` of them and scaled to all."""
    if not sequences:
        return 0.0
    picked = rng.sample(sequences, min(sample, len(sequences)))
    pad = tok.pad_token_id
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(picked), batch_size):
            batch = picked[lo : lo + batch_size]
            width = max(len(s) for s in batch)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in batch])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in batch])
            model(input_ids=ids, attention_mask=mask).logits[:, -1]
    return (time.perf_counter() - start) * len(sequences) / len(picked)


def measure(model, tok, n_labels: int, args) -> dict[str, float]:
    """Seconds per example of every mode at one label-set size (ours: median of interleaved repeats)."""
    labels = label_set(n_labels)
    data = records(n_labels)
    pool = data["train"]
    queries = data["test"][: args.examples]
    demo_ids = sample_demos([(r["id"], r["labels"]) for r in pool], SPEC.k, SPEC.demo_sampling, labels,
                            random.Random(0), SPEC.multilabel_ratio)
    by_id = {r["id"]: r for r in pool}
    demos = [(by_id[i]["text"], by_id[i]["labels"]) for i in demo_ids]
    prompts = [render_prompt(SPEC, labels, demos, q["text"], tok) for q in queries]
    table = build_label_table(tok, SPEC, labels)
    settings = ExtractionSettings.from_config({**default_block("generation"), "max_new_tokens": args.max_new_tokens,
                                               "batch_size": args.batch_size, "hidden_layers": "all"},
                                              marginal=False, hidden=True)
    rng = random.Random(0)
    u_demos, p_demos = unary_demos(demos, labels, rng), pairwise_demos(demos, labels, rng)
    pairs = pairwise_pairs(labels, DEFAULT_PAIRWISE_OPPONENTS, random.Random("pairwise_pairs:0"))
    u_prompts = [choice_prompt(SPEC, unary_instruction(SPEC, labels), u_demos, q["text"],
                               [unary_question(l) for l in labels], UNARY_ANSWERS, tok) for q in queries]
    p_prompts = [choice_prompt(SPEC, pairwise_instruction(SPEC, labels), p_demos, q["text"],
                               [pairwise_question_parts(a, b) for a, b in pairs], PAIRWISE_ANSWERS, tok)
                 for q in queries]

    def plain():
        for lo in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[lo : lo + args.batch_size], return_tensors="pt", padding=True)
            greedy_generate(model, tok, enc, SPEC, settings, tok.pad_token_id)

    def choice(ps):
        return lambda: choice_probabilities(model, tok, [p.prefix for p in ps], [p.suffixes for p in ps],
                                            ps[0].answer_texts, batch_size=args.batch_size)

    runs = {"plain": plain,
            "baseline": lambda: extract(model, tok, prompts, SPEC, labels, settings, table=table, progress=False),
            "unary": choice(u_prompts), "pairwise": choice(p_prompts)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    per_ex = {k: statistics.median(v) / len(queries) for k, v in times.items()}

    # naive: the sequences a re-run-the-prompt implementation runs, one full forward each
    results = extract(model, tok, prompts, SPEC, labels, settings, table=table, progress=False)
    whole_seqs = []
    for prompt, res in zip(prompts, results):
        ids = tok(prompt)["input_ids"]
        for t, step in enumerate(res.record["steps"]):
            prefix = ids + res.generated_ids[: step["position"]]
            whole_seqs += [prefix + list(label_ids) for label_ids in table.slot_ids(t)]

    def full(p, parts) -> list[int]:
        return tok(p.prefix + "".join(parts))["input_ids"]

    u_seqs = [full(p, parts) for p in u_prompts for parts in p.suffixes]
    p_seqs = [full(p, parts) for p in p_prompts for parts in p.suffixes]
    nrng = random.Random(1)
    n_q = len(queries)
    per_ex["naive_baseline"] = per_ex["plain"] + naive_seconds(
        model, tok, whole_seqs, args.batch_size, args.naive_sample, nrng) / n_q
    per_ex["naive_unary"] = naive_seconds(model, tok, u_seqs, args.batch_size, args.naive_sample, nrng) / n_q
    per_ex["naive_pairwise"] = naive_seconds(model, tok, p_seqs, args.batch_size, args.naive_sample, nrng) / n_q
    all_pairs = (n_labels + 1) * n_labels
    per_ex["naive_pairwise_all"] = per_ex["naive_pairwise"] * all_pairs / len(pairs)
    steps = sum(len(r.record["steps"]) for r in results) / n_q
    print(f"L={n_labels}: prompt ~{statistics.mean(len(tok(p)['input_ids']) for p in prompts):.0f} tokens, "
          f"{steps:.2f} label steps/example, unary {n_labels} questions, pairwise {len(pairs)} of "
          f"{all_pairs} ordered pairs, naive sequences: whole-label {len(whole_seqs)}, unary {len(u_seqs)}, "
          f"pairwise {len(p_seqs)} (timed on <= {args.naive_sample} each)", flush=True)
    return per_ex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-sample", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--model", help="a model folder saved by --save-model (skips building)")
    parser.add_argument("--save-model", help="save the model built here to this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.model:
        model, tok = load_causal_lm(args.model, device="cpu", dtype="float32")
        print(f"model: {args.model}")
    else:
        model, tok = build_model(args.pretrain_steps)
        print(f"model: built here ({args.pretrain_steps} pretraining steps, {time.perf_counter() - start:.0f} s)")
        if args.save_model:
            model.save_pretrained(args.save_model)
            tok.save_pretrained(args.save_model)
    print(f"{sum(p.numel() for p in model.parameters())} parameters, {args.examples} examples per L, batch "
          f"{args.batch_size}, {torch.get_num_threads()} thread(s), {args.repeats} repeats", flush=True)

    cost = {n: measure(model, tok, n, args) for n in SIZES}
    modes = ["plain", "baseline", "naive_baseline", "unary", "naive_unary", "pairwise", "naive_pairwise",
             "naive_pairwise_all"]
    print("\nseconds per example (x our baseline at the same L)")
    print(f"{'mode':<20}" + "".join(f"{'L=' + str(n):>22}" for n in SIZES))
    for mode in modes:
        print(f"{mode:<20}" + "".join(f"{cost[n][mode]:>12.4f} ({cost[n][mode] / cost[n]['baseline']:6.1f}x)"
                                      for n in SIZES))
    print("growth from L=7 to L=120 (ours / naive): " + ", ".join(
        f"{m} {cost[120][m] / cost[7][m]:.1f}x / {cost[120]['naive_' + m] / cost[7]['naive_' + m]:.1f}x"
        for m in ("baseline", "unary", "pairwise")))
    print(f"total {time.perf_counter() - start:.0f} s")
    pairs = []
    for mode in ("unary", "pairwise", "baseline"):
        for n in SIZES:
            if mode != "baseline":
                pairs.append((f"{mode}_L{n}_vs_baseline", cost[n][mode] / cost[n]["baseline"]))
            pairs.append((f"naive_{mode}_L{n}_vs_baseline", cost[n]["naive_" + mode] / cost[n]["baseline"]))
    pairs.append(("baseline_L120_vs_L7", cost[120]["baseline"] / cost[7]["baseline"]))
    for mode in ("baseline", "unary", "naive_unary", "pairwise"):  # against generation alone
        pairs.append((f"{mode}_L120_vs_plain", cost[120][mode] / cost[120]["plain"]))
    print(" ".join(f"{k}={v:.3f}" for k, v in pairs))


if __name__ == "__main__":
    main()
