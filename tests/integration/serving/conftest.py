"""Fixtures of the serving integration tests: stand-in packages and a running server (port 0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from serving.configs import ServerConfig
from serving.server import BackgroundServer
from serving.testing import toy_factory, write_toy_package, write_toy_samples

TOKEN = "s3cret"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def packages(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packages ``toy/1``..``toy/3`` (different weights) outside any server's repository."""
    out = tmp_path_factory.mktemp("outbox")
    return {v: write_toy_package(out, samples, name="toy", version=v, seed=int(v)) for v in ("1", "2", "3")}


@pytest.fixture(scope="module")
def server(packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    """A server whose repository starts with ``toy/1``; admin token ``s3cret``; metrics on a free port."""
    import shutil

    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(packages["1"], repo / "toy" / "1")
    cfg = ServerConfig(repository=str(repo), admin_token=TOKEN, metrics_port=0, grace_s=1.0)
    with BackgroundServer(cfg, factory=toy_factory) as srv:
        yield srv
