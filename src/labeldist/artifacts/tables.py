"""The CSV files one stage writes and another reads (docs/formats.md): the result tables
(`tables/alignment.csv`, `tables/classification.csv`, `tables/findings.csv`, read by the figures) and a
finetuned model's `training_log.csv` (read by figure `training_curves`): the one writer and the one
reader of each.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd

from ..errors import DataError
from ..io import atomic_path

TRAINING_LOG = "training_log.csv"


def write_table_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write `frame` as a CSV file without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_table_csv(path: str | os.PathLike, required: Sequence[str] = (),
                   dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Return a CSV file written by `write_table_csv` (columns typed by `dtype` where given); DataError names
    the file when it is missing or not readable, and the first of the `required` columns it lacks."""
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable CSV file ({err})") from None
    for column in required:
        if column not in frame.columns:
            raise DataError(path, "missing column", field=column)
    return frame


def write_training_log(folder: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a trainer's log (labeldist.hf.training_log_frame) as `folder/training_log.csv`."""
    write_table_csv(os.path.join(folder, TRAINING_LOG), frame)


def read_training_log(folder: str | os.PathLike) -> pd.DataFrame:
    """Return `folder/training_log.csv` as written (one row per logged step); DataError names the file
    when it is missing, unreadable or lacks the `step` column."""
    return read_table_csv(os.path.join(folder, TRAINING_LOG), required=("step",))


__all__ = ["TRAINING_LOG", "read_table_csv", "read_training_log", "write_table_csv", "write_training_log"]
