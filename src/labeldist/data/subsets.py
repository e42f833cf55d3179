"""Fixed evaluation id subsets (docs/formats.md, `subsets.json`).

- `main`: a seeded sample of the test split (`main_size`);
- `multi`: test examples with >= 2 gold labels, a seeded sample when more than `multi_size`;
- `dev`: a seeded sample of the dev split (`dev_size`), for Platt scaling and threshold tuning;
- `train`: a seeded sample of the train split (`train_size`), the probes' training features.
  **Decision:** capped at half the train split, so that demonstrations (drawn from the train split
  minus this subset) always remain.

Each subset has its own random stream (seed, subset index), so changing one size leaves the other
subsets unchanged. Ids are listed in split-file order.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..artifacts.splits import SUBSET_NAMES
from .records import Example, LabelledData
SIZE_KEYS = ("main_size", "multi_size", "dev_size", "train_size")


def seeded_sample(examples: Sequence[Example], size: int, seed: int, stream: int) -> list[str]:
    """Return the ids of min(size, n) examples drawn without replacement, in their original order."""
    n = len(examples)
    if size >= n:
        return [ex.id for ex in examples]
    idx = np.sort(np.random.default_rng([seed, stream]).choice(n, size=size, replace=False))
    return [examples[i].id for i in idx]


def make_subsets(data: LabelledData, cfg: Mapping[str, Any]) -> dict[str, list[str]]:
    """Return {"main", "multi", "dev", "train": [ids]} for `data` from config `subsets` sizes and seed."""
    sizes = {k: int(cfg[k]) for k in SIZE_KEYS}
    seed = int(cfg["seed"])
    test, dev, train = data.splits["test"], data.splits["dev"], data.splits["train"]
    multi = [ex for ex in test if len(ex.labels) >= 2]
    return {
        "main": seeded_sample(test, sizes["main_size"], seed, SUBSET_NAMES.index("main")),
        "multi": seeded_sample(multi, sizes["multi_size"], seed, SUBSET_NAMES.index("multi")),
        "dev": seeded_sample(dev, sizes["dev_size"], seed, SUBSET_NAMES.index("dev")),
        "train": seeded_sample(train, min(sizes["train_size"], len(train) // 2), seed,
                               SUBSET_NAMES.index("train")),
    }
