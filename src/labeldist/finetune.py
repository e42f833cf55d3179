"""Finetuning regimes (docs/methods.md section 5): supervised finetuning (TRL SFTTrainer, LoRA via PEFT) and
GRPO reinforcement learning (TRL GRPOTrainer) with a label-F1 + format reward.

Both regimes read the data stage's files (docs/formats.md), build the same prompts the generation stage
uses (labeldist.prompts: instruction + k seeded demos from the train split + the query) and write a merged
`save_pretrained` folder (model + tokenizer, loadable on its own) with `training_log.csv`, atomically.

Design notes:
- SFT trains on `{"prompt", "completion"}` records, so TRL computes the loss on the completion only and
  appends the tokenizer's EOS to each completion.
- Each training query gets its own demo set, drawn by a `random.Random(seed)` shared over the dataset
  (reproducible), from the train split minus the `train` subset (the generation stage's demo pool) and
  minus the query itself. Varying the demos keeps the model from memorising one demo set.
- 4-bit QLoRA (nf4 weights, bf16 compute, `prepare_model_for_kbit_training`) is used only when the config
  asks for it (`finetune.sft.load_in_4bit` or the model's `load_in_4bit`, as labeldist.cost assumes) and
  CUDA and bitsandbytes are both available (`labeldist.hf.quantization_plan`). A 4-bit base cannot absorb the adapter
  exactly, so the adapter is saved and merged on the CPU into a freshly loaded unquantized copy of the
  start model (`merge_plan`, `merge_adapter_on_cpu`): at study scale that copy is a 70B model in bf16
  (~141 GB), which fits the job's host memory (labeldist.cost.host_mem_mb) but not an 80 GB GPU.
  Unquantized LoRA runs merge in place, where the model already is.
- RL finetunes all weights of small unquantized models and uses LoRA (with the `finetune.sft` LoRA settings)
  on 4-bit models and on models with more than `LORA_MIN_PARAMS` parameters (`rl_uses_lora`): full
  finetuning is cheap and learns faster on the tiny default model, LoRA keeps optimizer memory bounded on
  billion-parameter models.
"""

from __future__ import annotations

import logging
import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from .artifacts.labels import read_label_set
from .artifacts.splits import demo_pool, read_split, read_subsets
from .artifacts.tables import write_training_log
from .errors import ConfigError, DataError
from .hf import (
    LoraSettings,
    count_parameters,
    load_model,
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
from .io import atomic_dir
from .prompts import (
    NONE_LABEL,
    PromptSpec,
    ParsedLabels,
    chat_fallback_note,
    example_block,
    format_labels,
    parse_labels,
    render_prompt,
    sample_demos,
    uses_chat_template,
)

log = logging.getLogger("labeldist.finetune")

# RL uses LoRA instead of full finetuning above this many parameters (see the module docstring).
LORA_MIN_PARAMS = 50_000_000
# Activation checkpointing above this many parameters: it trades ~30% more compute for activation memory,
# which billion-parameter models need on a GPU and a 135M model on a CPU does not.
CHECKPOINTING_MIN_PARAMS = 1_000_000_000
# save_pretrained's shard size for merged models (transformers 5 defaults to 50GB; smaller shards keep
# the written files and any per-shard buffers small).
MAX_SHARD_SIZE = "5GB"
# How a trained model becomes the saved one (`merge_plan`).
MERGE_NONE = "none"  # full finetuning: save the trained weights as they are
MERGE_IN_PLACE = "in_place"  # unquantized LoRA: merge_and_unload where the model is
MERGE_ON_CPU = "cpu"  # 4-bit LoRA: save the adapter, merge it into an unquantized reload on the CPU


# ---- settings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SFTSettings(FromConfig):
    """Config `finetune.sft` (defaults: the config schema)."""

    CONFIG_BLOCK: ClassVar[str] = "finetune.sft"

    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lr: float
    max_steps: int
    batch_size: int
    load_in_4bit: bool
    seed: int
    k: int | None

    @property
    def lora(self) -> LoraSettings:
        """The LoRA part of the settings."""
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout)


