"""Errors the workflow reports to users: each names the file, line and field at fault."""

from __future__ import annotations


class LabeldistError(Exception):
    """Base class for errors whose message is meant for the user, not a traceback reader."""


class ConfigError(LabeldistError):
    """The configuration is invalid; the message names the key (and the file where it matters)."""


class DataError(LabeldistError):
    """An input file is malformed; the message names the file, the line (1-based) and the field."""

    def __init__(self, path: object, message: str, line: int | None = None, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.field = field


class ContextError(LabeldistError):
    """A prompt does not fit the model's context even without its query text; the message names the
    dataset, the model and the token counts (labeldist.context)."""
