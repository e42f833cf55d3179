"""Base models: the built-in tiny Llama (tokenizer, pretraining corpus, pretraining loop), references to
hub or local checkpoints, and one loader for every model folder the workflow produces.

A base folder (`results/models/{model}/base/`, docs/formats.md) is either a `save_pretrained` folder
(model + tokenizer + chat template; for a GGUF source converted once by `labeldist.gguf_source`, with
`gguf_source.json`) or holds only `model_ref.json`: `{"hub_id", "revision"}` for a hub
model or `{"path"}` for a local one. `load_causal_lm` loads all of them, and any other `save_pretrained`
folder (the SFT and RL outputs), the same way.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .artifacts.labels import read_label_set
from .artifacts.splits import read_split
from .errors import DataError, LabeldistError
from .gguf_source import convert_gguf
from .hf import bnb_4bit_settings, count_parameters, set_threads
from .io import atomic_dir, atomic_path, read_json, write_json
from .prompts import (
    PromptSpec,
    build_prompt,
    chat_messages,
    choice_documents,
    completion_text,
    example_block,
    sample_demos,
)

log = logging.getLogger(__name__)

MODEL_REF = "model_ref.json"
PRETRAIN_LOG = "pretrain_log.csv"
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK]
# Share of the builtin model's pretraining documents that are unary/pairwise prompts (build_pretrain_corpus).
# Measured on the synthetic default (800 steps x 8): 0.25-0.4 keeps the baseline's micro-F1 in its
# seed-to-seed range and makes unary P(reasonable) vary with p_ref (Spearman ~0.2); 0.5 costs baseline F1.
# These are long documents (~195 tokens against ~90), so the share also sets the pretraining time.
CHOICE_FRACTION = 0.3

# Llama-3-like turns (role header, content, end-of-turn) with the built-in special tokens: `</s>` ends a
# turn, so generation after the assistant header stops at EOS. The `{% generation %}` block marks the
# assistant content (and its end-of-turn token) for TRL's assistant-only loss.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# ---- devices, dtypes, loading ------------------------------------------------------------------------
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device for `name`: "auto" is CUDA when available, else CPU.

    Asking for "cuda" on a machine without CUDA raises a LabeldistError.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabeldistError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype | str:
    """Return the torch dtype for a config string; "auto" keeps the checkpoint's dtype on GPU and is
    float32 on CPU (half precision is slow or unsupported there)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return "auto" if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise LabeldistError(f"unknown dtype {name!r} (use auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value in the environment."""
    return any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True)
class ModelSource:
    """Where a model folder's weights really are: a local folder, or a hub id at a revision."""

    location: str
    revision: str | None = None
    is_hub: bool = False

    def hub_kwargs(self) -> dict[str, Any]:
        """The from_pretrained keyword arguments this source needs: `revision` and `local_files_only`
        (HF_HUB_OFFLINE, `hub_offline`) for a hub model, none for a local folder."""
        return {"revision": self.revision, "local_files_only": hub_offline()} if self.is_hub else {}


def resolve_model_source(path: str | os.PathLike) -> ModelSource:
    """Return the weights' location for a model folder: its `model_ref.json` target if it has one
    (hub id + revision, or an absolute local path), else the folder itself."""
    folder = Path(path)
    ref_file = folder / MODEL_REF
    if not ref_file.exists():
        if not folder.is_dir():
            raise DataError(folder, "model folder not found")
        return ModelSource(str(folder))
    ref = read_json(ref_file)
    if not isinstance(ref, dict):
        raise DataError(ref_file, "expected a JSON object")
    if "hub_id" in ref:
        if not isinstance(ref["hub_id"], str) or not ref["hub_id"]:
            raise DataError(ref_file, "must be a non-empty string", field="hub_id")
        return ModelSource(ref["hub_id"], ref.get("revision"), is_hub=True)
    if "path" in ref:
        local = Path(ref["path"])
        if not local.is_dir():
            raise DataError(ref_file, f"folder not found: {local}", field="path")
        return ModelSource(str(local))
    raise DataError(ref_file, "needs a 'hub_id' or a 'path'")