@dataclass(frozen=True)
class RLSettings(FromConfig):
    """Config `finetune.rl` (defaults: the config schema)."""

    CONFIG_BLOCK: ClassVar[str] = "finetune.rl"

    start_from: str
    max_steps: int
    num_generations: int
    batch_size: int
    beta: float
    lr: float
    max_completion_length: int
    format_reward: float
    seed: int
    k: int | None

    def __post_init__(self) -> None:
        # GRPO scores each prompt's group of completions together, so a batch must hold whole groups.
        if self.num_generations < 2 or self.batch_size % self.num_generations:
            raise ConfigError(
                f"finetune.rl.batch_size ({self.batch_size}) must be a multiple of finetune.rl.num_generations "
                f"({self.num_generations}, at least 2): each step scores whole groups of completions per prompt"
            )


# ---- prompts and completions -------------------------------------------------------------------
def completion_for(spec: PromptSpec, labels: Sequence[str], chat: bool) -> str:
    """The target text after a rendered prompt for gold `labels`.

    Plain prompts end with the output prefix minus its trailing space, so the completion is that space
    plus `completion_text` (exactly what the demos show); chat prompts end with the assistant header, so it
    is the formatted list alone, as in the demo turns (TRL appends EOS, the templates' end of turn).
    """
    if chat:
        return format_labels(labels, spec.label_format)
    full = example_block("x", labels, spec)
    open_ = example_block("x", None, spec)
    return full[len(open_):]


def prompt_records(
    queries: Sequence[dict],
    demo_pool: Sequence[dict],
    spec: PromptSpec,
    label_set: Sequence[str],
    seed: int,
    tokenizer: Any = None,
) -> list[dict]:
    """One training record per query: `id`, `prompt` (the generation stage's prompt format), `completion`
    (the gold label list as the model should write it) and `gold` (the gold label list).

    Demos are drawn per query from `demo_pool` minus the query itself, with one seeded rng over the whole
    list, so the records are reproducible for a seed.
    """
    rng = random.Random(seed)
    texts = {r["id"]: (r["text"], r["labels"]) for r in demo_pool}
    pool = [(r["id"], r["labels"]) for r in demo_pool]
    chat = uses_chat_template(spec, tokenizer)
    out = []
    for rec in queries:
        candidates = [p for p in pool if p[0] != rec["id"]]
        demo_ids = sample_demos(candidates, spec.k, spec.demo_sampling, label_set, rng, spec.multilabel_ratio)
        demos = [texts[i] for i in demo_ids]
        out.append({
            "id": rec["id"],
            "prompt": render_prompt(spec, label_set, demos, rec["text"], tokenizer),
            "completion": completion_for(spec, rec["labels"], chat),
            "gold": list(rec["labels"]),
        })
    return out


def training_spec(spec: PromptSpec, k: int | None) -> PromptSpec:
    """The prompt spec training prompts are rendered with: the evaluation spec with `k` demos (None: the
    spec's own k). Everything else (instruction, label list, format, chat template) stays as evaluated."""
    return spec if k is None else replace(spec, k=k)


# ---- did training work: dev F1 of the model's own outputs before and after ----------------------
Evaluator = Callable[[Any, Any], float]
"""(model, tokenizer) -> dev F1: `dev_evaluator`'s result, called before and after training."""


