"""Rebuild data/mfrc/study_splits.csv, the study's MFRC split file, from the annotator-fraction JSONL
that carries the study's split of every comment (id, split, text, distribution).

The file lists no text, only `id` = labeldist.data.mfrc.text_id(text) ("mfrc-" + 12 hex digits of the
SHA-1 of the text without edge spaces) and `split`, so that the per-annotator hub release
(USC-MOLA-Lab/MFRC, final_mfrc_data.csv: no comment ids) can be joined to it by text.

    python data/mfrc/make_study_splits.py ../shared/data/mfrc/mfrc_annotator_fractions.jsonl
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from labeldist.data.mfrc import text_id  # noqa: E402

OUT = Path(__file__).with_name("study_splits.csv")


def main(source: str) -> None:
    rows: dict[str, str] = {}
    with open(source, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                key = text_id(obj["text"])
                if rows.get(key, obj["split"]) != obj["split"]:
                    raise SystemExit(f"{source}: text of id {obj['id']} is in two splits")
                rows[key] = obj["split"]
    with open(OUT, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "split"])
        writer.writerows(sorted(rows.items()))
    print(f"wrote {OUT} ({len(rows)} comments)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mfrc/mfrc_annotator_fractions.jsonl")
