"""The sequence-classification-head baseline (docs/methods.md section 4, `seq_cls_head`): the base LLM with a
linear multi-label head (`AutoModelForSequenceClassification`, BCE on float multi-hot labels), LoRA-
finetuned with PEFT on the train split's query texts (no instruction, no demos); q(l | x) = sigmoid of
the head's logit for l. Writes estimate parquets (docs/formats.md) for the main and dev subsets and keeps
no model on disk.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from .hf import (
    LoraSettings,
    bnb_4bit_settings,
    count_parameters,
    load_tokenizer,
    lora_config,
    prepare_quantized,
    resolve_device,
    set_threads,
    trainer_precision,
    training_log_frame,
    training_quantized,
)
from .settings import FromConfig
from .artifacts.estimates import estimate_frame, write_estimates
from .artifacts.labels import read_label_set
from .artifacts.splits import SUBSET_SPLIT, read_split, read_subsets, select_records

log = logging.getLogger("labeldist.seq_cls")

# Head module names of AutoModelForSequenceClassification architectures (Llama & co: score; BERT: classifier).
HEAD_NAMES = ("score", "classifier")


@dataclass(frozen=True)
class SeqClsSettings(FromConfig):
    """Config `finetune.seq_cls` (defaults: the config schema); `seed` is added to the run's seed wildcard.
    `max_length` (tokens per text) is not a config key: its default here is the only one."""

    CONFIG_BLOCK: ClassVar[str] = "finetune.seq_cls"

    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lr: float
    max_steps: int
    batch_size: int
    seed: int
    max_length: int = 256

    @property
    def lora(self) -> LoraSettings:
        """The LoRA part of the settings."""
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout)


def multi_hot(labels: Sequence[str], label_set: Sequence[str]) -> list[float]:
    """Float multi-hot vector of `labels` over `label_set` (the head's BCE target)."""
    chosen = set(labels)
    return [1.0 if l in chosen else 0.0 for l in label_set]


def seq_cls_load_kwargs(device: str, quantized: bool) -> dict[str, Any]:
    """Extra from_pretrained keyword arguments for the classifier: for a 4-bit load (CUDA only) the QLoRA
    BitsAndBytesConfig settings (`bnb_4bit_settings`) and a device map putting the whole model on the GPU
    (bitsandbytes models cannot be moved after loading); none otherwise (the caller moves the model).

    The freshly initialised head stays unquantized: transformers keeps a model's last module (`score`) out
    of 4-bit conversion when no skip list is given."""
    if not quantized:
        return {}
    from transformers import BitsAndBytesConfig

    if device != "cuda":
        raise ValueError(f"seq_cls_load_kwargs: 4-bit loading needs CUDA, not {device!r}")
    return {"quantization_config": BitsAndBytesConfig(**bnb_4bit_settings()),
            "device_map": {"": 0}}


def load_seq_cls_model(base_path: str | Path, label_set: Sequence[str], device: str, dtype: str = "auto",
                       quantized: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer): a sequence-classification model with a fresh multi-label head of |label_set|
    outputs on top of the base folder's weights (a save_pretrained folder or model_ref.json), pad token
    set in tokenizer and model config; in 4-bit on the GPU when `quantized` (see `seq_cls_load_kwargs`)."""
    from transformers import AutoModelForSequenceClassification

    from .models import resolve_dtype, resolve_model_source
    from .models import resolve_device as torch_device

    source = resolve_model_source(base_path)
    tokenizer = load_tokenizer(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        source.location,
        num_labels=len(label_set),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(label_set)),
        label2id={l: i for i, l in enumerate(label_set)},
        pad_token_id=tokenizer.pad_token_id,
        dtype=resolve_dtype(dtype, torch_device(device)),
        **source.hub_kwargs(),
        **seq_cls_load_kwargs(device, quantized),
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return (model if quantized else model.to(device)), tokenizer


def head_modules(model: Any) -> list[str]:
    """Names of the model's classification-head modules (trained fully and saved with the adapter)."""
    return [name for name in HEAD_NAMES if hasattr(model, name)]


def _tokenized(tokenizer: Any, records: Sequence[dict], label_set: Sequence[str], max_length: int,
               with_labels: bool) -> Any:
    from datasets import Dataset

    enc = tokenizer([r["text"] for r in records], truncation=True, max_length=max_length)
    data: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if with_labels:
        data["labels"] = [multi_hot(r["labels"], label_set) for r in records]
    return Dataset.from_dict(data)


def train_seq_cls_head(
    base_path: str | Path,
    train: Sequence[dict],
    label_set: Sequence[str],
    settings: SeqClsSettings,
    seed: int,
    device: str = "auto",
    dtype: str = "auto",
    callbacks: Sequence[Any] = (),
    load_in_4bit: bool = False,
) -> tuple[Any, Any, pd.DataFrame]:
    """Train the LoRA + head classifier on `train` records (id, text, labels) with transformers' Trainer
    (BCE through `problem_type="multi_label_classification"`); return (trainer, tokenizer, training log).

    The run is seeded by `settings.seed + seed`. With `load_in_4bit` (and CUDA + bitsandbytes,
    `labeldist.hf.quantization_plan`) the base is loaded in 4-bit and prepared for k-bit training (QLoRA), which a 70B
    base needs on one 80 GB GPU; otherwise it trains unquantized (a note in the log).
    """
    import transformers
    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    device = resolve_device(device)
    quantized = training_quantized(load_in_4bit, device)
    run_seed = settings.seed + seed
    transformers.set_seed(run_seed)
    model, tokenizer = load_seq_cls_model(base_path, label_set, device, dtype, quantized=quantized)
    if quantized:
        model = prepare_quantized(model)
    model = get_peft_model(model, lora_config(settings.lora, task_type="SEQ_CLS",
                                              modules_to_save=head_modules(model)))
    dataset = _tokenized(tokenizer, train, label_set, settings.max_length, with_labels=True)
    log.info("seq_cls_head: %d examples, %d labels, %d steps, batch %d, lr %g, seed %d, on %s (%s params)%s",
             len(dataset), len(label_set), settings.max_steps, settings.batch_size, settings.lr, run_seed,
             device, f"{count_parameters(model):,}", ", 4-bit" if quantized else "")
    scratch = tempfile.mkdtemp(prefix="seq_cls_")
    args = TrainingArguments(
        output_dir=scratch, learning_rate=settings.lr, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=max(settings.batch_size, 16),
        logging_steps=max(1, settings.max_steps // 100), save_strategy="no", report_to="none",
        seed=run_seed, data_seed=run_seed, disable_tqdm=False, **trainer_precision(device),
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=list(callbacks))
    try:
        trainer.train()
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return trainer, tokenizer, training_log_frame(trainer.state.log_history)


def predict_estimates(trainer: Any, tokenizer: Any, records: Sequence[dict], label_set: Sequence[str],
                      max_length: int = 256) -> pd.DataFrame:
    """Long-format estimates (id, label, q = sigmoid(logit)) for `records`, one row per example and label
    (labeldist.artifacts.estimates.estimate_frame)."""
    import torch

    dataset = _tokenized(tokenizer, records, label_set, max_length, with_labels=False)
    logits = trainer.predict(dataset).predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    q = torch.sigmoid(torch.as_tensor(np.asarray(logits), dtype=torch.float64)).numpy()
    return estimate_frame([str(r["id"]) for r in records], list(label_set), q.reshape(len(records), -1))


def seq_cls_from_files(
    base_path: str | Path,
    data_files: Mapping[str, str | Path],
    out_file: str | Path,
    seq_cls_cfg: Mapping[str, Any],
    seeds: Sequence[int],
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    load_in_4bit: bool = False,
    subsets: Sequence[str] = ("main", "dev"),
) -> pd.DataFrame:
    """The `seq_cls_head` rule: for each seed, train on the train split and estimate every subset of
    `subsets` (`main` reads the test split, `dev` the dev split); write the estimate file `out_file`
    once, every seed in it (labeldist.artifacts.estimates). `data_files` holds the data stage's `train`,
    `dev`, `test`, `labels` and `subsets` paths; `load_in_4bit` is the model's config flag (QLoRA where
    CUDA + bitsandbytes allow it). Returns the written frame."""
    set_threads(threads)
    settings = SeqClsSettings.from_config(seq_cls_cfg)
    labels = read_label_set(data_files["labels"])
    label_set = labels.labels
    subset_ids = read_subsets(data_files["subsets"], required=subsets)
    train = read_split(data_files["train"], labels)
    targets = {}
    for subset in subsets:
        split = read_split(data_files[SUBSET_SPLIT[subset]], labels)
        targets[subset] = select_records(split, subset_ids[subset], data_files["subsets"], subset)
    parts = {}
    for seed in seeds:
        trainer, tokenizer, frame = train_seq_cls_head(base_path, train, label_set, settings, int(seed), device,
                                                       dtype, load_in_4bit=load_in_4bit)
        if not frame.empty and "loss" in frame:
            log.info("seq_cls_head, seed %s: loss %.4f -> %.4f", seed, frame["loss"].iloc[0], frame["loss"].iloc[-1])
        for subset, records in targets.items():
            parts[(subset, int(seed))] = predict_estimates(trainer, tokenizer, records, label_set, settings.max_length)
    return write_estimates(out_file, parts)