def dev_evaluator(data_files: Mapping[str, str | Path], spec: PromptSpec, gen_cfg: Mapping[str, Any],
                  seed: int) -> Evaluator:
    """A function that returns a model's mean label-set F1 (`mean_f1`) on the dev subset: greedy outputs
    for the generation stage's own dev prompts (the baseline demo set of `seed`, labeldist.generation),
    decoded by labeldist.extraction.extract with config `generation`'s max_new_tokens and batch size (no
    marginal, no hidden states): the number the generation stage's dev records give for that model.

    `data_files` maps the data stage keys train, dev, labels and subsets to their paths."""
    from .context import fit_queries
    from .extraction import ExtractionSettings, extract
    from .generation import choose_demos, demo_rng, describe_run, load_task_data

    data = load_task_data(data_files, "dev")
    settings = ExtractionSettings.from_config(gen_cfg, marginal=False)
    demos = [data.pool[i] for i in choose_demos(data, spec, demo_rng("baseline", seed))]
    golds = [ex["labels"] for ex in data.examples]

    def evaluate(model: Any, tokenizer: Any) -> float:
        chat = uses_chat_template(spec, tokenizer)
        # fitted to the model's context as the generation stage fits them (labeldist.context)
        render = lambda text: render_prompt(spec, data.label_set, demos, text, tokenizer)  # noqa: E731
        prompts = [f.prompt for f in fit_queries([ex["text"] for ex in data.examples], render, tokenizer,
                                                 model.config, settings.max_new_tokens,
                                                 add_special_tokens=not chat, where=describe_run(data, model))]
        side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched greedy generation
        was_training = model.training
        model.eval()
        try:
            results = extract(model, tokenizer, prompts, spec, data.label_set, settings,
                              add_special_tokens=not chat, progress=False)
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        return mean_f1([r.record["output_text"] for r in results], golds, data.label_set, spec.label_format)

    return evaluate


def with_dev_f1(frame: pd.DataFrame, before: float | None, after: float | None) -> pd.DataFrame:
    """The training log with the dev F1 before training (a row at step 0) and after it (on the last step's
    row, or a new row at step 0 when nothing was logged) in column `dev_f1`; unchanged when both are None."""
    if before is None and after is None:
        return frame
    out = frame.copy()
    out["dev_f1"] = np.nan
    last = int(out["step"].max()) if len(out) else 0
    if after is not None:
        if len(out):
            out.loc[out["step"] == last, "dev_f1"] = after
        else:
            out = pd.DataFrame({"step": [last], "dev_f1": [after]})
    if before is not None:
        out = pd.concat([pd.DataFrame({"step": [0], "dev_f1": [before]}), out], ignore_index=True)
    cols = ["step"] + [c for c in out.columns if c != "step"]
    return out[cols]


def _dev_f1(evaluate: Evaluator | None, model: Any, tokenizer: Any, when: str) -> float | None:
    """`evaluate(model, tokenizer)` logged as the dev F1 `when` ("before"/"after" training); None without one."""
    if evaluate is None:
        return None
    score = evaluate(model, tokenizer)
    log.info("dev F1 of the model's own outputs %s training: %.3f", when, score)
    return score


# ---- reward -------------------------------------------------------------------------------------
def is_parsable(parsed: ParsedLabels) -> bool:
    """True when the output named at least one label (or `none`) and nothing outside the label set."""
    return not parsed.no_label and not parsed.unknown


def label_set_f1(predicted: Sequence[str], gold: Sequence[str], label_set: Sequence[str]) -> float:
    """Per-example F1 between two label sets, with `none` standing for an empty gold set.

    `predicted` may contain `none`; an empty prediction scores 0. Computed by sklearn's binary F1 over the
    multi-hot vectors of label_set + [none].
    """
    from sklearn.metrics import f1_score

    names = list(label_set) + [NONE_LABEL]
    gold_set = set(gold) or {NONE_LABEL}
    pred_set = set(predicted)
    y_true = [int(n in gold_set) for n in names]
    y_pred = [int(n in pred_set) for n in names]
    return float(f1_score(y_true, y_pred, zero_division=0.0))


def label_reward(
    completion: str, gold: Sequence[str], label_set: Sequence[str], fmt: str, format_reward: float
) -> float:
    """The RL reward of one completion: F1 of its parsed label set against `gold`, plus `format_reward`
    when the output is parsable (see `is_parsable`) or minus it when it is not.

    A perfect parsable answer scores 1 + format_reward.
    """
    parsed = parse_labels(completion, fmt, label_set)
    predicted = list(parsed.labels) + ([NONE_LABEL] if parsed.said_none else [])
    f1 = label_set_f1(predicted, gold, label_set)
    return f1 + (format_reward if is_parsable(parsed) else -format_reward)