def load_causal_lm(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    load_in_4bit: bool = False,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) for a base folder (weights or `model_ref.json`) or any
    `save_pretrained` folder, in eval mode on `device`.

    The tokenizer pads on the left (batched generation) and falls back to EOS as its pad token.
    `load_in_4bit` quantizes with bitsandbytes and needs CUDA. Hub models honour HF_HUB_OFFLINE: offline,
    a model missing from the local cache fails with a LabeldistError saying so.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(path)
    dev = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev), **source.hub_kwargs()}
    if load_in_4bit:
        if not torch.cuda.is_available() or dev.type != "cuda":
            raise LabeldistError(
                f"{path}: load_in_4bit needs a CUDA GPU (bitsandbytes); this run is on {dev.type}"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb_4bit_settings())
    if dev.type == "cuda":
        kwargs["device_map"] = {"": dev.index if dev.index is not None else 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.hub_kwargs())
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except OSError as err:
        if source.is_hub:
            mode = "HF_HUB_OFFLINE is set and it is not in the local cache" if hub_offline() else str(err)
            raise LabeldistError(
                f"{path}: cannot load hub model {source.location!r} (revision {source.revision or 'main'}): "
                f"{mode}. Download it first (unset HF_HUB_OFFLINE) or point config models.<key> at a "
                f"local folder."
            ) from err
        raise LabeldistError(f"{path}: cannot load model from {source.location}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval()
    return model, tokenizer


def write_model_ref(folder: str | os.PathLike, model_cfg: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> dict:
    """Write `folder/model_ref.json` for a hub or local model config block (atomically, as a folder);
    return the reference written: {"hub_id", "revision"} or {"path": absolute path}."""
    source = model_cfg["source"]
    if source == "hub":
        ref: dict[str, Any] = {"hub_id": model_cfg["hub_id"], "revision": model_cfg.get("revision")}
    elif source == "local":
        local = (Path(base_dir) / model_cfg["path"]).resolve()
        if not local.is_dir():
            raise LabeldistError(f"models.<key>.path: folder not found: {local}")
        ref = {"path": str(local)}
    else:
        raise LabeldistError(f"write_model_ref: source {source!r} has no reference (use hub or local)")
    with atomic_dir(folder) as tmp:
        write_json(tmp / MODEL_REF, ref)
    return ref


# ---- the built-in tiny model: pretraining corpus -----------------------------------------------------
def annotator_labels(record: Mapping[str, Any], rng: random.Random) -> list[str]:
    """One randomly chosen annotator's label set for a record; the gold set when it has no annotations."""
    annotations = record.get("annotations")
    if annotations:
        return list(rng.choice(annotations))
    return list(record["labels"])


def build_pretrain_corpus(
    records: Sequence[Mapping[str, Any]],
    label_set: Sequence[str],
    spec: PromptSpec,
    n_docs: int,
    seed: int,
    single_fraction: float = 0.2,
    chat_fraction: float = 0.1,
    chat_template_fn: Any = None,
    choice_fraction: float = 0.0,
) -> list[str]:
    """Return `n_docs` pretraining documents in the dataset's prompt formats, in a seeded random order.

    Most documents are a full prompt: the instruction, 0..k demonstrations (count drawn uniformly, demos
    drawn with the spec's sampling strategy) and a final example, each followed by its label line. A
    `single_fraction` of them is a lone `Input: ... / Labels: ...` block (short contexts), and, when a
    `chat_template_fn` (messages -> text) is given, a `chat_fraction` is the same prompt rendered as chat
    turns, so the chat template is not foreign to the base model.

    Design decision: every label line shows ONE RANDOMLY CHOSEN ANNOTATOR's label set (a fresh draw
    each time an example appears; the gold set when the record has no annotations), never the gold
    aggregate. A base LM has read noisy, individual human judgements, not adjudicated labels; pretrained
    this way the tiny model's label distributions imitate the annotator distribution (so alignment with
    p_ref is measurable at the `base` regime) and SFT on the gold aggregates has something to change.

    A `choice_fraction` of the documents are answered unary and pairwise prompts (half each,
    `prompts.choice_documents`), so the unary/pairwise prompting modes are not foreign to the model and
    its tokenizer learns ` reasonable`, ` unreasonable`, `Answer` as whole tokens. They follow the same
    rationale: every example they show has a fresh annotator draw as its labels, and the final question
    is answered by one more draw, independent of the one that helped pick the question, so the answers'
    frequencies are the annotators': P(reasonable) = p_ref(label), P(a) = 1/2 + (p_ref(a) - p_ref(b)) / 2.
    """
    rng = random.Random(seed)
    n_choice = round(n_docs * choice_fraction)
    n_docs -= n_choice
    by_id = {str(rec["id"]): rec for rec in records}
    pool = [(str(rec["id"]), list(rec["labels"])) for rec in records]
    docs: list[str] = []
    for _ in range(n_docs):
        query = rng.choice(records)
        kind = rng.random()
        if kind < single_fraction:
            docs.append(example_block(query["text"], annotator_labels(query, rng), spec))
            continue
        k = rng.randint(0, spec.k)
        others = [item for item in pool if item[0] != str(query["id"])]
        demo_ids = sample_demos(others, k, spec.demo_sampling, label_set, rng, spec.multilabel_ratio)
        demos = [(by_id[i]["text"], annotator_labels(by_id[i], rng)) for i in demo_ids]
        query_labels = annotator_labels(query, rng)
        if chat_template_fn is not None and kind < single_fraction + chat_fraction:
            messages = chat_messages(spec, label_set, demos, query["text"])
            messages.append({"role": "assistant", "content": completion_text(query_labels, spec).strip()})
            docs.append(chat_template_fn(messages))
        else:
            # build_prompt ends at the output prefix without its trailing space: put it back.
            gap = spec.output_prefix[len(spec.output_prefix.rstrip(" ")):]
            docs.append(build_prompt(spec, label_set, demos, query["text"]) + gap
                        + completion_text(query_labels, spec))
    if n_choice:
        docs += choice_documents([(rec["text"], rec) for rec in records], label_set, spec, n_choice, rng,
                                 labels_of=annotator_labels, vote_queries=True)
        rng.shuffle(docs)
    return docs


# ---- the built-in tiny model: tokenizer and architecture ---------------------------------------------
def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """Return a byte-level BPE `PreTrainedTokenizerFast` trained on `texts`: special tokens <s>, </s>,
    <pad>, <unk>, BOS prepended to every encoding, left padding, and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bos_id = bpe.token_to_id(BOS)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(tokenizer: Any, cfg: Mapping[str, Any], seed: int) -> Any:
    """Return a freshly initialised (seeded) `LlamaForCausalLM` sized by config `models.<key>.builtin`,
    with the tokenizer's vocabulary and special-token ids and tied input/output embeddings."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_kv_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


# ---- the built-in tiny model: pretraining ------------------------------------------------------------
@dataclass
class PretrainResult:
    """A pretrained model with its tokenizer and the per-step log rows (step, loss, learning_rate)."""

    model: Any
    tokenizer: Any
    log_rows: list[dict[str, float]]
    seconds: float


def pretrain(
    model: Any,
    tokenizer: Any,
    docs: Sequence[str],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_length: int | None = None,
    warmup_ratio: float = 0.05,
    log_every: int = 20,
    token_weighted: bool = False,
) -> list[dict[str, float]]:
    """Train `model` in place as a causal LM on `docs` (BOS + doc + EOS, right-padded, padding masked out
    of the loss) with AdamW and a cosine schedule with warmup; return one log row per step
    (step, loss = the batch's mean token loss, learning_rate). Each pass over `docs` is a seeded shuffle
    of length-grouped batches. Each batch's mean loss is a step's objective; with `token_weighted`, every
    token weighs the same in the gradient instead, whatever batch it is in."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup
    from transformers.trainer_pt_utils import get_length_grouped_indices

    max_length = max_length or model.config.max_position_embeddings
    enc = tokenizer(list(docs), truncation=True, max_length=max_length - 1, add_special_tokens=True)
    ids = [seq + [tokenizer.eos_token_id] for seq in enc["input_ids"]]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, int(warmup_ratio * steps)), steps)
    lengths = [len(seq) for seq in ids]
    # Length-grouped batches hold only short or only long documents, so a per-batch mean would weigh a
    # short document's tokens several times more than a long one's (measured on the synthetic corpus,
    # 400 x 16, label documents only: test micro-F1 0.52 -> 0.72 and 0.38 -> 0.54 on two seeds with equal
    # token weights; random, ungrouped batches reach 0.79 and 0.61 at twice the time). The token-loss sum is
    # divided by the corpus's mean number of target tokens per batch instead: transformers'
    # `num_items_in_batch`, which the Trainer uses the same way for gradient accumulation.
    per_batch = None
    if token_weighted:
        per_batch = torch.tensor(batch_size * sum(n - 1 for n in lengths) / len(lengths))
    batches: list[list[int]] = []
    rows: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(1, steps + 1), desc="pretrain", mininterval=5.0)
    for step in bar:
        if not batches:
            # One epoch: batches of similar length (transformers' group_by_length sampler; ~40% fewer
            # padded tokens than random batches on the prompt-format corpus), in a shuffled order.
            grouped = get_length_grouped_indices(lengths, batch_size, generator=gen)
            chunks = [grouped[i: i + batch_size] for i in range(0, len(grouped), batch_size)]
            batches = [chunks[j] for j in torch.randperm(len(chunks), generator=gen).tolist()]
        batch_idx = batches.pop()
        batch = tokenizer.pad(
            {"input_ids": [ids[i] for i in batch_idx]}, padding=True, padding_side="right", return_tensors="pt"
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                    num_items_in_batch=per_batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        if per_batch is not None:  # back to the batch's mean token loss for the log
            loss *= float(per_batch) / int((labels[:, 1:] != -100).sum())
        rows.append({"step": step, "loss": loss, "learning_rate": rate})
        if step % log_every == 0 or step == steps:
            bar.set_postfix(loss=f"{loss:.3f}")
            log.info("pretrain step %d/%d loss %.4f lr %.2e", step, steps, loss, rate)
    model.eval()
    return rows


def write_pretrain_log(path: str | os.PathLike, rows: Sequence[Mapping[str, float]]) -> None:
    """Write the per-step pretraining log as CSV (step, loss, learning_rate), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "loss", "learning_rate"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"step": int(row["step"]), "loss": f"{row['loss']:.6f}",
                             "learning_rate": f"{row['learning_rate']:.6e}"})


