"""Reading and atomically writing the workflow's files.

Every writer goes through a temporary file (or folder) next to the target and renames it into place
on success, so a killed job never leaves a file that looks complete. A killed job does leave its hidden
temporary (`.{name}.XXXXXXXX{suffix}`, possibly a whole model folder); the next write of the same
target deletes such leftovers first.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
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


def _remove_stale(target: Path, suffix: str) -> None:
    """Delete the temporaries an earlier, killed write of `target` left beside it: names made by
    `tempfile` from this target's prefix and suffix (8 random characters between them)."""
    pattern = f".{glob.escape(target.name)}.{'?' * 8}{glob.escape(suffix)}"
    for stale in target.parent.glob(pattern):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error delete it.

    `suffix` defaults to the target's suffix, so libraries that infer a format from it still work.
    Leftover temporaries of a killed earlier write of `path` are deleted first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else target.suffix + ".tmp"
    _remove_stale(target, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
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
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it is removed.
    Leftover temporary folders of a killed earlier write of `path` are deleted first."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target, ".tmp")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700); use the usual mode
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


TEXT_ENCODING = "utf-8-sig"
"""How every input text file is read: UTF-8, with a leading byte-order mark (BOM) accepted and dropped."""


def decode_error(path: str | os.PathLike, err: UnicodeDecodeError | None = None) -> DataError:
    """Return the DataError for a file that is not UTF-8 text: it names the first line that does not
    decode (found by re-reading the raw bytes: a decoder's offset counts from its buffer, not the
    file) and suggests the likely encoding."""
    raw = Path(path).read_bytes()
    hint = "re-save it as UTF-8 (it may be latin-1 / cp1252)"
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        hint = "it starts with a UTF-16/UTF-32 byte-order mark: re-save it as UTF-8"
    elif b"\x00" in raw:
        return nul_error(path, raw.count(b"\n", 0, raw.index(b"\x00")) + 1)
    for lineno, line in enumerate(raw.splitlines(keepends=True), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as line_err:
            return DataError(path, f"not UTF-8 text ({line_err.reason} at byte {line_err.start} of the line); "
                                   f"{hint}", line=lineno)
    reason = f" ({err.reason})" if err is not None else ""
    return DataError(path, f"not UTF-8 text{reason}; {hint}")


def nul_error(path: str | os.PathLike, line: int | None) -> DataError:
    """Return the DataError for a line holding NUL characters (binary data, or UTF-16/32 text without a BOM)."""
    return DataError(path, "contains NUL characters: binary data, or UTF-16/UTF-32 text; re-save it as UTF-8",
                     line=line)


def read_json(path: str | os.PathLike) -> Any:
    """Return the parsed JSON in `path` (UTF-8, optional BOM); a DataError names the file and line on
    bad JSON, bytes that are not UTF-8, or a key repeated within one object."""
    try:
        text = Path(path).read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError as err:
        raise decode_error(path, err) from None
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    if "\x00" in text:
        raise nul_error(path, text.count("\n", 0, text.index("\x00")) + 1)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON: {err.msg}", line=err.lineno) from None
    except RecursionError:
        raise DataError(path, "invalid JSON: nested too deeply") from None
    except _DuplicateKey as dup:
        # json reports no position here: point at the key's second occurrence in the text
        found = [m.start() for m in re.finditer(re.escape(json.dumps(dup.key)) + r"\s*:", text)]
        line = text.count("\n", 0, found[1]) + 1 if len(found) > 1 else None
        raise DataError(path, f"duplicate key {dup.key!r} (JSON would silently keep only the last one)",
                        line=line, field=dup.key) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json object hook: the object as a dict, or _DuplicateKey when a key repeats."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically; return the number of records written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line (UTF-8, optional BOM); a DataError names
    file and line on bad input (malformed JSON, not an object, NUL characters, bytes that are not UTF-8)."""
    try:
        with open(path, encoding=TEXT_ENCODING) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if "\x00" in line:
                    raise nul_error(path, lineno)
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(path, f"malformed JSON ({err.msg}, column {err.colno})", line=lineno) from None
                except RecursionError:
                    raise DataError(path, "malformed JSON (nested too deeply)", line=lineno) from None
                if not isinstance(obj, dict):
                    raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
                yield lineno, obj
    except UnicodeDecodeError as err:
        raise decode_error(path, err) from None
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Return every object of a JSONL file (see iter_jsonl for the errors)."""
    return [obj for _, obj in iter_jsonl(path)]


def write_parquet(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame to parquet atomically (no index)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
