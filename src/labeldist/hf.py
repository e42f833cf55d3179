"""Hugging Face training and loading plumbing shared by the training stages (SFT and RL in
labeldist.finetune, the classification head in labeldist.seq_cls) and by labeldist.models:

- devices: `resolve_device` (config `device` -> "cuda" / "cpu"), `set_threads`;
- 4-bit loading: `bitsandbytes_installed`, `quantization_plan`, `can_load_4bit`, `training_quantized`,
  `bnb_4bit_settings` (the QLoRA BitsAndBytesConfig settings), `prepare_quantized`;
- LoRA: `LoraSettings`, `lora_config`;
- models: `load_model`, `load_tokenizer`, `count_parameters`;
- training: `trainer_precision` (TrainingArguments per device), `training_log_frame` with `LOG_COLUMNS`
  (written as training_log.csv by labeldist.artifacts.tables).

Model folders themselves (save_pretrained or model_ref.json) are resolved and loaded by labeldist.models;
the functions here import it lazily, so labeldist.models can use this module.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

log = logging.getLogger("labeldist.hf")

# Columns written first in training_log.csv when the trainer logged them; any other numeric key follows.
LOG_COLUMNS = ("step", "epoch", "loss", "reward", "reward_std", "kl", "learning_rate", "grad_norm", "dev_f1")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters: the `lora_*` keys of config `finetune.sft` / `finetune.seq_cls` (defaults:
    the config schema; the settings' `lora` property builds one)."""

    lora_r: int
    lora_alpha: float
    lora_dropout: float


# ---- devices ------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """`cuda` or `cpu` for config `device` (auto: cuda when available; see labeldist.models)."""
    from .models import resolve_device as _resolve

    return _resolve(device).type


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads to the rule's `threads` (no-op for None)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


# ---- 4-bit loading ------------------------------------------------------------------------------
def bitsandbytes_installed() -> bool:
    """True when the bitsandbytes package can be imported here."""
    return importlib.util.find_spec("bitsandbytes") is not None


def quantization_plan(requested: bool, cuda_available: bool, bnb_available: bool) -> bool:
    """True when training loads its start model in 4-bit: asked for (`load_in_4bit`) and possible, i.e. on
    a CUDA device with bitsandbytes installed. Otherwise training runs unquantized (a note in the log)."""
    return bool(requested and cuda_available and bnb_available)


def can_load_4bit(device: str) -> bool:
    """True when 4-bit loading is possible here: a CUDA device and bitsandbytes installed."""
    return quantization_plan(True, device == "cuda", bitsandbytes_installed())


def training_quantized(requested: bool, device: str) -> bool:
    """True when training on `device` ("cuda" / "cpu") loads its model in 4-bit: `quantization_plan` for
    this machine, with a note in the log when 4-bit was asked for but is not possible here."""
    quantized = quantization_plan(requested, device == "cuda", bitsandbytes_installed())
    if requested and not quantized:
        log.warning("load_in_4bit requested but CUDA + bitsandbytes are not available: training unquantized")
    return quantized


def bnb_4bit_settings() -> dict[str, Any]:
    """BitsAndBytesConfig keyword arguments for 4-bit loading (nf4 weights, double quantization, bf16
    compute): QLoRA training here and labeldist.models.load_causal_lm's `load_in_4bit`."""
    import torch

    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": torch.bfloat16,
        "bnb_4bit_use_double_quant": True,
    }


def prepare_quantized(model: Any) -> Any:
    """A 4-bit model made ready for LoRA training with PEFT's `prepare_model_for_kbit_training` (base
    weights frozen, norms and head in fp32, input gradients and activation checkpointing on)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model)


# ---- LoRA and models ----------------------------------------------------------------------------
def count_parameters(model: Any) -> int:
    """The model's total number of parameters."""
    return sum(p.numel() for p in model.parameters())


def lora_config(lora: LoraSettings, task_type: str = "CAUSAL_LM", modules_to_save: Sequence[str] | None = None) -> Any:
    """A PEFT LoraConfig on every linear layer (`all-linear`, the output head excluded)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
        target_modules="all-linear", task_type=task_type,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )


def load_model(path: str | Path, device: str, dtype: str = "auto", load_in_4bit: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a base/sft/rl folder via `labeldist.models.load_causal_lm` (pad token set)."""
    from .models import load_causal_lm

    return load_causal_lm(path, device=device, dtype=dtype, load_in_4bit=load_in_4bit)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a model folder (save_pretrained or model_ref.json), without loading weights."""
    from transformers import AutoTokenizer

    from .models import resolve_model_source

    source = resolve_model_source(path)
    return AutoTokenizer.from_pretrained(source.location, **source.hub_kwargs())


# ---- training -----------------------------------------------------------------------------------
def training_log_frame(log_history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per logged training step from `trainer.state.log_history` (the end-of-training summary
    left out): `step` first, then loss / reward / kl / learning_rate where logged, then any other number."""
    rows = [
        {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for entry in log_history
        if "step" in entry and "train_runtime" not in entry
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    first = [c for c in LOG_COLUMNS if c in frame.columns]
    return frame[first + sorted(c for c in frame.columns if c not in first)]


def trainer_precision(device: str) -> dict[str, Any]:
    """TrainingArguments keys for the device: `use_cpu` on CPU (STACK.md), bf16 on CUDA where supported."""
    import torch

    if device == "cpu":
        return {"use_cpu": True, "bf16": False}
    return {"bf16": bool(torch.cuda.is_bf16_supported()), "use_cpu": False}