def make_reward_func(label_set: Sequence[str], fmt: str, format_reward: float) -> Callable[..., list[float]]:
    """A TRL reward function: `(completions, gold, **kwargs) -> list[float]` of `label_reward`.

    TRL passes the dataset's extra columns (here `gold`) as keyword arguments, one entry per completion.
    """
    labels = list(label_set)

    def label_f1_reward(completions: Sequence[Any], gold: Sequence[Sequence[str]], **kwargs: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [label_reward(t, g, labels, fmt, format_reward) for t, g in zip(texts, gold)]

    return label_f1_reward


# ---- LoRA or full finetuning, merging, saving (loading and 4-bit plumbing: labeldist.hf) -----------
def rl_uses_lora(n_params: int, quantized: bool) -> bool:
    """True when RL trains a LoRA adapter: always on a 4-bit model (its weights cannot be trained), else
    above LORA_MIN_PARAMS parameters; False means full finetuning."""
    return bool(quantized or n_params > LORA_MIN_PARAMS)


def merge_plan(use_lora: bool, quantized: bool) -> str:
    """How the trained model becomes the saved folder: MERGE_NONE (no adapter), MERGE_IN_PLACE (merge the
    adapter where the unquantized model is) or MERGE_ON_CPU (4-bit base: reload the start model unquantized
    on the CPU and merge the saved adapter there, since a 70B model in bf16 does not fit one GPU)."""
    if not use_lora:
        return MERGE_NONE
    return MERGE_ON_CPU if quantized else MERGE_IN_PLACE


def merge_dtype(dtype: str) -> str:
    """The dtype name of the unquantized reload for a CPU merge: the config's `dtype`, with `auto` read as
    bfloat16 (the dtype 4-bit training computes in, and the one the host memory request is sized for)."""
    return "bfloat16" if dtype == "auto" else dtype


def _common_args(
    lr: float, max_steps: int, batch_size: int, seed: int, device: str, scratch: str, n_params: int
) -> dict:
    """TrainingArguments shared by every regime: no checkpoints, no hub, no reporting, dense logging,
    activation checkpointing only above CHECKPOINTING_MIN_PARAMS (it slows small models down for no
    memory they need)."""
    return {
        "output_dir": scratch,
        "learning_rate": lr,
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "logging_steps": max(1, max_steps // 100),
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "disable_tqdm": False,
        "activation_checkpointing": n_params > CHECKPOINTING_MIN_PARAMS,
        **trainer_precision(device),
    }


def save_folder(model: Any, tokenizer: Any, log_frame: pd.DataFrame, folder: Path) -> None:
    """Write model (sharded safetensors, MAX_SHARD_SIZE), tokenizer and training_log.csv into `folder` (a
    temp folder of atomic_dir)."""
    model.save_pretrained(folder, max_shard_size=MAX_SHARD_SIZE)
    tokenizer.save_pretrained(folder)
    write_training_log(folder, log_frame)


def merge_adapter_on_cpu(adapter_dir: str | Path, base_path: str | Path, dtype: str = "auto") -> Any:
    """The LoRA adapter in `adapter_dir` merged into an unquantized copy of the model in `base_path` (a
    save_pretrained folder or model_ref.json), loaded on the CPU in `merge_dtype(dtype)`; returns the merged
    transformers model, on the CPU.

    transformers 5 always loads weights straight from the checkpoint into the model (no second copy;
    `low_cpu_mem_usage` is gone), `device_map="cpu"` keeps every tensor in host memory even on a GPU node,
    and PEFT reads the adapter onto the CPU too (`torch_device`, which otherwise picks the GPU) and
    allocates it once (`low_cpu_mem_usage`).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .models import DTYPES, resolve_model_source

    source = resolve_model_source(base_path)
    name = merge_dtype(dtype)
    if name not in DTYPES:
        raise ConfigError(f"merge_adapter_on_cpu: unknown dtype {dtype!r} (use auto, {', '.join(DTYPES)})")
    log.info("merging the LoRA adapter on the CPU into %s in %s", source.location, name)
    base = AutoModelForCausalLM.from_pretrained(source.location, dtype=DTYPES[name], device_map="cpu",
                                                **source.hub_kwargs())
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir), torch_device="cpu", low_cpu_mem_usage=True)
    return peft_model.merge_and_unload()


def finish_model(trained: Any, start_path: str | Path, plan: str, dtype: str = "auto") -> Any:
    """The model to save after training `trained` (a PeftModel unless `plan` is MERGE_NONE) from
    `start_path`, following `merge_plan`: as is, merged in place, or (MERGE_ON_CPU) with its adapter saved
    to a temporary folder and merged into an unquantized CPU reload of `start_path`."""
    if plan == MERGE_NONE:
        return trained
    if plan == MERGE_IN_PLACE:
        return trained.merge_and_unload()
    if plan != MERGE_ON_CPU:
        raise ValueError(f"finish_model: unknown merge plan {plan!r}")
    with tempfile.TemporaryDirectory() as adapter_dir:
        trained.save_pretrained(adapter_dir)
        return merge_adapter_on_cpu(adapter_dir, start_path, dtype)


# ---- SFT ----------------------------------------------------------------------------------------
def sft_trainer(model: Any, tokenizer: Any, examples: Sequence[dict], settings: SFTSettings, device: str,
                scratch: str | Path, callbacks: Sequence[Any] = ()) -> Any:
    """TRL's SFTTrainer for `model` (loaded, on `device`) on `examples` ({"prompt", "completion"}) with a
    LoRA adapter on every linear layer: loss on the completion tokens only (TRL's prompt-completion
    datasets; TRL appends the tokenizer's EOS to each completion), checkpoints nowhere but `scratch`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    args = SFTConfig(
        **_common_args(settings.lr, settings.max_steps, settings.batch_size, settings.seed, device, str(scratch),
                       count_parameters(model)),
        completion_only_loss=True,
        max_length=None,
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(settings.lora), callbacks=list(callbacks))


def train_sft(
    base_path: str | Path,
    out_dir: str | Path,
    examples: Sequence[dict],
    settings: SFTSettings,
    device: str = "auto",
    dtype: str = "auto",
    callbacks: Sequence[Any] = (),
    evaluate: Evaluator | None = None,
) -> pd.DataFrame:
    """Finetune the model in `base_path` on `examples` ({"prompt", "completion"}, see `prompt_records`)
    with TRL's SFTTrainer and LoRA (QLoRA when `settings.load_in_4bit` and `quantization_plan` allow it),
    merge the adapter (`merge_plan`: in place, or on the CPU for a 4-bit base) and write the folder
    `out_dir` atomically.

    With `evaluate` (`dev_evaluator`), the log also holds the dev F1 of the model's own outputs before and
    after training (`with_dev_f1`). Returns the training log (also written as `out_dir/training_log.csv`).
    An exception during training leaves no `out_dir`.
    """
    import transformers

    device = resolve_device(device)
    quantized = training_quantized(settings.load_in_4bit, device)
    transformers.set_seed(settings.seed)
    model, tokenizer = load_model(base_path, device=device, dtype=dtype, load_in_4bit=quantized)
    before = _dev_f1(evaluate, model, tokenizer, "before")
    if quantized:
        model = prepare_quantized(model)
    log.info("SFT: %d examples, %d steps, batch %d, lr %g, LoRA r=%d on %s (%s params)%s", len(examples),
             settings.max_steps, settings.batch_size, settings.lr, settings.lora_r, device,
             f"{count_parameters(model):,}", ", 4-bit" if quantized else "")
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as scratch:
        trainer = sft_trainer(model, tokenizer, examples, settings, device, scratch, callbacks)
        trainer.train()
        merged = finish_model(trainer.model, base_path, merge_plan(True, quantized), dtype)
        frame = with_dev_f1(training_log_frame(trainer.state.log_history), before,
                            _dev_f1(evaluate, merged, tokenizer, "after"))
        save_folder(merged, tokenizer, frame, tmp)
    return frame


# ---- RL -----------------------------------------------------------------------------------------
def train_rl(
    start_path: str | Path,
    out_dir: str | Path,
    examples: Sequence[dict],
    label_set: Sequence[str],
    label_format: str,
    settings: RLSettings,
    lora: LoraSettings,
    device: str = "auto",
    dtype: str = "auto",
    callbacks: Sequence[Any] = (),
    load_in_4bit: bool = False,
    evaluate: Evaluator | None = None,
) -> pd.DataFrame:
    """GRPO-train the model in `start_path` on `examples` ({"prompt", "gold"}) with the label-F1 + format
    reward (`make_reward_func`), and write the merged folder `out_dir` atomically.

    With `load_in_4bit` (and CUDA + bitsandbytes, `quantization_plan`) the start model is loaded in 4-bit,
    prepared for k-bit training and trained with LoRA (`lora`), and the adapter is merged on the CPU into an
    unquantized reload of `start_path` (`merge_plan`). Unquantized: full finetuning up to LORA_MIN_PARAMS
    parameters, LoRA above (`rl_uses_lora`). Returns the training log (also written as
    `out_dir/training_log.csv`, with reward, loss, learning_rate and kl when beta > 0, and with `evaluate`
    the dev F1 before and after training as for SFT). An exception during training leaves no `out_dir`.
    """
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    device = resolve_device(device)
    quantized = training_quantized(load_in_4bit, device)
    transformers.set_seed(settings.seed)
    model, tokenizer = load_model(start_path, device=device, dtype=dtype, load_in_4bit=quantized)
    tokenizer.padding_side = "left"  # GRPO generates batches of prompts
    use_lora = rl_uses_lora(count_parameters(model), quantized)
    before = _dev_f1(evaluate, model, tokenizer, "before")
    if quantized:
        model = prepare_quantized(model)
    dataset = Dataset.from_list([{"prompt": e["prompt"], "gold": list(e["gold"])} for e in examples])
    log.info("GRPO: %d prompts, %d steps, batch %d, %d generations, beta %g, lr %g, %s on %s (%s params)%s",
             len(dataset), settings.max_steps, settings.batch_size, settings.num_generations, settings.beta,
             settings.lr, "LoRA" if use_lora else "full finetuning", device, f"{count_parameters(model):,}",
             ", 4-bit" if quantized else "")
    reward = make_reward_func(label_set, label_format, settings.format_reward)
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as scratch:
        args = GRPOConfig(
            **_common_args(settings.lr, settings.max_steps, settings.batch_size, settings.seed, device, scratch,
                           count_parameters(model)),
            num_generations=settings.num_generations,
            max_completion_length=settings.max_completion_length,
            beta=settings.beta,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer,
            peft_config=lora_config(lora) if use_lora else None, callbacks=list(callbacks),
        )
        trainer.train()
        trained = finish_model(trainer.model, start_path, merge_plan(use_lora, quantized), dtype)
        frame = with_dev_f1(training_log_frame(trainer.state.log_history), before,
                            _dev_f1(evaluate, trained, tokenizer, "after"))
        save_folder(trained, tokenizer, frame, tmp)
    return frame


# ---- file-level entry points (the workflow scripts call these) -------------------------------------
def _load_stage_data(data_files: Mapping[str, str | Path]) -> tuple[list[str], list[dict], list[dict]]:
    """(label names, train split records, demo pool) from the data stage's files; DataError names the train
    split when it has no example with a gold label (nothing to finetune on; read_split rejects an empty one)."""
    labels = read_label_set(data_files["labels"])
    train = read_split(data_files["train"], labels)
    if not any(r["labels"] for r in train):
        raise DataError(data_files["train"], f"no train example has a gold label (all {len(train)} are "
                        "'none'): the sft and rl regimes need labelled train examples", field="labels")
    return labels.labels, train, demo_pool(train, read_subsets(data_files["subsets"], required=("train",)))


def _training_inputs(
    model_path: str | Path, data_files: Mapping[str, str | Path], prompt_cfg: Mapping[str, Any], k: int | None,
    seed: int, gen_cfg: Mapping[str, Any] | None,
) -> tuple[list[str], PromptSpec, list[dict], Evaluator | None]:
    """(label names, evaluation prompt spec, training records (`prompt_records` with `training_spec`'s k),
    the dev evaluator or None without `gen_cfg`) of one training job; logs the chat-template fallback."""
    spec = PromptSpec.from_config(prompt_cfg)
    label_set, train, pool = _load_stage_data(data_files)
    tokenizer = load_tokenizer(model_path) if spec.use_chat_template else None
    note = chat_fallback_note(spec, tokenizer, str(model_path))
    if note:
        log.warning("%s, as at evaluation", note)
    examples = prompt_records(train, pool, training_spec(spec, k), label_set, seed, tokenizer)
    log.info("%d training prompts with %d demos each", len(examples), training_spec(spec, k).k)
    evaluate = dev_evaluator(data_files, spec, gen_cfg, seed) if gen_cfg is not None else None
    return label_set, spec, examples, evaluate


def sft_from_files(
    base_path: str | Path,
    data_files: Mapping[str, str | Path],
    out_dir: str | Path,
    prompt_cfg: Mapping[str, Any],
    sft_cfg: Mapping[str, Any],
    gen_cfg: Mapping[str, Any] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    model_load_in_4bit: bool = False,
) -> pd.DataFrame:
    """The `sft` rule: SFT on the train split's prompts (see `prompt_records`); returns the training log.

    `data_files` maps the data stage keys train, labels, subsets (and dev, read with `gen_cfg`, config
    `generation`, to log the dev F1 before and after training: `dev_evaluator`). Trains in 4-bit when
    `finetune.sft.load_in_4bit` or the model's `load_in_4bit` (`model_load_in_4bit`) asks for it and the
    machine allows it (`quantization_plan`)."""
    set_threads(threads)
    settings = SFTSettings.from_config(sft_cfg)
    settings = replace(settings, load_in_4bit=settings.load_in_4bit or bool(model_load_in_4bit))
    _, _, examples, evaluate = _training_inputs(base_path, data_files, prompt_cfg, settings.k, settings.seed,
                                                gen_cfg)
    return train_sft(base_path, out_dir, examples, settings, device=device, dtype=dtype, evaluate=evaluate)


def rl_from_files(
    start_path: str | Path,
    data_files: Mapping[str, str | Path],
    out_dir: str | Path,
    prompt_cfg: Mapping[str, Any],
    rl_cfg: Mapping[str, Any],
    sft_cfg: Mapping[str, Any],
    gen_cfg: Mapping[str, Any] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    model_load_in_4bit: bool = False,
) -> pd.DataFrame:
    """The `rl` rule: GRPO from `start_path` (the SFT or base folder) on the train split's prompts, LoRA
    settings from `finetune.sft` where LoRA is used; returns the training log (`data_files` and `gen_cfg`
    as for `sft_from_files`).

    Like SFT, trains in 4-bit when `finetune.sft.load_in_4bit` (the QLoRA setting) or the model's
    `load_in_4bit` (`model_load_in_4bit`) asks for it and the machine allows it (`quantization_plan`)."""
    set_threads(threads)
    settings = RLSettings.from_config(rl_cfg)
    sft = SFTSettings.from_config(sft_cfg)
    label_set, spec, examples, evaluate = _training_inputs(start_path, data_files, prompt_cfg, settings.k,
                                                           settings.seed, gen_cfg)
    return train_rl(start_path, out_dir, examples, label_set, spec.label_format, settings, sft.lora,
                    device=device, dtype=dtype, load_in_4bit=sft.load_in_4bit or bool(model_load_in_4bit),
                    evaluate=evaluate)


def mean_f1(outputs: Sequence[str], golds: Sequence[Sequence[str]], label_set: Sequence[str], fmt: str) -> float:
    """Mean per-example label-set F1 of raw outputs against gold label lists (see `label_set_f1`)."""
    scores = []
    for text, gold in zip(outputs, golds):
        parsed = parse_labels(text, fmt, label_set)
        scores.append(label_set_f1(list(parsed.labels) + ([NONE_LABEL] if parsed.said_none else []), gold, label_set))
    return float(np.mean(scores)) if scores else 0.0
