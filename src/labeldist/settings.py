"""Settings objects read from validated config blocks."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="FromConfig")


class FromConfig:
    """Mixin for a dataclass of settings that mirrors one config block (e.g. `finetune.sft`)."""

    @classmethod
    def from_config(cls: type[T], cfg: Mapping[str, Any]) -> T:
        """An instance from a validated config block; keys that are not fields are ignored, fields
        absent from the block keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in cfg.items() if k in names})
