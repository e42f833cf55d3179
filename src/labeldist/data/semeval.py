"""SemEval-2018 Task 1 E-c (English): 11 emotions, aggregated 0/1 labels, no annotator data
(p_ref_source "gold": alignment metrics are not meaningful, F1 only).

Files: 2018-E-c-En-{train,dev}.txt and, when present, the labelled test file
2018-E-c-En-test-gold.txt (or 2018-E-c-En-test.txt). The official unlabeled test release (every
label column `NONE`) is a DataError. **Decision:** without a labelled test file the test split is
carved from dev deterministically: a seeded split of the dev examples (config `split_seed`) puts
half of dev (rounded down) into test (sklearn `train_test_split`), the rest stays dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


from ..errors import DataError
from .readers import iter_csv, require_dir, require_file
from .records import Example, LabelledData, Origin, example_from_gold

EMOTIONS = ["anger", "anticipation", "disgust", "fear", "joy", "love", "optimism", "pessimism", "sadness",
            "surprise", "trust"]
FILES = {"train": "2018-E-c-En-train.txt", "dev": "2018-E-c-En-dev.txt"}
TEST_FILES = ["2018-E-c-En-test-gold.txt", "2018-E-c-En-test.txt"]


def read_semeval_file(path: Path) -> list[Example]:
    """Return the examples of one E-c TSV (header ID, Tweet, 11 emotions; 0/1 values). A file whose
    label columns are all NONE (the unlabeled test release) or any other value is a DataError."""
    rows = list(iter_csv(path, delimiter="\t", required=["ID", "Tweet"] + EMOTIONS))
    if rows and all(row[e].strip().upper() == "NONE" for _, row in rows for e in EMOTIONS):
        raise DataError(path, "every label column is NONE: this is the official unlabeled test release; "
                              "use the gold test file (2018-E-c-En-test-gold.txt) or remove it to carve "
                              "test from dev", line=2, field=EMOTIONS[0])
    out = []
    for lineno, row in rows:
        origin = Origin(str(path), lineno)
        gold = []
        for e in EMOTIONS:
            v = row[e].strip()
            if v not in ("0", "1"):
                raise origin.error(f"expected 0 or 1, got {v!r}", e)
            if v == "1":
                gold.append(e)
        out.append(example_from_gold(row["ID"], row["Tweet"], gold, EMOTIONS, origin,
                                     text_field="Tweet", id_field="ID"))
    return out


def carve_test(dev: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Return (dev, test): sklearn's seeded `train_test_split` sends floor(n/2) examples of `dev` to
    test; both keep file order."""
    from sklearn.model_selection import train_test_split  # heavy: imported when a split is drawn

    _, test_idx = train_test_split(list(range(len(dev))), test_size=len(dev) // 2, random_state=seed)
    chosen = set(test_idx)
    return ([ex for i, ex in enumerate(dev) if i not in chosen], [ex for i, ex in enumerate(dev) if i in chosen])


def load_semeval2018_ec(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return SemEval-2018 E-c from its folder: train and dev files, the labelled test file when
    present, else test carved from dev (see the module docstring)."""
    folder = require_dir(Path(str(cfg["path"])), f"datasets.{name}.path")
    splits = {s: read_semeval_file(require_file(folder / f, f"datasets.{name}.path")) for s, f in FILES.items()}
    test_file = next((folder / f for f in TEST_FILES if (folder / f).is_file()), None)
    seed = int(cfg["split_seed"])
    if test_file is not None:
        splits["test"] = read_semeval_file(test_file)
        note = f"test from {test_file.name}"
    else:
        splits["dev"], splits["test"] = carve_test(splits["dev"], seed)
        note = f"no labelled test file: test = half of dev by a seeded split (split_seed={seed})"
    return LabelledData(name, "semeval2018_ec", list(EMOTIONS), "multilabel", "gold", splits, notes=[note])