def build_builtin_model(
    train_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    prompt_cfg: Mapping[str, Any],
    builtin_cfg: Mapping[str, Any],
    log_every: int = 20,
) -> PretrainResult:
    """Return the built-in tiny model pretrained on the prompt-format corpus of a dataset's train split
    (`build_pretrain_corpus`, a CHOICE_FRACTION of it unary/pairwise prompts), with its tokenizer
    (trained on the same corpus) and the loss log."""
    start = time.perf_counter()
    labels_file = read_label_set(labels_path)
    label_set = labels_file.labels
    records = read_split(train_path, labels_file)
    spec = PromptSpec.from_config(prompt_cfg)
    seed = int(builtin_cfg["seed"])
    n_docs = int(builtin_cfg["steps"]) * int(builtin_cfg["batch_size"])
    plain = build_pretrain_corpus(records, label_set, spec, n_docs, seed, chat_fraction=0.0,
                                  choice_fraction=CHOICE_FRACTION)
    tokenizer = train_tokenizer(plain, int(builtin_cfg["vocab_size"]))
    chat_fn = lambda messages: tokenizer.apply_chat_template(messages, tokenize=False)  # noqa: E731
    docs = build_pretrain_corpus(records, label_set, spec, n_docs, seed, chat_template_fn=chat_fn,
                                 choice_fraction=CHOICE_FRACTION)
    # Chat documents already start with BOS (the template writes it); drop that copy here because
    # tokenization prepends BOS to every document.
    docs = [d[len(BOS):] if d.startswith(BOS) else d for d in docs]
    model = build_tiny_llama(tokenizer, builtin_cfg, seed)
    n_params = count_parameters(model)
    log.info("tiny model: %d parameters, vocab %d, %d documents", n_params, len(tokenizer), len(docs))
    rows = pretrain(model, tokenizer, docs, int(builtin_cfg["steps"]), int(builtin_cfg["batch_size"]),
                    float(builtin_cfg["lr"]), seed, log_every=log_every, token_weighted=True)
    return PretrainResult(model, tokenizer, rows, time.perf_counter() - start)


