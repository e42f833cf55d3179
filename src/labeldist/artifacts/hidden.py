"""Hidden states at the first label step (docs/formats.md, "Generations"):
`generations/{dataset}/{model}/{regime}/baseline/{subset}/seed{seed}.hidden.safetensors`. One writer
(`write_hidden`, the baseline generation) and one reader (`read_hidden_states`, the probes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from safetensors import safe_open

from ..errors import DataError
from ..io import atomic_path


@dataclass(frozen=True)
class HiddenStates:
    """Hidden states at the first label step: `hidden[i, layer]` belongs to example `ids[i]`."""

    ids: list[str]
    hidden: np.ndarray  # [n_examples, n_layers + 1, hidden_size], float32

    @property
    def n_layers(self) -> int:
        """Number of layer slots (embeddings + transformer layers)."""
        return int(self.hidden.shape[1])


def read_hidden_states(path: str | os.PathLike) -> HiddenStates:
    """Return the `hidden` tensor and `ids` metadata of a `.hidden.safetensors` file (docs/formats.md).

    Raises DataError naming the file and field when the tensor or the ids are missing or inconsistent.
    """
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = fh.metadata() or {}
            if "hidden" not in fh.keys():
                raise DataError(path, "no tensor named 'hidden'", field="hidden")
            hidden = np.asarray(fh.get_tensor("hidden"), dtype=np.float32)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except DataError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise DataError(path, f"not a readable safetensors file ({err})") from None
    if hidden.ndim != 3:
        raise DataError(path, f"expected shape [n, n_layers + 1, d], got {list(hidden.shape)}", field="hidden")
    try:
        ids = json.loads(meta["ids"])
    except KeyError:
        raise DataError(path, "metadata has no 'ids'", field="ids") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"metadata 'ids' is not JSON ({err.msg})", field="ids") from None
    if not isinstance(ids, list) or len(ids) != hidden.shape[0]:
        raise DataError(path, f"metadata 'ids' must list {hidden.shape[0]} ids (one per row of 'hidden')",
                        field="ids")
    if not np.isfinite(hidden).all():
        raise DataError(path, "non-finite values in the hidden states", field="hidden")
    return HiddenStates(ids=[str(i) for i in ids], hidden=hidden)


def write_hidden(path: str | os.PathLike, hidden: Any, ids: Sequence[str], layers: Sequence[int]) -> None:
    """Write hidden states as safetensors: tensor `hidden` [n, layers, hidden_size] float32, tensor
    `layers` (int64 hidden-state indices, 0 = embeddings) and metadata `ids` (JSON list, record order).

    One metadata key only: safetensors writes several in hash order, which would make the bytes of two
    identical runs differ.
    """
    import torch
    from safetensors.torch import save_file

    tensors = {"hidden": hidden.float().contiguous(), "layers": torch.tensor(list(layers), dtype=torch.int64)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(list(ids))})


__all__ = ["HiddenStates", "read_hidden_states", "write_hidden"]
