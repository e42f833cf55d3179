"""Settings objects read from validated config blocks."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound="FromConfig")


class FromConfig:
    """Mixin for a dataclass of settings that mirrors one config block, named by `CONFIG_BLOCK` (e.g.
    `finetune.sft`).

    The block's defaults live in the config schema only (workflow/schemas/config.schema.yaml), which
    labeldist.config.validate_config fills in, so the fields that mirror config keys have no defaults
    and `from_config` needs every one of them. A field with a default is not a config key (a fixed
    setting the schema does not have); the class docstring says which.
    """

    CONFIG_BLOCK: ClassVar[str] = ""

    @classmethod
    def require_keys(cls, cfg: Mapping[str, Any], also: Sequence[str] = ()) -> None:
        """Returns None when `cfg` has every field without a default and every key of `also`; raises a
        ConfigError naming the block and the first missing key otherwise."""
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in cfg]
        missing += [k for k in also if k not in cfg and k not in missing]
        if missing:
            raise ConfigError(
                f"{cls.CONFIG_BLOCK or cls.__name__}.{missing[0]}: missing from the config block"
                + (f" (and {', '.join(missing[1:])})" if missing[1:] else "")
                + "; labeldist.config.validate_config fills in the schema's defaults"
            )

    @classmethod
    def from_config(cls: type[T], cfg: Mapping[str, Any]) -> T:
        """An instance from a validated config block; keys that are not fields are ignored. A missing
        config key raises a ConfigError naming the block and key (a validated block has them all)."""
        cls.require_keys(cfg)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in cfg.items() if k in names})
