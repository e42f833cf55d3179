"""Estimate files (docs/formats.md, "Estimates"): the one writer and the one reader of each.

- `estimates/{dataset}/{model}/{regime}/{estimator}.parquet`: every seed and evaluation subset of one
  estimator of one run, long format `seed, subset, id, label, q` (`write_estimates`, `read_estimates`).
- `estimates/{dataset}/{model}/{regime}/linear_probe.layers.csv`: the probes of every layer, columns
  `seed, subset, layer, id, label, q` (`write_layer_estimates`, `read_layer_estimates`).
- `estimates/{dataset}/{model}/{regime}/linear_probe.own_labels.csv`: probes of the model's own emitted
  labels, columns `seed, variant, label, f1, accuracy, n_pos` (`write_own_labels`).

A job that writes one of these files computes every seed and subset first and writes the file once,
atomically.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import write_parquet
from .tables import read_table_csv, write_table_csv

ESTIMATE_COLUMNS = ["seed", "subset", "id", "label", "q"]
LAYER_COLUMNS = ["seed", "subset", "layer", "id", "label", "q"]
OWN_LABEL_COLUMNS = ["seed", "variant", "label", "f1", "accuracy", "n_pos"]
SUBSET_ORDER = ("main", "dev")
"""Evaluation subsets an estimate file holds, in file order."""


def estimate_frame(ids: Sequence[str], names: Sequence[str], q: np.ndarray) -> pd.DataFrame:
    """Return the long estimate frame (id, label, q) of one subset and seed for a matrix q[example, name]:
    rows sorted by id, then in the order of `names` within each id (ids unique, q finite in [0, 1])."""
    q = np.asarray(q, dtype=np.float64).reshape(len(ids), len(names))
    if len(set(ids)) != len(ids):
        raise ValueError("estimate_frame: ids must be unique")
    if not np.all(np.isfinite(q)) or q.min(initial=0.0) < 0.0 or q.max(initial=0.0) > 1.0:
        raise ValueError("estimate_frame: q must be finite and in [0, 1]")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    return pd.DataFrame({
        "id": np.repeat(np.asarray([str(ids[i]) for i in order], dtype=object), len(names)),
        "label": np.tile(np.asarray([str(n) for n in names], dtype=object), len(ids)),
        "q": q[order].reshape(-1),
    })


def _stack(parts: Mapping[tuple[str, int], pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """One frame of `parts` ({(subset, seed): frame}) with seed and subset columns first, in seed then
    SUBSET_ORDER order (each part's own row order kept)."""
    def rank(key: tuple[str, int]) -> tuple[int, int, str]:
        subset, seed = key
        return int(seed), SUBSET_ORDER.index(subset) if subset in SUBSET_ORDER else len(SUBSET_ORDER), subset

    frames = [frame.assign(seed=int(seed), subset=subset) for (subset, seed), frame in
              sorted(parts.items(), key=lambda item: rank(item[0]))]
    if not frames:
        raise ValueError("no estimates to write")
    out = pd.concat(frames, ignore_index=True)
    out["seed"] = out["seed"].astype("int64")
    return out[list(columns)]


def write_estimates(path: str | os.PathLike, parts: Mapping[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Write the estimate file `path` from `parts` ({(subset, seed): id/label/q frame}), atomically, and
    return the written frame (ESTIMATE_COLUMNS)."""
    frame = _stack(parts, ESTIMATE_COLUMNS)
    write_parquet(path, frame)
    return frame


def read_estimate_table(path: str | os.PathLike) -> pd.DataFrame:
    """Return every row of an estimate file (ESTIMATE_COLUMNS); DataError names an unreadable file or a
    missing column."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(path, f"not a readable parquet file ({err})") from None
    for column in ESTIMATE_COLUMNS:
        if column not in frame.columns:
            raise DataError(path, "missing column", field=column)
    return frame


def read_estimates(path: str | os.PathLike, labels: Sequence[str], subset: str, seed: int) \
        -> tuple[list[str], np.ndarray]:
    """Return (ids sorted, q of shape (n, L)) of one subset and seed of an estimate file.

    Rows for `none` or other extra labels are ignored; no rows for the subset and seed, a missing
    (id, label) row, a duplicate, or a q that is not a number in [0, 1] raises DataError naming the file
    and field (labeldist.metrics.estimates_matrix)."""
    return select_estimates(read_estimate_table(path), labels, subset, seed, source=path)


def select_estimates(table: pd.DataFrame, labels: Sequence[str], subset: str, seed: int,
                     source: str | os.PathLike = "estimates") -> tuple[list[str], np.ndarray]:
    """Return (ids sorted, q of shape (n, L)) of one subset and seed of an estimate table already read
    (read_estimate_table), with read_estimates' errors naming `source`."""
    part = table[(table["subset"] == subset) & (table["seed"] == int(seed))]
    if part.empty:
        raise DataError(source, f"no rows for subset {subset!r} and seed {seed}", field="seed")
    return estimates_matrix(part, labels, source=f"{source} (subset {subset}, seed {seed})")


def estimates_matrix(frame: pd.DataFrame, labels: Sequence[str], source: str = "estimates") \
        -> tuple[list[str], np.ndarray]:
    """Return (ids sorted, q of shape (n, L)) from a long id/label/q frame of one subset and seed.

    Rows for `none` or other extra labels are ignored; a missing (id, label) row, a duplicate, or a q
    that is not a number in [0, 1] raises DataError naming `source` and the field.
    """
    for column in ("id", "label", "q"):
        if column not in frame.columns:
            raise DataError(source, "missing column", field=column)
    frame = frame[frame["label"].isin(list(labels))]
    if frame.empty:
        raise DataError(source, f"no rows for the labels {list(labels)}", field="label")
    q = pd.to_numeric(frame["q"], errors="coerce")
    bad = frame[q.isna() | (q < 0) | (q > 1)]
    if not bad.empty:
        row = bad.iloc[0]
        value = row["q"]
        shown = repr(float(value)) if isinstance(value, (int, float, np.number)) else repr(value)
        raise DataError(source, f"q must be a number in [0, 1], got {shown} "
                                f"(id {row['id']!r}, label {row['label']!r})", field="q")
    dupes = frame.duplicated(["id", "label"])
    if dupes.any():
        row = frame[dupes].iloc[0]
        raise DataError(source, f"duplicate row for id {row['id']!r}, label {row['label']!r}", field="label")
    wide = frame.assign(q=q, id=frame["id"].astype(str)).pivot(index="id", columns="label", values="q")
    wide = wide.reindex(columns=list(labels)).sort_index()
    if wide.isna().any().any():
        where = wide.isna().stack()
        ex_id, label = where[where].index[0]
        raise DataError(source, f"no q for id {ex_id!r}, label {label!r} "
                                f"({int(where.sum())} missing rows in all)", field="q")
    return list(wide.index), wide.to_numpy(dtype=float)


def write_layer_estimates(path: str | os.PathLike, parts: Mapping[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Write the per-layer probe estimates `path` (CSV, LAYER_COLUMNS) from `parts` ({(subset, seed):
    layer/id/label/q frame}), atomically; return the written frame."""
    frame = _stack(parts, LAYER_COLUMNS)
    write_table_csv(path, frame)
    return frame


def read_layer_estimates(path: str | os.PathLike) -> pd.DataFrame:
    """Return a per-layer probe estimates file (LAYER_COLUMNS); DataError names the file, line and field of
    an unreadable file, a missing column or a layer that is not an integer."""
    frame = read_table_csv(path, required=LAYER_COLUMNS, dtype={"id": str, "label": str, "subset": str})
    for column in ("seed", "layer"):
        value = pd.to_numeric(frame[column], errors="coerce")
        bad = value.isna() | (value % 1 != 0)
        if bad.any():
            raise DataError(path, f"{column} must be an integer", line=int(np.flatnonzero(bad)[0]) + 2, field=column)
        frame[column] = value.astype(int)
    return frame


def write_own_labels(path: str | os.PathLike, parts: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Write the own-label probe scores `path` (CSV, OWN_LABEL_COLUMNS) from `parts` ({seed: frame}),
    atomically; return the written frame."""
    frame = pd.concat([f.assign(seed=int(seed)) for seed, f in sorted(parts.items())], ignore_index=True)
    frame = frame[OWN_LABEL_COLUMNS]
    write_table_csv(path, frame)
    return frame


__all__ = [
    "ESTIMATE_COLUMNS", "LAYER_COLUMNS", "OWN_LABEL_COLUMNS", "SUBSET_ORDER", "estimate_frame", "estimates_matrix",
    "read_estimate_table", "read_estimates", "read_layer_estimates", "select_estimates", "write_estimates",
    "write_layer_estimates", "write_own_labels",
]


