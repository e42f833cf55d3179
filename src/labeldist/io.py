"""Reading and atomically writing the workflow's files.

Every writer goes through a temporary file (or folder) next to the target and renames it into place
on success, so a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError


def _umask() -> int:
    """The process's current umask (reading it requires setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error delete it.

    `suffix` defaults to the target's suffix, so libraries that infer a format from it still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Return the parsed JSON in `path`; a DataError names the file and line on bad JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON: {err.msg}", line=err.lineno) from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically; return the number of records written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a DataError names file and line on bad input."""
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(path, f"malformed JSON ({err.msg}, column {err.colno})", line=lineno) from None
                if not isinstance(obj, dict):
                    raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
                yield lineno, obj
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except FileNotFoundError:
        raise DataError(path, "file not found") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Return every object of a JSONL file (see iter_jsonl for the errors)."""
    return [obj for _, obj in iter_jsonl(path)]


def write_parquet(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame to parquet atomically (no index)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
