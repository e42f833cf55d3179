"""Metrics files (docs/formats.md, "Metrics and tables"): `metrics/{dataset}/{model}/{regime}.json`, a
JSON list with one metrics object per estimator and seed of a run. One writer (`write_metrics`, the
evaluate rules) and one reader (`read_metric_files`: the tables, the findings, the calibration figure).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import DataError
from ..io import read_json, write_json

KEYS = ["dataset", "model", "regime", "estimator"]
"""The keys that name the run and estimator of a metrics object (one row of the tables)."""


def write_metrics(path: str | os.PathLike, results: Sequence[Mapping[str, Any]]) -> None:
    """Write the metrics objects of one run (`labeldist.metrics.run_metrics`, seeds in order) atomically."""
    write_json(path, [dict(r) for r in results])


def read_metric_files(paths: Iterable[str | Path]) -> list[dict]:
    """Return the metrics objects of every metrics file, file by file in the order of each file (a file
    is a JSON list with one object per estimator and seed, docs/formats.md); each object gets `_path`.
    DataError names a file that is not such a list, or the object and key missing."""
    out = []
    for path in paths:
        objs = read_json(path)
        if not isinstance(objs, list):
            raise DataError(path, f"expected a JSON list of metrics objects, found {type(objs).__name__}")
        for i, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise DataError(path, f"expected a metrics object, found {type(obj).__name__}", field=f"[{i}]")
            for key in [*KEYS, "seed", "alignment", "classification"]:
                if key not in obj:
                    raise DataError(path, "missing key", field=f"[{i}].{key}")
            obj["_path"] = str(path)
            out.append(obj)
    return out


__all__ = ["KEYS", "read_metric_files", "write_metrics"]
