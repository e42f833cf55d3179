"""Config validation: defaults are filled, and each kind of mistake names the key or file at fault."""

from __future__ import annotations

import copy

import pytest
import yaml

from labeldist.config import MINIMAL_CONFIG, default_block, load_config, validate_config
from labeldist.errors import ConfigError

from .conftest import REPO


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_validates_and_fills_defaults(raw):
    cfg = validate_config(raw, base_dir=REPO)
    # keys absent from config.yaml take the schema's defaults
    assert cfg["models"]["tiny"]["dtype"] == "auto"
    assert cfg["models"]["tiny"]["load_in_4bit"] is False
    assert cfg["datasets"]["synthetic"]["synthetic"]["n_train"] == raw["datasets"]["synthetic"]["synthetic"]["n_train"]
    assert raw["models"]["tiny"].get("dtype") is None, "validation must not modify its input"


def test_minimal_config_gets_defaults(tmp_path):
    cfg = validate_config(MINIMAL_CONFIG, base_dir=tmp_path)
    assert cfg["seeds"] == [0]
    assert cfg["regimes"] == ["base"]
    assert cfg["prompts"]["p"]["k"] == 10
    assert cfg["datasets"]["syn"]["synthetic"]["annotators"] == [3, 5]
    assert cfg["generation"]["max_new_tokens"] == 32


def test_default_block_is_a_copy_of_the_validated_minimal_configs_block(tmp_path):
    cfg = validate_config(MINIMAL_CONFIG, base_dir=tmp_path)
    assert default_block("finetune.sft") == cfg["finetune"]["sft"]
    assert default_block("demux") == cfg["demux"] and default_block("findings") == cfg["findings"]
    default_block("finetune.sft")["lr"] = 0.5  # callers may change their copy
    assert default_block("finetune.sft")["lr"] == cfg["finetune"]["sft"]["lr"]
    with pytest.raises(KeyError, match="no config block 'finetune.nope'"):
        default_block("finetune.nope")


