# Helpers only: config validation, wildcard constraints, input functions and target lists.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile

# The library of the checkout this file belongs to (two folders up): also where the workflow runs as a
# module of another Snakefile or from a snakedeploy deployment, whose workflow.basedir is the
# deployment's folder. A remote module (github(...)) uses the installed library.
if isinstance(workflow.current_basedir, LocalSourceFile):
    sys.path.insert(0, str(Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1] / "src"))

from labeldist.config import (
    ESTIMATOR_PROMPTING,
    PROMPTING_MODES,
    finetune_block,
    REGIMES as REGIMES_ALL,
    model_prompting,
    model_runs,
    pretrain_dataset,
    pretrain_prompt,
    validate_config,
)
from labeldist.artifacts import paths as layout
from labeldist.batched import evaluation_groups, run_estimators
from labeldist.errors import ConfigError

try:
    _validated = validate_config(config, base_dir=".", source=", ".join(map(str, workflow.configfiles)) or "config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

R = config["results"]
DATASETS = list(config["datasets"])
MODELS = list(config["models"])
REGIMES = list(config["regimes"])
PROMPTING = list(config["prompting"])
SEEDS = list(config["seeds"])
ESTIMATORS = list(config["estimators"])
ENCODER = "encoder"  # the pseudo model key of Demux estimates (docs/formats.md)
SPLITS = ["train", "dev", "test"]
# Every (dataset, model, regime) planned: models.<key>.datasets/regimes narrow the full grid.
RUNS = model_runs(config)
# Runs that run the same prompting modes (models.<key>.prompting) share one grouped estimate-and-metrics
# rule (labeldist.batched.evaluation_groups).
EVAL_GROUPS = evaluation_groups(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS + [ENCODER]),
    regime="|".join(REGIMES_ALL),
    prompting="|".join(PROMPTING_MODES),


ENV = "../../envs/labeldist.yaml"

# The GPU resource name of every GPU job, from config gpu_resource: gpu (--gpus=N) or gres
# (--gres=gpu:N), never both; GPU rules declare it through labeldist.batched.gpu_resource.
GPU_KEY = config["gpu_resource"]


# ---- models -------------------------------------------------------------------------------------
def model_cfg(model):
    """The config block of a model key."""
    return config["models"][model]


def base_model_mem_mb(model):
    """Host memory of the base-model rule: pretraining the tiny model, converting a GGUF (the float32
    weights twice over, ~8 bytes per parameter, plus the file), or writing a reference."""
    source = model_cfg(model)["source"]
    if source == "gguf":
        return int(2000 + 10000 * model_cfg(model)["size_b"])
    return 3000 if source == "builtin" else 500


def base_model_dir(model):
    return layout.build(layout.BASE_MODEL, R, model=model)


def demux_model_dir(dataset, seed):
    """The folder Demux saves one seed's model in."""
    return layout.build(layout.DEMUX_MODEL, R, dataset=dataset, model=ENCODER, seed=seed)


def model_dir(dataset, model, regime):
    """The save_pretrained folder a (dataset, model, regime) generation loads."""
    if regime == "base":
        return base_model_dir(model)
    return layout.build(layout.TUNED_MODEL, R, dataset=dataset, model=model, regime=regime)


def get_model_dir(wildcards):
    return model_dir(wildcards.dataset, wildcards.model, wildcards.regime)


def get_base_model_dir(wildcards):
    return base_model_dir(wildcards.model)


def get_finetune_cfg(kind):
    """An input function returning the finetune.<kind> block (sft, rl, seq_cls) of the job's model: the
    top-level block with the model's own keys laid over it (labeldist.config.finetune_block)."""

    def settings(wildcards):
        return finetune_block(config, wildcards.model, kind)

    return settings


def get_rl_start(wildcards):
    """finetune.rl.start_from of the model: the SFT folder of the same dataset and model, or the base model."""
    if finetune_block(config, wildcards.model, "rl")["start_from"] == "sft":
        return model_dir(wildcards.dataset, wildcards.model, "sft")
    return base_model_dir(wildcards.model)


def get_model_cfg(wildcards):
    """The config block of the job's model."""
    return model_cfg(wildcards.model)


def get_model_dtype(wildcards):
    return model_cfg(wildcards.model)["dtype"]


def get_model_4bit(wildcards):
    return model_cfg(wildcards.model)["load_in_4bit"]


def get_pretrain_inputs(wildcards):
    """The base-model rule's inputs: the pretraining dataset's train split and labels.json for the built-in
    model, nothing for hub, local and GGUF models."""
    dataset = pretrain_dataset(model_cfg(wildcards.model))
    return {key: data_files(dataset)[key] for key in ("train", "labels")} if dataset else {}


# ---- data ---------------------------------------------------------------------------------------
def data_files(dataset):
    """The data stage's outputs for one dataset."""
    names = {**{split: f"{split}.jsonl" for split in SPLITS}, "labels": "labels.json", "subsets": "subsets.json"}
    return {key: layout.build(layout.DATA, R, dataset=dataset, name=name) for key, name in names.items()}


def get_dataset_inputs(wildcards):
    """The local files the dataset's loader reads (none for the synthetic loader or a hub id)."""
    from labeldist.data import input_files

    return input_files(config["datasets"][wildcards.dataset])


def get_data(wildcards):
    return data_files(wildcards.dataset)


def data_inputs(*keys):
    """An input function returning {key: path} of the job's dataset for the data stage's `keys`."""

    def inputs(wildcards):
        files = data_files(wildcards.dataset)
        return {key: files[key] for key in keys}

    return inputs


def get_prompt_cfg(wildcards):
    """The prompt block (config `prompts`) of the job's dataset."""
    return config["prompts"][config["datasets"][wildcards.dataset]["prompt"]]


# ---- generation and estimates -------------------------------------------------------------------
def generation_subsets(prompting):
    """Evaluation subsets a prompting mode is run on (docs/formats.md)."""
    if prompting == "baseline":
        subsets = ["main", "dev", "multi"]
        if "linear_probe" in ESTIMATORS:
            subsets.append("train")
        return subsets
    if prompting == "icl_sweep":
        return ["main"]
    return ["main", "dev"]


def generation_file(dataset, model, regime, prompting, subset, seed):
    return layout.build(
        layout.GENERATION, R, dataset=dataset, model=model, regime=regime, prompting=prompting, subset=subset, seed=seed
    )


def hidden_file(dataset, model, regime, subset, seed):
    return layout.build(layout.HIDDEN, R, dataset=dataset, model=model, regime=regime, subset=subset, seed=seed)


def generation_files(prompting=None, subset=None, seed=None):
    """Every generation file the config plans, optionally for one prompting mode, subset and seed."""
    out = []
    for p in PROMPTING:
        if prompting is not None and p != prompting:
            continue
        for s in generation_subsets(p):
            if subset is not None and s != subset:
                continue
            for d, m, r in RUNS:
                if p in model_prompting(config, m, r):
                    out += [generation_file(d, m, r, p, s, x) for x in SEEDS if seed is None or x == seed]
    return out


def get_probe_inputs(wildcards):
    """The probe job's inputs: hidden states of the train/main/dev subsets and baseline generations of
    train and main (the model's own emitted labels) of every seed, the train split and labels.json."""
    w = wildcards
    files = {
        f"hidden__{s}__{seed}": hidden_file(w.dataset, w.model, w.regime, s, seed)
        for s in ("train", "main", "dev")
        for seed in SEEDS
    }
    files.update(
        {
            f"generations__{s}__{seed}": generation_file(w.dataset, w.model, w.regime, "baseline", s, seed)
            for s in ("train", "main")
            for seed in SEEDS
        }
    )
    files.update(data_inputs("train", "labels")(w))
    return files


def estimate_combos():
    """(dataset, model, regime, estimator) for every estimate the config plans: per run, the estimators
    whose prompting mode the model runs (Demux once per dataset, the classification head on base)."""
    combos = []
    for d in DATASETS:
        for est in ESTIMATORS:
            if est == "demux":
                combos.append((d, ENCODER, "base", est))
                continue
            for d2, m, r in RUNS:
                if d2 != d or (est == "seq_cls_head" and r != "base"):
                    continue
                needs = ESTIMATOR_PROMPTING[est]
                if needs is None or needs in model_prompting(config, m, r):
                    combos.append((d, m, r, est))
    return combos


def estimate_file(dataset, model, regime, estimator, suffix=".parquet"):
    """The estimate file of one estimator of a run (every seed and subset), or with `suffix` a file the
    probe stage writes beside it (labeldist.artifacts.estimates)."""
    return layout.build(
        layout.ESTIMATE, R, dataset=dataset, model=model, regime=regime, estimator=estimator, suffix=suffix
    )


def metric_file(dataset, model, regime):
    """The metrics file of one (dataset, model, regime): every estimator x seed of the run."""
    return layout.build(layout.METRICS, R, dataset=dataset, model=model, regime=regime)


def metric_files():
    """The metrics file of every (dataset, model, regime) with at least one estimate, in config order."""
    return [metric_file(d, m, r) for d, m, r in dict.fromkeys(c[:3] for c in estimate_combos())]


# ---- targets ------------------------------------------------------------------------------------
def final_targets():
    """The final outputs of the workflow: data, base models, then what each later stage registers."""
    targets = []
    for d in DATASETS:
        targets += list(data_files(d).values())
    targets += [base_model_dir(m) for m in MODELS]
    for stage_targets in STAGE_TARGETS:
        targets += stage_targets()
    return targets


# Stages after models register a function returning their final targets here.
STAGE_TARGETS = []


# ---- resources at study scale (estimates from labeldist.cost; see README "Running at study scale") ---
# Rules that load an LLM use these in `resources:`, e.g.
#   gpu=lambda wildcards: gpu_for(wildcards.model, "generate"),
#   mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
#   runtime=lambda wildcards, attempt: runtime_for("generate", wildcards, attempt),
# Memory and wall time grow with `attempt`, so `--retries` (profiles/slurm) recovers from OOM/TIMEOUT.
from labeldist import cost as _cost

TRAIN_STAGES = ("sft", "rl", "seq_cls_head")


def gpu_for(model, stage="generate"):
    """GPUs a job of `model` asks for: 0 for a CPU model (gpu_mem_gb 0) or `device: cpu`, else enough
    80 GB cards for gpu_mem_gb (x1.5 for training stages). `model` may be ENCODER (Demux)."""
    if config["device"] == "cpu":
        return 0
    if model == ENCODER:
        return 1 if _cost.demux_uses_gpu(config["demux"]) else 0
    need = model_cfg(model)["gpu_mem_gb"]
    if stage in TRAIN_STAGES:
        need *= _cost.TRAIN_MEM_FACTOR
    return _cost.gpus_needed(need)


# CPU threads of one job that runs a real model on the CPU: one per 8 cores of the run. Measured on the
# 2-core development machine with the other work paused, SmolLM2's baseline generation of 8 MFRC prompts
# took 12.4-13.4 s on 1 thread and 19-33 s on 2, and a LoRA SFT step 12-22 s on 1 thread and 23-45 s on 2
# (torch's threads pay off on big matrices, not on decoding one token at a time): two 1-thread jobs side by
# side do far more than one 2-thread job. A 16-core machine runs 8 such jobs of 2 threads at once.
# Where the run has no core count (a cluster executor, the API without one), 2 threads per job.
def _run_cores():
    try:
        return workflow.cores
    except WorkflowError:  # Snakemake raises when no total number of cores is defined
        return None


CPU_MODEL_THREADS = max(1, _run_cores() // 8) if _run_cores() else 2


def threads_for(model):
    """CPU threads of a job that loads `model`: 4 beside a GPU (tokenising, data loading), 1 for a tiny
    model (< 10M parameters: its tensors are too small to gain from more), else CPU_MODEL_THREADS."""
    if gpu_for(model):
        return 4
    if model == ENCODER:
        return CPU_MODEL_THREADS
    return 1 if model_cfg(model)["size_b"] < 0.01 else CPU_MODEL_THREADS


def llm_mem_mb(model, attempt=1, stage="generate"):
    """Host memory (MB) of a job that loads `model`, from its size, dtype/4-bit and device, growing by
    half per attempt; light for GPU jobs (the weights live on the GPU)."""
    return _cost.host_mem_mb(model_cfg(model), attempt, train=stage in TRAIN_STAGES)


def runtime_for(stage, wildcards, attempt=1):
    """Wall-time request (minutes) of one job of `stage` ('generate', 'sft', 'rl', 'seq_cls_head',
    'demux') for its wildcards: labeldist.cost's estimate x 3 + 10 min, growing by half per attempt."""
    if stage == "generate":
        seconds = _cost.generation_seconds(
            config, wildcards.dataset, wildcards.model, wildcards.prompting, wildcards.subset
        )
    elif stage in TRAIN_STAGES:
        seconds = _cost.finetune_seconds(config, wildcards.dataset, wildcards.model, stage)
    elif stage == "demux":
        seconds = _cost.demux_seconds(config, wildcards.dataset)
    else:
        raise ValueError(f"runtime_for: unknown stage {stage!r}")
    return _cost.runtime_minutes(seconds, attempt)


# After a failed run (with or without --keep-going), list what failed and why in one file.
onerror:
    from labeldist.failures import main as report_failures

    report_failures(["--csv", f"{R}/failures.csv"])


# A run that succeeds leaves no failure report of an earlier run behind.
onsuccess:
    Path(f"{R}/failures.csv").unlink(missing_ok=True)