def save_model_folder(folder: str | os.PathLike, result: PretrainResult) -> None:
    """Write model, tokenizer (with chat template) and `pretrain_log.csv` into `folder` atomically."""
    with atomic_dir(folder) as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        write_pretrain_log(tmp / PRETRAIN_LOG, result.log_rows)


def make_base_model(
    folder: str | os.PathLike,
    model_cfg: Mapping[str, Any],
    train_path: str | os.PathLike | None = None,
    labels_path: str | os.PathLike | None = None,
    prompt_cfg: Mapping[str, Any] | None = None,
    threads: int | None = None,
    base_dir: str | os.PathLike = ".",
    name: str = "<key>",
) -> None:
    """Create a base folder for one config model block: model_ref.json for hub/local sources, a
    save_pretrained folder converted from the GGUF for `gguf`, the pretrained tiny model for `builtin`
    (which needs the train split, labels.json and the prompt)."""
    set_threads(threads)
    if model_cfg["source"] == "gguf":
        convert_gguf(model_cfg["gguf"], folder, key=f"models.{name}.gguf", base_dir=base_dir)
        return
    if model_cfg["source"] != "builtin":
        write_model_ref(folder, model_cfg, base_dir=base_dir)
        return
    if train_path is None or labels_path is None or prompt_cfg is None:
        raise LabeldistError("a builtin model needs the pretrain dataset's train split, labels and prompt")
    result = build_builtin_model(train_path, labels_path, prompt_cfg, model_cfg["builtin"])
    log.info("pretraining took %.1f s; final loss %.4f", result.seconds, result.log_rows[-1]["loss"])
    save_model_folder(folder, result)
