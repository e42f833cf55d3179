"""Write the generation records of a small synthetic run on tiny models, to compare two checkouts byte
for byte (a change meant to leave every number alone, e.g. issue 25's host-side speedups).

Runs `generation.run_prompting` for baseline (with the marginal search and hidden states, both label
formats), unary and pairwise on 12 synthetic examples, half of whose texts end in whitespace,
punctuation or non-ASCII characters, with the tests' tiny model (tests/test_scoring.py: answers and
labels spelled in several tokens) and, with --model, a second model folder (e.g. the one
bench_extraction.py builds, where they are single tokens). JSON with sorted keys; hidden states
subsampled.

Usage (from the repository root, once per checkout):
  .venv/bin/python benchmarks/dump_records.py out.json [--model folder]; cmp before.json after.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from labeldist.generation import TaskData, run_prompting  # noqa: E402
from labeldist.models import load_causal_lm  # noqa: E402
from labeldist.prompts import PromptSpec  # noqa: E402
from tests.test_scoring import WORDS, tiny_model, tiny_tokenizer  # noqa: E402

AWKWARD = ["It was her.\n\n", "  spaced out  ", "Really?!", "two\nlines\n \n", "café déjà vu ", "tab\tend\t", "x",
           "¿qué? ñandú…"]
GEN = {"max_new_tokens": 8, "batch_size": 4, "marginal": True, "marginal_top_p": 0.99, "marginal_min_prob": 0.001,
       "marginal_max_depth": 3, "hidden_layers": "all"}


def task(labels: list[str], seed: int) -> TaskData:
    rng = random.Random(seed)

    def record(i: int, split: str) -> dict:
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 9)))
        if i % 2:
            text += rng.choice(AWKWARD)
        return {"id": f"{split}{i}", "text": text,
                "labels": sorted(rng.sample(labels, rng.choice([0, 1, 1, 2])), key=labels.index)}

    pool = {r["id"]: (r["text"], r["labels"]) for r in (record(i, "p") for i in range(20))}
    return TaskData(label_set=labels, examples=[record(i, "e") for i in range(12)], pool=pool, dataset="toy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    parser.add_argument("--model", help="a second model folder (labels: the bench's 7 emotions)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"test_tiny": (tiny_model(), tiny_tokenizer(), ["joy", "fear", "anger", "sadness"])}
    if args.model:
        model, tok = load_causal_lm(args.model, device="cpu", dtype="float32")
        models["model"] = (model, tok, ["joy", "optimism", "admiration", "surprise", "fear", "sadness", "anger"])
    out = {}
    for name, (model, tok, labels) in models.items():
        for fmt in ("comma", "json"):
            spec = PromptSpec.from_config(dict(instruction="Classify into none, one or several of: {labels}.",
                                               k=3, label_format=fmt))
            for mode in ("baseline", "unary", "pairwise") if fmt == "comma" else ("baseline",):
                res = run_prompting(model, tok, task(labels, 1), mode, spec, GEN, seed=3, progress=False)
                out[f"{name}/{fmt}/{mode}"] = res.records
                if res.hidden is not None:
                    out[f"{name}/{fmt}/{mode}/hidden"] = res.hidden.flatten()[::97].tolist()
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(out, fh, sort_keys=True)
    print({k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    main()
