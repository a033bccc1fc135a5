"""LMN-style memory reads through the real memory service, its outage (fallback, flagged) and recovery."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memory_service.cli import load_main
from memory_service.client import MemoryClient
from memory_service.configs import MemoryServiceConfig
from memory_service.server import BackgroundServer as MemoryServer
from seedrec.redis_server import EmbeddedRedis
from serving.client import RankingClient, build_score_request
from serving.configs import MemoryConfig, MemoryFallback, ServerConfig
from serving.scorer import LoadedModel
from serving.server import BackgroundServer
from serving.testing import toy_factory, write_toy_package
from serving.wire import request_to_inputs

pytestmark = pytest.mark.integration
MEM_TOKEN = "m3m"
REQ = dict(user_id=4, domain="feed", item_ids=list(range(0, 90, 3)), history=[
    {"item_id": i, "action": "click", "domain": "feed", "ts_ms": i, "category_id": i % 10} for i in (1, 2, 3)])


@pytest.fixture(scope="module")
def mem_package(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_package(tmp_path_factory.mktemp("outbox"), samples, name="toymem", version="1", memory=True)


@pytest.fixture(scope="module")
def memory_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as r:
        yield r


def _memory_server(redis_url: str, port: int = 0) -> MemoryServer:
    return MemoryServer(MemoryServiceConfig(redis_url=redis_url, token=MEM_TOKEN, port=port, grace_s=0.5)).start()


def _server(repo: Path, mem_address: str, fallback: MemoryFallback = MemoryFallback.LOCAL, cache_rows: int = 0) -> BackgroundServer:
    cfg = ServerConfig(repository=str(repo), memory=MemoryConfig(address=mem_address, deadline_ms=300, breaker_failures=2,
                                                                 breaker_reset_s=0.2, fallback=fallback, cache_rows=cache_rows))
    return BackgroundServer(cfg, factory=toy_factory).start()


def _wait_for(rc: RankingClient, *, fallback: bool, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while rc.score(**REQ).memory_fallback != fallback:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"memory_fallback never became {fallback}"
        time.sleep(0.05)


@pytest.mark.parametrize("cache_rows", [0, 8])
def test_memory_reads_fall_back_when_the_service_stops_and_recover(
    mem_package: Path, memory_redis: EmbeddedRedis, tmp_path: Path, cache_rows: int
) -> None:
    """cache_rows=0: every read is a ReadWeighted call. With the client's row cache (pinned to one
    version, so cached rows stay exact while the service is down) a read falls back only when it
    misses: a cache of 8 rows for a 64-slot memory misses on every request."""
    repo = tmp_path / "repo"
    shutil.copytree(mem_package, repo / "toymem" / "1")
    memsrv = _memory_server(memory_redis.url)
    port = memsrv.port
    with MemoryClient(memsrv.address) as mc:
        if not mc.list_versions():
            assert load_main(["--package", str(mem_package), "--server", memsrv.address, "--token", MEM_TOKEN, "--version", "m1"]) == 0
    offline = LoadedModel.load(mem_package, factory=toy_factory).score(request_to_inputs(build_score_request(**REQ)))  # type: ignore[arg-type]
    server = _server(repo, memsrv.address, cache_rows=cache_rows)
    try:
        with RankingClient(server.address) as rc:
            up = rc.score(**REQ)  # type: ignore[arg-type]
            assert not up.memory_fallback
            np.testing.assert_allclose(up.heads["click"], offline.scores[:, 0], atol=1e-5, rtol=0)

            memsrv.stop()  # the memory service goes away: answers keep coming, flagged, from the packaged table
            t0 = time.monotonic()
            down = [rc.score(**REQ) for _ in range(10)]  # type: ignore[arg-type]
            assert all(d.memory_fallback for d in down)
            assert time.monotonic() - t0 < 3.0  # the breaker skips the dead service: no timeout per call
            np.testing.assert_allclose(down[-1].heads["click"], offline.scores[:, 0], atol=1e-5, rtol=0)

            memsrv = _memory_server(memory_redis.url, port=port)  # back on the same address
            _wait_for(rc, fallback=False)
    finally:
        server.stop()
        memsrv.stop()


def test_a_package_whose_memory_is_not_loaded_is_flagged(mem_package: Path, samples: Path, memory_redis: EmbeddedRedis,
                                                         tmp_path: Path) -> None:
    other = write_toy_package(tmp_path / "outbox", samples, name="toymem", version="2", memory=True, seed=9)
    repo = tmp_path / "repo"
    shutil.copytree(other, repo / "toymem" / "2")
    with _memory_server(memory_redis.url) as memsrv:
        with MemoryClient(memsrv.address) as mc:
            assert all(v.sha256 != "" for v in mc.list_versions())  # only m1 (the other package's block) is there
        server = _server(repo, memsrv.address, fallback=MemoryFallback.ZERO)
        try:
            with RankingClient(server.address) as rc:
                r = rc.score(**REQ)  # type: ignore[arg-type]
                assert r.memory_fallback and r.version == "2"
        finally:
            server.stop()