@pytest.mark.parametrize("module, name, block", [
    ("finetune", "SFTSettings", "finetune.sft"),
    ("finetune", "RLSettings", "finetune.rl"),
    ("seq_cls", "SeqClsSettings", "finetune.seq_cls"),
    ("demux", "DemuxSettings", "demux"),
    ("findings", "Settings", "findings"),
    ("extraction", "ExtractionSettings", "generation"),
])
def test_settings_take_every_config_key_from_the_schema(module, name, block):
    """Each settings class mirrors its config block: built from the schema's defaults, every field without
    a default comes from the block, and a block missing one of them is a ConfigError naming it."""
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(f"labeldist.{module}"), name)
    cfg = default_block(block)
    settings = cls.from_config(cfg)
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    assert required and all(getattr(settings, k) == cfg[k] for k in required)
    assert not [k for k in required if k not in cfg], "a field without a default is not a config key"
    del cfg[required[-1]]
    with pytest.raises(ConfigError, match=rf"^{block}\.{required[-1]}: missing from the config block"):
        cls.from_config(cfg)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(n_trian=5), "datasets.synthetic.synthetic: unknown key"),
        (lambda c: c.update(sedes=[1]), "(top level): unknown key"),
        (lambda c: c["datasets"]["synthetic"].update(loader="nope"), "datasets.synthetic.loader"),
        (lambda c: c["datasets"]["synthetic"].update(prompt="missing"), "datasets.synthetic.prompt: no prompt named 'missing'"),
        (lambda c: c["models"]["tiny"]["builtin"].update(pretrain_dataset="goemo"), "models.tiny.builtin.pretrain_dataset: no dataset named 'goemo'"),
        (lambda c: c["models"].update(big={"source": "hub"}), "models.big.hub_id: required"),
        (lambda c: c["models"].update(mine={"source": "local", "path": "nowhere/model"}), "models.mine.path: folder not found"),
        (lambda c: c["datasets"].update(go={"loader": "goemotions"}), "datasets.go.path: required"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["joy", "joy", "fear"]), "datasets.synthetic.synthetic.labels: duplicate label 'joy'"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["joy", "none"]), "label 'none' is the reserved 'none'"),
        # labels that differ only in case are one label to the output parsers; `none` is reserved in any case
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["Anger", "joy", "anger"]), "datasets.synthetic.synthetic.labels: duplicate label 'anger': the same label as 'Anger' (entry 1 of the label set)"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["joy", "None"]), "datasets.synthetic.synthetic.labels: label 'None' is the reserved 'none'"),
        (lambda c: c["datasets"].update(mine={"loader": "generic", "path": "x.jsonl", "prompt": "emotions", "labels": ["Joy", "fear", " joy"]}), "datasets.mine.labels: duplicate label 'joy': the same label as 'Joy' (entry 1 of the label set)"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["joy", "sad, angry"]), "label 'sad, angry' contains a comma"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(labels=["joy", " joy ", "fear"]), "duplicate label 'joy': the same label as 'joy' (entry 1 of the label set)"),
        (lambda c: c["datasets"]["synthetic"].update(hub="owner/name"), "datasets.synthetic.hub: only for loaders"),
        (lambda c: c["datasets"].update(go={"loader": "goemotions", "path": "x", "split_file": "s.csv"}), "datasets.go.split_file: only for loader 'mfrc'"),
        (lambda c: c.update(seeds=[0, 0]), "seeds: duplicate"),
        (lambda c: c.update(prompting=["baseline"]), "estimators: 'unary' needs prompting mode 'unary'"),
        (lambda c: c.update(estimators=["first_stpe"]), "estimators.0"),
        (lambda c: c["generation"].update(max_new_tokens="many"), "generation.max_new_tokens: 'many' is not of type 'integer'"),
        (lambda c: c["models"].update(encoder={"source": "builtin"}), "invalid name 'encoder'"),
    ],
)
def test_config_errors_name_the_key(raw, mutate, expected):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        validate_config(bad, base_dir=REPO, source="my.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("my.yaml")


def test_load_config_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_data_files_are_not_needed_to_validate(raw):
    """Planning needs no data: missing dataset files are the data job's business (labeldist.data)."""
    cfg = copy.deepcopy(raw)
    cfg["datasets"]["go"] = {"loader": "goemotions", "path": "google-research-datasets/go_emotions"}
    cfg["datasets"]["se"] = {"loader": "semeval2018_ec", "path": "no/such/folder"}
    cfg["datasets"]["mf"] = {"loader": "mfrc", "hub": "USC-MOLA-Lab/MFRC", "split_file": "no/such/file.csv"}
    validate_config(cfg, base_dir=REPO)


def test_config_labels_lose_their_edge_spaces(raw):
    cfg = copy.deepcopy(raw)
    cfg["datasets"]["synthetic"]["synthetic"]["labels"] = [" joy", "fear ", "anger"]
    out = validate_config(cfg, base_dir=REPO)
    assert out["datasets"]["synthetic"]["synthetic"]["labels"] == ["joy", "fear", "anger"]


def test_rl_batch_must_be_a_multiple_of_the_group_size(raw):
    cfg = copy.deepcopy(raw)
    cfg["finetune"]["rl"].update(batch_size=6, num_generations=4)
    with pytest.raises(ConfigError, match="finetune.rl.batch_size: 6 is not a multiple"):
        validate_config(cfg, base_dir=REPO)


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os

    from labeldist.io import atomic_dir, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as d:
        (d / "f.txt").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~mask


def test_config_readme_documents_every_top_level_key():
    """config/README.md (the workflow catalog's configuration page) has a row for every schema key."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    readme = (REPO / "config" / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert rows == set(schema["properties"])


def test_regimes_and_prompting_modes_are_the_schema_enums():
    """The workflow's wildcard constraints and the library use config.REGIMES / PROMPTING_MODES: one
    source, equal to what the schema accepts."""
    from labeldist.config import PROMPTING_MODES, REGIMES, load_schema

    props = load_schema()["properties"]
    assert list(REGIMES) == props["regimes"]["items"]["enum"]
    assert list(PROMPTING_MODES) == props["prompting"]["items"]["enum"]
