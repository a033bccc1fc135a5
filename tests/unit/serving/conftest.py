"""Fixtures of the serving unit tests: a stand-in sample set and packages built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serving.testing import write_toy_package, write_toy_samples


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)  # the machine is shared; the server does the same


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """feature_spec.json + vocab/ of a tiny sample set (users 0..49, items 0..199)."""
    return write_toy_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def toy_package(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in package ``toy/1`` (no memory)."""
    return write_toy_package(tmp_path_factory.mktemp("repo"), samples, name="toy", version="1")


@pytest.fixture(scope="session")
def memory_package(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in package ``toymem/1`` whose model holds a product-key memory (like LMN)."""
    return write_toy_package(tmp_path_factory.mktemp("repo"), samples, name="toymem", version="1", memory=True)
