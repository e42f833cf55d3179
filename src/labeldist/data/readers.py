"""Reading source files row by row with their physical line numbers, for DataErrors that point home.

Hand-written on top of the standard `csv` module (and `labeldist.io.iter_jsonl`): pandas and
`datasets` do not report the physical line of a bad record, which the error contract asks for.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence


from ..errors import DataError
from ..io import TEXT_ENCODING, decode_error, nul_error
from .records import MAX_TEXT_CHARS, SPLITS, Origin

CSV_FIELD_LIMIT = 1 << 24
"""Longest CSV/TSV field read (16 Mi characters; the csv module's default is 131,072). Longer texts
than records.MAX_TEXT_CHARS still get a DataError naming their line and field, from the example
builders; a field over this limit is a DataError naming the line."""
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))

SPLIT_ALIASES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev",
                 "test": "test"}


def require_file(path: str | Path, config_key: str | None = None) -> Path:
    """Return `path` as a Path if it is an existing file, else raise a DataError naming it."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, expected a file" if p.is_dir() else "file not found"
        raise DataError(p, what, field=config_key)
    return p


def require_dir(path: str | Path, config_key: str | None = None) -> Path:
    """Return `path` as a Path if it is an existing folder, else raise a DataError naming it."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(p, "is a file, expected a folder" if p.exists() else "folder not found", field=config_key)
    return p


def _decode_guard(path: Path):
    try:
        return open(path, encoding=TEXT_ENCODING, newline="")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file") from None


def _no_nul(path: Path, lines: Iterable[str]) -> Iterator[str]:
    """Pass `lines` through; a line holding NUL characters (UTF-16 text, binary data) is a DataError."""
    for lineno, line in enumerate(lines, start=1):
        if "\x00" in line:
            raise nul_error(path, lineno)
        yield line


def iter_csv(path: str | Path, delimiter: str = ",", required: Sequence[str] = ()) \
        -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (first physical line of the record, {column: value}) for each data row of a CSV/TSV
    file with a header. Raises DataError on a missing required column, a row with the wrong number
    of fields, an unterminated quote or non-UTF-8 bytes, naming the file and line."""
    path = Path(path)
    with _decode_guard(path) as fh:
        reader = csv.reader(_no_nul(path, fh), delimiter=delimiter, strict=True)
        last = 0  # physical lines consumed so far: a record starts on line last + 1
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(path, "empty file: expected a header line", line=1)
            header = [h.lstrip("\ufeff").strip() for h in header]
            seen_cols: set[str] = set()
            for col in header:
                if col in seen_cols:
                    raise DataError(path, f"duplicate column {col!r} in the header (edge spaces do not count)",
                                    line=1, field=col)
                seen_cols.add(col)
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(path, f"header lacks column(s) {missing} (has {header})", line=1, field=missing[0])
            last = reader.line_num
            for row in reader:
                start, last = last + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise DataError(path, f"malformed row: {len(row)} fields, the header has {len(header)}",
                                    line=start)
                yield start, dict(zip(header, row))
        except csv.Error as err:
            if "field limit" in str(err):
                raise DataError(path, f"a field is longer than {CSV_FIELD_LIMIT:,} characters "
                                      f"(texts may have at most {MAX_TEXT_CHARS:,})", line=last + 1) from None
            raise DataError(path, f"malformed CSV record: {err}", line=last + 1) from None
        except UnicodeDecodeError as err:
            raise decode_error(path, err) from None


def iter_tsv_lines(path: str | Path, n_fields: int) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-blank line of a header-less, unquoted TSV file;
    a line without exactly `n_fields` tab-separated fields is a DataError naming the line."""
    path = Path(path)
    with _decode_guard(path) as fh:
        try:
            for lineno, line in enumerate(_no_nul(path, fh), start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != n_fields:
                    raise DataError(path, f"malformed line: {len(parts)} tab-separated fields, expected {n_fields}",
                                    line=lineno)
                yield lineno, parts
        except UnicodeDecodeError as err:
            raise decode_error(path, err) from None


def normalise_split(value: str, origin: Origin, field: str) -> str:
    """Return train/dev/test for a split name (val, valid and validation mean dev), else DataError."""
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise origin.error(f"unknown split {value!r} (expected one of {', '.join(SPLIT_ALIASES)})", field)
    return split


def seeded_split(keys: Sequence[str], seed: int, source: str = "data",
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """Return {key: split} assigning the distinct `keys` to train/dev/test in the given proportions.

    Deterministic for a seed and a key set (keys are sorted before sklearn's seeded
    `train_test_split`, so file order does not matter); dev and test get at least one key each when
    there are >= 3 keys (fewer is a DataError naming `source`). Loaders split every key, also those
    a drop rule removes later, so a drop rule never moves another example to a different split.
    """
    uniq = sorted(set(keys))
    n = len(uniq)
    if n < 3:
        raise DataError(source, f"cannot split {n} example(s) into train/dev/test: need at least 3")
    n_dev = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    if n_dev + n_test >= n:
        n_dev, n_test = 1, 1
    from sklearn.model_selection import train_test_split  # heavy: imported when a split is drawn

    rest, test = train_test_split(uniq, test_size=n_test, random_state=seed, shuffle=True)
    train, dev = train_test_split(rest, test_size=n_dev, random_state=seed, shuffle=True)
    return {**{k: "train" for k in train}, **{k: "dev" for k in dev}, **{k: "test" for k in test}}


def empty_splits() -> dict[str, list]:
    """Return {"train": [], "dev": [], "test": []}."""
    return {s: [] for s in SPLITS}


def split_list(value: str) -> list[str]:
    """Return the items of a comma-separated string, a JSON list of strings or a Python-style list
    string (`['a', 'b']`), stripped, no blanks. Quotes are honoured: `a, "b,c"` gives ['a', 'b,c']
    (which label checks then reject); an unbalanced quote stays in its item."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return [v.strip() for v in parsed if v.strip()]
        value = value[1:-1]
    try:
        items = next(csv.reader([value], skipinitialspace=True, strict=True), [])
    except csv.Error:  # an unbalanced quote: plain split, the quote stays visible
        items = value.split(",")
    out = []
    for item in items:
        item = item.strip()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            item = item[1:-1].strip()
        if item:
            out.append(item)
    return out


# ---- the datasets hub ---------------------------------------------------------------------------
def load_hub(hub: str, config: str | None = None, *, data_files: str | None = None, revision: str | None = None,
             field: str | None = None):
    """Return `datasets.load_dataset(hub, config, data_files=..., revision=...)` (a DatasetDict): a hub
    id, or a local folder in the hub repository's layout (what the tests use). Cached under HF_HOME;
    with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 it reads the cache only. Any failure (offline without
    a cache, unknown repo or config, gated repo) is a one-line DataError naming `field` (the config key)."""
    import datasets  # heavy import, only on this path

    kwargs = {k: v for k, v in (("data_files", data_files), ("revision", revision)) if v is not None}
    try:
        return datasets.load_dataset(hub, config, **kwargs)
    except Exception as err:  # offline, unknown repo, ...: say which dataset and why, on one line
        reason = " ".join(str(err).split())[:300]
        what = f"{hub}" + (f" (config {config!r})" if config else "") + (f" ({data_files})" if data_files else "")
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', reason)
        if empty:  # a split without rows (datasets reports it so)
            raise DataError(f"{hub} [{config or 'default'}/{empty.group(1)}]",
                            "empty official split: no rows", field=field) from None
        raise DataError(what, f"datasets.load_dataset failed: {type(err).__name__}: {reason}. Run the data job "
                              f"once with network access (the files are then cached under HF_HOME; "
                              f"HF_HUB_OFFLINE=1 reads the cache)", field=field) from None


def require_columns(dataset, columns: Sequence[str], source: str) -> None:
    """DataError naming `source` and the first missing column when a hub split lacks one of `columns`."""
    have = list(dataset.column_names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(source, f"lacks column(s) {missing} (has {have})", field=missing[0])


def read_split_file(path: str | Path, source_key: str | None = None) -> tuple[dict[str, str], str]:
    """Return ({key: split}, key column) from a split file: CSV (header) or JSONL with a `split` column
    and an `id` or `text` column (`text` keys are returned as the texts themselves). An empty file, a
    key listed twice or an unknown split is a DataError naming the file (and line)."""
    from ..io import iter_jsonl

    path = require_file(path, source_key)
    rows = iter_jsonl(path) if path.suffix.lower() == ".jsonl" else iter_csv(path)
    out: dict[str, str] = {}
    key_col = None
    for lineno, row in rows:
        origin = Origin(str(path), lineno)
        if key_col is None:
            key_col = "id" if "id" in row else "text" if "text" in row else None
            if key_col is None or "split" not in row:
                raise origin.error("a split file needs a 'split' column and an 'id' or 'text' column",
                                   "split" if "split" in row else "id")
        if key_col not in row or "split" not in row:
            raise origin.error("missing field", key_col if key_col not in row else "split")
        key = str(row[key_col]).strip() if key_col == "id" else str(row[key_col])
        split = normalise_split(row["split"], origin, "split")
        if key in out and out[key] != split:
            raise origin.error(f"{key_col} {key[:60]!r} listed twice, in splits '{out[key]}' and '{split}'", key_col)
        out[key] = split
    if not out:
        raise DataError(path, "empty split file: no rows (an official split file must list every example)")
    return out, key_col
