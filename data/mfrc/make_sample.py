"""Rebuild data/mfrc/mfrc_sample.jsonl, the committed MFRC sample of the embedded default, from the full
annotator-fraction file (python data/mfrc/make_sample.py [path/to/mfrc_annotator_fractions.jsonl]).

The sample keeps the study's split membership and each comment's annotator fractions unchanged. It
draws, with a fixed seed, comments of at most MAX_CHARS characters (short comments keep the prompts of a
2-core CPU run small; ~90% of MFRC comments qualify): TRAIN train comments, DEV dev comments, and TEST
test comments of which MULTI have two or more gold foundations (share >= 0.5), so that the label-order
analysis has a multi-label subset (about 2% of MFRC test comments are multi-label; the sample
over-represents them). Output is in file order, byte-identical for the same input.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mfrc" / "mfrc_annotator_fractions.jsonl"
TARGET = Path(__file__).resolve().parent / "mfrc_sample.jsonl"
MAX_CHARS = 400
TRAIN, DEV, TEST, MULTI = 240, 60, 100, 20
SEED = 0


def is_multi(record: dict) -> bool:
    """True when two or more foundations (not `none`) have an annotator share >= 0.5."""
    return sum(1 for k, v in record["distribution"].items() if k != "none" and v >= 0.5) >= 2


def sample(records: list[dict]) -> list[dict]:
    """The sample's records, in file order."""
    rng = random.Random(SEED)
    short = [r for r in records if len(r["text"]) <= MAX_CHARS and r["text"].strip()]
    by_split = {s: [r for r in short if r["split"] == s] for s in ("train", "dev", "test")}
    chosen = rng.sample(by_split["train"], TRAIN) + rng.sample(by_split["dev"], DEV)
    multi = [r for r in by_split["test"] if is_multi(r)]
    single = [r for r in by_split["test"] if not is_multi(r)]
    chosen += rng.sample(multi, MULTI) + rng.sample(single, TEST - MULTI)
    keep = {r["id"] for r in chosen}
    return [r for r in records if r["id"] in keep]


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else SOURCE
    if not source.is_file():
        sys.exit(f"{source}: MFRC annotator-fraction file not found (pass its path as the argument)")
    with open(source, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    out = sample(records)
    with open(TARGET, "w", encoding="utf-8") as fh:
        for r in out:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} records to {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1:])
