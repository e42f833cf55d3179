"""The results layout (docs/formats.md): where each file between stages lives under the results folder.

One template per file kind is the single source of the layout: `build` fills a template (the workflow's
common.smk builds every rule's inputs and outputs with it, passing Snakemake wildcards such as
"{dataset}" through unchanged), and `parse` reads the fields back out of a path (the figures and
analyses label their rows with them). A template's fields are path segments: a value never holds "/".
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ..errors import DataError

DATA = "data/{dataset}/{name}"
"""A data stage file: `{split}.jsonl`, `labels.json` or `subsets.json`."""
BASE_MODEL = "models/{model}/base"
TUNED_MODEL = "models/{dataset}/{model}/{regime}"
"""An `sft` or `rl` model folder (a save_pretrained folder with training_log.csv)."""
DEMUX_MODEL = "models/{dataset}/{model}/demux/seed{seed}"
GENERATION = "generations/{dataset}/{model}/{regime}/{prompting}/{subset}/seed{seed}.jsonl"
HIDDEN = "generations/{dataset}/{model}/{regime}/baseline/{subset}/seed{seed}.hidden.safetensors"
ESTIMATE = "estimates/{dataset}/{model}/{regime}/{estimator}{suffix}"
"""An estimate parquet (`suffix` ".parquet") or a file the probe stage writes beside it."""
METRICS = "metrics/{dataset}/{model}/{regime}.json"

_INT_FIELDS = {"seed"}
_FIELD = re.compile(r"\{(\w+)\}")


def build(template: str, root: str | Path, **fields: Any) -> str:
    """Return `root`/`template` with its fields filled in (values used as given, wildcards included)."""
    return f"{root}/{template.format(**fields)}"


@functools.lru_cache(maxsize=None)
def _pattern(template: str, fixed: tuple[tuple[str, str], ...]) -> re.Pattern:
    values = dict(fixed)
    parts, last = [], 0
    for match in _FIELD.finditer(template):
        parts.append(re.escape(template[last:match.start()]))
        name = match.group(1)
        if name in values:
            parts.append(re.escape(values[name]))
        else:
            parts.append(rf"(?P<{name}>\d+)" if name in _INT_FIELDS else rf"(?P<{name}>[^/]+?)")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile(r"(?:^|/)" + "".join(parts) + "/?$")


def parse(template: str, path: str | Path, what: str, **fixed: str) -> dict[str, Any]:
    """Return the fields of `template` read from the end of `path` (seed as int), with the `fixed` fields
    required to hold the given values; DataError names the path when it does not follow the layout."""
    match = _pattern(template, tuple(sorted(fixed.items()))).search(Path(path).as_posix())
    if match is None:
        shown = template.format(**{**{n: "{" + n + "}" for n in _FIELD.findall(template)}, **fixed})
        raise DataError(path, f"not a {what} path ({shown})")
    meta: dict[str, Any] = match.groupdict()
    for name in _INT_FIELDS & meta.keys():
        meta[name] = int(meta[name])
    return meta


def parse_generation_path(path: str | Path) -> dict[str, Any]:
    """Return dataset, model, regime, prompting, subset and seed (int) from a generation file's path."""
    return parse(GENERATION, path, "generation file")


__all__ = ["BASE_MODEL", "DATA", "DEMUX_MODEL", "ESTIMATE", "GENERATION", "HIDDEN", "METRICS", "TUNED_MODEL",
           "build", "parse", "parse_generation_path"]
