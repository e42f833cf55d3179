"""Configuration: JSON-schema validation with defaults, then the cross-key checks a schema can't express.

Every error names the key (as a dotted path) and, where relevant, the file; it is raised before any
Snakemake job starts.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jsonschema
import yaml

from .errors import ConfigError, DataError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# Which prompting mode each estimator reads (None: it needs no generation file).
REGIMES = ("base", "sft", "rl")
"""The finetuning regimes, in pipeline order (the schema's `regimes` enum; the `regime` wildcard)."""
PROMPTING_MODES = ("baseline", "unary", "pairwise", "icl_sweep")
"""The prompting modes (the schema's `prompting` enum; the `prompting` wildcard)."""
ESTIMATOR_PROMPTING: dict[str, str | None] = {
    "first_step": "baseline",
    "compare_to_none": "baseline",
    "compare_to_none_platt": "baseline",
    "max_over_steps": "baseline",
    "first_step_whole": "baseline",
    "max_over_steps_whole": "baseline",
    "output": "baseline",
    "conditional": "baseline",
    "joint": "baseline",
    "marginal": "baseline",
    "linear_probe": "baseline",
    "unary": "unary",
    "pairwise_bt": "pairwise",
    "pairwise_outcome": "pairwise",
    "demux": None,
    "seq_cls_head": None,
}

# The estimator families the calibration figure draws in separate panels (each family's estimators read
# the same kind of evidence: label steps of the generated list, the whole output, prompts of their own,
# trained probes or heads). Every estimator of ESTIMATOR_PROMPTING has one.
ESTIMATOR_FAMILY: dict[str, str] = {
    "first_step": "label steps", "compare_to_none": "label steps", "compare_to_none_platt": "label steps",
    "max_over_steps": "label steps", "first_step_whole": "label steps", "max_over_steps_whole": "label steps",
    "output": "output and token-level", "conditional": "output and token-level",
    "joint": "output and token-level", "marginal": "output and token-level",
    "unary": "unary and pairwise prompts", "pairwise_bt": "unary and pairwise prompts",
    "pairwise_outcome": "unary and pairwise prompts",
    "linear_probe": "supervised", "demux": "supervised", "seq_cls_head": "supervised",
}
ESTIMATOR_FAMILIES = tuple(dict.fromkeys(ESTIMATOR_FAMILY.values()))
"""The families in figure order."""

# What each figure needs in the config, as (config key, value) pairs.
FIGURE_NEEDS: dict[str, list[tuple[str, str]]] = {
    "step_probabilities": [("prompting", "baseline")],
    "step_entropy": [("prompting", "baseline")],
    "first_step_spikiness": [("prompting", "baseline")],
    "label_order_accuracy": [("prompting", "baseline")],
    "icl_sweep": [("prompting", "icl_sweep")],
    "probe_layers": [("estimators", "linear_probe")],
    "training_curves": [("regimes", "sft")],
}

NONE_LABEL = "none"  # the reserved label name for "no label applies" (the one definition; docs/formats.md)


def label_key(name: str) -> str:
    """Return what identifies a label name: the name without edge spaces, case-folded. Two names with
    one key are one label: the output parsers (labeldist.prompts.parse_labels,
    labeldist.extraction.segment_label_slots) match what a model writes to the label set by this key."""
    return name.strip().casefold()


def label_clash(names: Sequence[str]) -> tuple[int, int] | None:
    """Return (i, j), i < j, for the first name `names[j]` that is the same label (`label_key`) as the
    earlier `names[i]`, or (-1, j) when `names[j]` is the reserved `none` in any case; None when every
    name is a label of its own."""
    seen = {NONE_LABEL: -1}
    for j, name in enumerate(names):
        i = seen.setdefault(label_key(name), j)
        if i != j:
            return i, j
    return None
LOADERS_WITH_PATH = {"goemotions", "goemotions_raters", "mfrc", "mfrc_fractions", "semeval2018_ec",
                     "hatexplain", "generic"}
LOADERS_WITH_HUB = {"goemotions", "mfrc"}

# The smallest valid config: one synthetic dataset, one prompt, the built-in model. Validated, every block
# of it holds the schema's defaults (`default_block`).
MINIMAL_CONFIG: dict[str, Any] = {
    "datasets": {"syn": {"loader": "synthetic", "prompt": "p"}},
    "prompts": {"p": {"instruction": "Classify: {labels}."}},
    "models": {"tiny": {"source": "builtin", "builtin": {"pretrain_dataset": "syn"}}},
}


def _key(path: Any) -> str:
    """Dotted key path for a jsonschema error location, e.g. 'datasets.synthetic.n_train'."""
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _extend_with_default(validator_class: type) -> type:
    """A validator that also fills in the schema's `default` values (jsonschema's documented recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # Integers are strict: jsonschema accepts 4.0 as an integer, which later breaks range(k) and friends.
    type_checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool))
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=type_checker)


def _non_finite(value: Any, path: tuple = ()) -> Iterator[str]:
    """Yield the dotted key of every NaN or infinite number in a config (YAML's .nan / .inf pass the
    schema's minimum/maximum checks, since comparisons with NaN are false)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _non_finite(v, path + (k,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, path + (i,))
    elif isinstance(value, float) and not math.isfinite(value):
        yield _key(path)


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """Return (a fresh copy of) the workflow's config schema; the file is parsed once per process (YAML
    parsing takes ~50 ms, and every validate_block call needs the schema)."""
    return copy.deepcopy(_parsed_schema(str(path)))


def validate_config(config: dict, base_dir: str | Path = ".", source: str = "config") -> dict:
    """Return a validated copy of `config` with every default filled in.

    Raises ConfigError naming the key at fault: schema violations (unknown key, wrong type, bad value),
    references to undefined datasets, prompts or models, missing input files, label-set problems, and
    estimators or figures whose inputs the config does not produce.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(config).__name__}")
    cfg = copy.deepcopy(dict(config))
    bad_numbers = list(_non_finite(cfg))
    if bad_numbers:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(
            f"  - {k}: NaN or infinite number (use a finite value)" for k in bad_numbers[:10]))
    schema = load_schema()
    validator = _extend_with_default(jsonschema.Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        lines = [f"  - {_key(e.absolute_path)}: {_schema_message(e)}" for e in errors[:10]]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    _check_references(cfg, Path(base_dir), source)
    return cfg


def validate_block(definition: str, block: Mapping[str, Any], key: str) -> dict:
    """Return a validated copy of one config block against the schema's `definitions/<definition>`
    (e.g. "dataset") with every default filled in; ConfigError names `key` (e.g. "datasets.mfrc") and the
    key at fault. Library entry points that take one block call it, so that they read every key with a
    default as `block[key]` whether the caller validated the whole config (idempotent) or not."""
    if not isinstance(block, Mapping):
        raise ConfigError(f"{key}: expected a mapping of keys, got {type(block).__name__}")
    cfg = copy.deepcopy(dict(block))
    schema = load_schema()
    sub = {**schema["definitions"][definition], "definitions": schema["definitions"]}
    validator = _extend_with_default(jsonschema.Draft7Validator)(sub)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        lines = [f"  - {key}.{_key(e.absolute_path)}" if e.absolute_path else f"  - {key}" for e in errors[:10]]
        lines = [f"{line}: {_schema_message(e)}" for line, e in zip(lines, errors)]
        raise ConfigError(f"{key}: invalid configuration\n" + "\n".join(lines))
    return cfg


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return f"unknown key ({err.message})"
    if "propertyNames" in list(err.absolute_schema_path):
        return f"invalid name {err.instance!r}: use letters, digits and underscores only (and not 'encoder' for a model)"
    if err.validator == "type" and isinstance(err.instance, str) and "number" in str(err.validator_value):
        try:
            float(err.instance)
        except ValueError:
            pass
        else:  # PyYAML (YAML 1.1) reads 1e-3 as a string; 1.0e-3 is a number
            return f"{err.message} (YAML reads {err.instance} as text: write it with a dot, e.g. 1.0e-3)"
    return err.message


def _check_references(cfg: dict, base: Path, source: str) -> None:
    from .data.records import Origin, check_label_set  # imported here: labeldist.data imports this module

    problems: list[str] = []
    for name, ds in cfg["datasets"].items():
        key = f"datasets.{name}"
        if ds["prompt"] not in cfg["prompts"]:
            problems.append(f"{key}.prompt: no prompt named {ds['prompt']!r} under 'prompts' "
                            f"(have: {', '.join(sorted(cfg['prompts']))})")
        # Data files are not looked at here: planning needs no data (a missing file stops the data job,
        # naming this key and how to get the data; labeldist.data.prepare).
        if "hub" in ds and ds["loader"] not in LOADERS_WITH_HUB:
            problems.append(f"{key}.hub: only for loaders {sorted(LOADERS_WITH_HUB)}, not {ds['loader']!r}")
        if "split_file" in ds and ds["loader"] != "mfrc":
            problems.append(f"{key}.split_file: only for loader 'mfrc', not {ds['loader']!r}")
        if ds["loader"] in LOADERS_WITH_PATH and "path" not in ds and "hub" not in ds:
            problems.append(f"{key}.path: required for loader {ds['loader']!r}"
                            + (" (or `hub`)" if ds["loader"] in LOADERS_WITH_HUB else ""))
        label_lists = []
        if ds["loader"] == "synthetic":
            label_lists.append(("synthetic.labels", ds["synthetic"]))
        if "labels" in ds:
            label_lists.append(("labels", ds))
        for sub, holder in label_lists:
            # the label-set rules of every data source (edge spaces dropped, names distinct after case
            # folding, `none` reserved in any case, no commas, quotes, tabs or line breaks)
            try:
                holder["labels"] = check_label_set(holder["labels"], Origin(f"{key}.{sub}"), None)
            except DataError as err:
                problems.append(str(err))
    for name, model in cfg["models"].items():
        key = f"models.{name}"
        if model["source"] == "hub" and "hub_id" not in model:
            problems.append(f"{key}.hub_id: required for source 'hub'")
        if model["source"] == "local":
            if "path" not in model:
                problems.append(f"{key}.path: required for source 'local'")
            elif not (base / model["path"]).exists():
                problems.append(f"{key}.path: folder not found: {base / model['path']}")
        if model["source"] == "gguf" and "gguf" not in model:
            problems.append(f"{key}.gguf: required for source 'gguf' (a `path`, or `package` + `file`)")
        if model["source"] == "gguf" and "path" in model.get("gguf", {}) \
                and not (base / model["gguf"]["path"]).is_file():
            problems.append(f"{key}.gguf.path: GGUF file not found: {base / model['gguf']['path']}")
        choices = [("datasets", model["datasets"], cfg["datasets"]), ("regimes", model["regimes"], cfg["regimes"])]
        if isinstance(model["prompting"], Mapping):
            choices += [(f"prompting.{r}", chosen, cfg["prompting"]) for r, chosen in model["prompting"].items()]
        else:
            choices.append(("prompting", model["prompting"], cfg["prompting"]))
        for sub, chosen, known in choices:
            if chosen != "all":
                unknown = [x for x in chosen if x not in known]
                if unknown:
                    top = sub.split(".")[0]
                    problems.append(f"{key}.{sub}: {unknown} not in the top-level '{top}' "
                                    f"(have: {', '.join(known)})")
        problems += _check_finetune_overrides(cfg, name)
        regimes = model_regimes(cfg, name)
        if "rl" in regimes and "rl" in cfg["finetune"]:
            rl = finetune_block(cfg, name, "rl")
            rl_key = _finetune_key(cfg, name, "rl", "start_from")
            if rl["start_from"] == "sft" and "sft" not in regimes:
                problems.append(f"{key}.regimes: 'rl' starts from 'sft' ({rl_key}) but 'sft' is not listed")
            if rl["batch_size"] % rl["num_generations"]:
                problems.append(f"{_finetune_key(cfg, name, 'rl', 'batch_size')}: {rl['batch_size']} is not a "
                                f"multiple of {_finetune_key(cfg, name, 'rl', 'num_generations')} "
                                f"({rl['num_generations']}), as GRPO requires")
        if model["source"] == "builtin":
            pre = model["builtin"].get("pretrain_dataset")
            if pre is None:
                problems.append(f"{key}.builtin.pretrain_dataset: required for source 'builtin'")
            elif pre not in cfg["datasets"]:
                problems.append(f"{key}.builtin.pretrain_dataset: no dataset named {pre!r} under 'datasets'")
    if len(set(cfg["seeds"])) != len(cfg["seeds"]):
        problems.append("seeds: duplicate seeds")
    for est in cfg["estimators"]:
        needs = ESTIMATOR_PROMPTING[est]
        if needs is not None and needs not in cfg["prompting"]:
            problems.append(f"estimators: {est!r} needs prompting mode {needs!r} in 'prompting'")
    for fig in cfg["figures"]:
        for ckey, value in FIGURE_NEEDS.get(fig, []):
            if value not in cfg[ckey]:
                problems.append(f"figures: {fig!r} needs {value!r} in '{ckey}'")
    if cfg["finetune"].get("rl", {}).get("start_from") == "sft" and "rl" in cfg["regimes"] \
            and "sft" not in cfg["regimes"]:
        problems.append("finetune.rl.start_from: 'sft' but regime 'sft' is not in 'regimes'")
    if problems:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(f"  - {p}" for p in problems))


FINETUNE_DEFINITIONS = {"sft": "finetune_sft", "rl": "finetune_rl", "seq_cls": "finetune_seq_cls"}
"""The schema definition of each `finetune` block (the top-level block and models.<key>.finetune)."""


def finetune_block(cfg: Mapping, model: str, kind: str) -> dict:
    """The `finetune.<kind>` settings (kind: sft, rl or seq_cls) that `model` trains with: the validated
    top-level block with the model's own keys (models.<key>.finetune.<kind>) laid over it."""
    own = cfg["models"][model].get("finetune", {}).get(kind, {})
    return {**cfg["finetune"][kind], **own}


def _finetune_key(cfg: Mapping, model: str, kind: str, key: str) -> str:
    """The dotted config key a model's `finetune.<kind>.<key>` setting comes from (its override or the
    top-level block), for error messages."""
    if key in cfg["models"][model].get("finetune", {}).get(kind, {}):
        return f"models.{model}.finetune.{kind}.{key}"
    return f"finetune.{kind}.{key}"


def _check_finetune_overrides(cfg: Mapping, model: str) -> list[str]:
    """Problems with models.<model>.finetune: each block laid over the top-level one must satisfy the
    same schema definition (unknown keys, types and ranges are named under the model's key)."""
    problems = []
    for kind, own in cfg["models"][model].get("finetune", {}).items():
        try:
            validate_block(FINETUNE_DEFINITIONS[kind], {**cfg["finetune"][kind], **own},
                           f"models.{model}.finetune.{kind}")
        except ConfigError as err:
            problems += [line.strip().removeprefix("- ") for line in str(err).splitlines()[1:]]
    return problems


def _model_subset(cfg: Mapping, model: str, key: str, regime: str | None = None) -> list[str]:
    chosen = cfg["models"][model].get(key, "all")
    if isinstance(chosen, Mapping):  # prompting per regime; a regime left out runs all
        chosen = chosen.get(regime, "all")
    return [x for x in cfg[key] if chosen == "all" or x in chosen]


def model_datasets(cfg: Mapping, model: str) -> list[str]:
    """The dataset keys `model` runs on, in the config's dataset order (models.<key>.datasets)."""
    return _model_subset(cfg, model, "datasets")


def model_regimes(cfg: Mapping, model: str) -> list[str]:
    """The regimes `model` runs in, in the order of the top-level `regimes` (models.<key>.regimes)."""
    return _model_subset(cfg, model, "regimes")


def model_prompting(cfg: Mapping, model: str, regime: str) -> list[str]:
    """The prompting modes `model` runs in `regime`, in the order of the top-level `prompting`
    (models.<key>.prompting: all, a list, or a list per regime)."""
    return _model_subset(cfg, model, "prompting", regime)


def model_runs(cfg: Mapping) -> list[tuple[str, str, str]]:
    """Every (dataset, model, regime) the config plans, datasets outermost, in config order."""
    return [(d, m, r) for d in cfg["datasets"] for m in cfg["models"] for r in cfg["regimes"]
            if d in model_datasets(cfg, m) and r in model_regimes(cfg, m)]


def pretrain_dataset(model_cfg: Mapping[str, Any]) -> str | None:
    """The dataset key whose train split pretrains a builtin model; None for other sources."""
    if model_cfg["source"] != "builtin":
        return None
    return model_cfg["builtin"]["pretrain_dataset"]


def pretrain_prompt(config: Mapping[str, Any], model: str) -> dict | None:
    """The prompt config block of a builtin model's pretraining dataset; None for other sources."""
    dataset = pretrain_dataset(config["models"][model])
    if dataset is None:
        return None
    return dict(config["prompts"][config["datasets"][dataset]["prompt"]])


@functools.lru_cache(maxsize=1)
def _validated_minimal() -> dict:
    return validate_config(MINIMAL_CONFIG, source="MINIMAL_CONFIG")


def default_block(key: str) -> dict:
    """A fresh copy of the block at dotted `key` (e.g. "finetune.sft", "demux", "generation") of the
    validated MINIMAL_CONFIG: every key of the block the schema has a default for, at that default (the
    one place defaults are written, so settings built from it match what the workflow runs with)."""
    block: Any = _validated_minimal()
    for part in key.split("."):
        if not isinstance(block, Mapping) or part not in block:
            raise KeyError(f"default_block: no config block {key!r}")
        block = block[part]
    if not isinstance(block, Mapping):
        raise KeyError(f"default_block: {key!r} is a value, not a block")
    return copy.deepcopy(dict(block))


def load_config(path: str | Path, base_dir: str | Path = ".") -> dict:
    """Read a YAML config file and return it validated, with defaults (ConfigError names the file).

    Relative paths inside the config are taken from `base_dir`, the folder Snakemake runs in.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason}); re-save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return validate_config(raw, base_dir=base_dir, source=str(path))
