"""Shared fixtures: a tiny BERT + WordPiece tokenizer built on the spot (:mod:`tests.helpers.models`), and the
data-pack location. Tests never need the real encoder packages or a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.models import build_tiny_model
from uwe_lightning.paths import default_data_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real uwe-data pack; tests that use it are skipped where it is absent."""
    path = default_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"real data pack not found at {path} (set UWE_DATA_DIR)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One thread by default: tiny tensors run fastest on one, and a shared 2-core CI box stays responsive.
    ``UWE_TEST_THREADS=2`` runs the suite on two (the suite must pass at both: tests/README.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("UWE_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(previous)
