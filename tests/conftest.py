"""Shared test fixtures and settings: offline, few threads, the repo and shared-data locations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


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
