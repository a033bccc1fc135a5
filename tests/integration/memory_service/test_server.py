"""The memory service over real gRPC (port 0) and a real redis-server: API, status codes,
deadlines, outages, the client cache and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from memory_service import layout as L
from memory_service.cli import load_main, read_memory_package
from memory_service.client import MemoryClient, MemoryRpcError
from memory_service.configs import MemoryServiceConfig
from memory_service.server import SERVICE_NAME, BackgroundServer, make_redis_client
from protos.seedrec.v1 import memory_pb2, memory_pb2_grpc
from seedrec.errors import ConfigError, PackageError
from seedrec.redis_server import EmbeddedRedis, free_port

pytestmark = pytest.mark.integration
TOKEN = "s3cret"
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
N, D = 3000, 16
A = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[BackgroundServer]:
    cfg = MemoryServiceConfig(redis_url=redis_server.url, token=TOKEN, max_batch_slots=5000,
                              max_message_bytes=2 << 20, metrics_port=0)
    with BackgroundServer(cfg) as srv:
        with MemoryClient(srv.address, token=TOKEN, cache_rows=0) as c:
            c.load_block(A, version="v1", source="fixture")
        yield srv


@pytest.fixture(scope="module")
def stub(server: BackgroundServer) -> Iterator[memory_pb2_grpc.MemoryServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)


def _code(fn: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)  # type: ignore[operator]  (a stub method)
    return e.value.code(), e.value.details()


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def test_health_reflection_and_metrics(server: BackgroundServer) -> None:
    with grpc.insecure_channel(server.address) as ch:
        hs = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE_NAME):
            assert hs.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        rs = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(iter(rs.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
        assert "seedrec.v1.MemoryService" in {s.name for s in reply.list_services_response.service}
    assert server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'seedrec_memory_requests_total{code="OK",method="PutRows"}' in text


def test_read_and_read_weighted(server: BackgroundServer, stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    ids = np.array([2999, 0, 5, 5])
    reply = stub.Read(memory_pb2.ReadRequest(slot_ids=ids.tolist()), timeout=5)
    assert (reply.version, reply.rows, reply.d) == ("v1", 4, D)
    np.testing.assert_array_equal(np.frombuffer(reply.values, "<f4").reshape(4, D), A[ids])
    q = np.random.default_rng(1).integers(0, N, (50, 8))
    w = np.random.default_rng(2).random((50, 8), dtype=np.float32)
    with MemoryClient(server.address, cache_rows=0) as c:
        np.testing.assert_allclose(c.read_weighted(q, w), np.einsum("qk,qkd->qd", w, A[q]), rtol=1e-5, atol=1e-5)
        info = c.info()
        assert (info.version, info.n, info.d, info.source, info.is_current) == ("v1", N, D, "fixture", True)
        assert info.sha256 == L.block_sha256(A)
    with MemoryClient(server.address, cache_rows=1000) as c:  # the cached path sums locally
        np.testing.assert_allclose(c.read_weighted(q, w), np.einsum("qk,qkd->qd", w, A[q]), rtol=1e-5, atol=1e-5)


def test_malformed_requests_get_the_right_codes(stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    t = 5
    cases = [
        (stub.Read, memory_pb2.ReadRequest(version="v404", slot_ids=[0]), Code.NOT_FOUND, "v404"),
        (stub.Read, memory_pb2.ReadRequest(slot_ids=[0, N]), Code.INVALID_ARGUMENT, "slot_ids: slot 3000 is out of range"),
        (stub.Read, memory_pb2.ReadRequest(slot_ids=[-3]), Code.INVALID_ARGUMENT, "slot_ids: slot -3 is negative"),
        (stub.Read, memory_pb2.ReadRequest(slot_ids=[]), Code.INVALID_ARGUMENT, "slot_ids: must not be empty"),
        (stub.Read, memory_pb2.ReadRequest(slot_ids=[1] * 5001), Code.INVALID_ARGUMENT, "slot_ids: 5001 slot ids exceed the server's max batch of 5000"),
        (stub.Read, memory_pb2.ReadRequest(name="bad:name", slot_ids=[1]), Code.INVALID_ARGUMENT, "name: "),
        (stub.Read, memory_pb2.ReadRequest(name="other", slot_ids=[1]), Code.NOT_FOUND, "no committed version"),
        (stub.ReadWeighted, memory_pb2.ReadWeightedRequest(k=0, slot_ids=[1]), Code.INVALID_ARGUMENT, "k: slots per query"),
        (stub.ReadWeighted, memory_pb2.ReadWeightedRequest(k=2, slot_ids=[1, 2, 3], weights=b"\0" * 12), Code.INVALID_ARGUMENT, "slot_ids: 3 ids is not a multiple of k=2"),
        (stub.ReadWeighted, memory_pb2.ReadWeightedRequest(k=2, slot_ids=[1, 2], weights=b"\0" * 4), Code.INVALID_ARGUMENT, "weights: expected 2 float32"),
        (stub.ReadWeighted, memory_pb2.ReadWeightedRequest(k=2, slot_ids=[1, 2], weights=np.array([1, np.nan], "<f4").tobytes()), Code.INVALID_ARGUMENT, "weights: must be finite"),
        (stub.Info, memory_pb2.InfoRequest(version="v404"), Code.NOT_FOUND, "v404"),
        (stub.DeleteVersion, memory_pb2.DeleteVersionRequest(version="v1"), Code.UNAUTHENTICATED, "authorization"),
    ]
    for method, request, code, text in cases:
        got, details = _code(method, request, timeout=t)
        assert (got, text in details) == (code, True), (request, got, details)
    sha = L.block_sha256(A)
    admin = [
        (stub.BeginVersion, memory_pb2.BeginVersionRequest(version="v1", n=N, d=D, sha256=sha), Code.ALREADY_EXISTS, "already exists"),
        (stub.BeginVersion, memory_pb2.BeginVersionRequest(version="vx", n=N, d=D, sha256="zz"), Code.INVALID_ARGUMENT, "sha256: "),
        (stub.DeleteVersion, memory_pb2.DeleteVersionRequest(version="v1"), Code.FAILED_PRECONDITION, "current version"),
        (stub.DeleteVersion, memory_pb2.DeleteVersionRequest(version="v404"), Code.NOT_FOUND, "v404"),
        (stub.Commit, memory_pb2.CommitRequest(version="v404"), Code.NOT_FOUND, "v404"),
        (stub.ApplyDelta, memory_pb2.ApplyDeltaRequest(slot_ids=[1], d=D, values=b"\0" * 8), Code.INVALID_ARGUMENT, f"values: expected {D} float32"),
        (stub.ApplyDelta, memory_pb2.ApplyDeltaRequest(slot_ids=[1], d=2, values=b"\0" * 8), Code.INVALID_ARGUMENT, f"d: rows have d=2, version 'v1' has d={D}"),
    ]
    for method, request, code, text in admin:
        got, details = _code(method, request, timeout=t, metadata=ADMIN)
        assert (got, text in details) == (code, True), (request, got, details)
    # Tokens: missing -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED, for unary and stream calls.
    begin = memory_pb2.BeginVersionRequest(version="v9", n=N, d=D, sha256=sha)
    assert _code(stub.BeginVersion, begin, timeout=t)[0] == Code.UNAUTHENTICATED
    assert _code(stub.BeginVersion, begin, timeout=t, metadata=(("authorization", "Bearer nope"),))[0] == Code.PERMISSION_DENIED
    assert _code(stub.BeginVersion, begin, timeout=t, metadata=(("authorization", "Basic x"),))[0] == Code.UNAUTHENTICATED
    put = memory_pb2.PutRowsRequest(version="v9", start=0, count=1, d=D, values=b"\0" * (4 * D))
    assert _code(stub.PutRows, iter([put]), timeout=t)[0] == Code.UNAUTHENTICATED
    assert _code(stub.PutRows, iter([put]), timeout=t, metadata=(("authorization", "Bearer nope"),))[0] == Code.PERMISSION_DENIED


def test_loading_states_and_wrong_dims(stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    b = np.random.default_rng(3).standard_normal((N, D), dtype=np.float32)
    load_id = stub.BeginVersion(memory_pb2.BeginVersionRequest(version="v2", n=N, d=D, sha256=L.block_sha256(b)), timeout=5, metadata=ADMIN).load_id

    def put(start: int, rows: np.ndarray, d: int = D, count: int | None = None) -> memory_pb2.PutRowsRequest:
        return memory_pb2.PutRowsRequest(version="v2", load_id=load_id, start=start, count=rows.shape[0] if count is None else count, d=d, values=rows.tobytes())

    code, details = _code(stub.PutRows, iter([put(0, b[:10, :8], d=8)]), timeout=5, metadata=ADMIN)
    assert code == Code.INVALID_ARGUMENT and details.startswith("values: expected (count, d=16) rows"), details
    code, details = _code(stub.PutRows, iter([put(0, b[:10], count=11)]), timeout=5, metadata=ADMIN)
    assert code == Code.INVALID_ARGUMENT and details.startswith("values: expected 176 float32"), details
    code, details = _code(stub.PutRows, iter([put(N - 5, b[:10])]), timeout=5, metadata=ADMIN)
    assert code == Code.INVALID_ARGUMENT and details.startswith("start: rows 2995..3004"), details
    assert stub.PutRows(iter([put(0, b[:1000])]), timeout=5, metadata=ADMIN).rows_written == 1000
    code, details = _code(stub.Commit, memory_pb2.CommitRequest(version="v2", load_id=load_id), timeout=10, metadata=ADMIN)
    assert code == Code.FAILED_PRECONDITION and "missing 2000 of 3000 rows" in details
    assert stub.Abort(memory_pb2.AbortRequest(version="v2", load_id=load_id), timeout=10, metadata=ADMIN).keys_deleted == 1000
    code, details = _code(stub.Commit, memory_pb2.CommitRequest(version="v2", load_id=load_id), timeout=10, metadata=ADMIN)
    assert code == Code.FAILED_PRECONDITION and "aborted" in details
    assert stub.Info(memory_pb2.InfoRequest(), timeout=5).info.version == "v1"


def test_abandoned_loader_leaves_v1_and_restart_cleans_up(server: BackgroundServer, stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    b = np.random.default_rng(4).standard_normal((N, D), dtype=np.float32)
    begin = memory_pb2.BeginVersionRequest(name="aband", version="v1", n=N, d=D, sha256=L.block_sha256(A))
    with MemoryClient(server.address, token=TOKEN, name="aband", cache_rows=0) as c:
        c.load_block(A, version="v1")
        first = stub.BeginVersion(begin.__class__(name="aband", version="v2", n=N, d=D, sha256=L.block_sha256(b)), timeout=5, metadata=ADMIN)
        stub.PutRows(iter([memory_pb2.PutRowsRequest(name="aband", version="v2", load_id=first.load_id, start=0, count=1500, d=D,
                                                     values=b[:1500].tobytes())]), timeout=5, metadata=ADMIN)
        # The loader vanishes. Readers still get v1, whole.
        assert c.info().version == "v1"
        np.testing.assert_array_equal(c.read(np.arange(N)), A)
        # A restarted load of v2 removes the leftovers, then completes.
        again = stub.BeginVersion(begin.__class__(name="aband", version="v2", n=N, d=D, sha256=L.block_sha256(b)), timeout=5, metadata=ADMIN)
        assert again.leftover_keys_deleted == 1500
        # A load that fails midway (a message over the server's 2 MiB limit) is aborted by the client.
        big = np.random.default_rng(5).standard_normal((40_000, D), dtype=np.float32)
        with MemoryClient(server.address, token=TOKEN, name="aband", cache_rows=0, chunk_bytes=4 << 20) as c2:
            with pytest.raises(MemoryRpcError) as e:
                c2.load_block(big, version="v3")
            assert e.value.code == Code.RESOURCE_EXHAUSTED
        assert [(v.version, v.state) for v in c.list_versions()] == [("v1", "committed"), ("v2", "loading")]
        assert c.abort("v2") == 0
        assert c.load_block(b, version="v2").is_current
        np.testing.assert_array_equal(c.read(np.arange(N)), b)


def test_concurrent_service_readers_see_old_or_new(server: BackgroundServer) -> None:
    a = np.random.default_rng(6).standard_normal((8000, 8), dtype=np.float32)
    b = np.random.default_rng(7).standard_normal((8000, 8), dtype=np.float32)
    with MemoryClient(server.address, token=TOKEN, name="conc", cache_rows=0) as loader:
        loader.load_block(a, version="a")
        stop, bad, seen = threading.Event(), [], set()

        def reader(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with grpc.insecure_channel(server.address) as ch:
                s = memory_pb2_grpc.MemoryServiceStub(ch)
                while not stop.is_set():
                    ids = rng.integers(0, 8000, 200)
                    r = s.Read(memory_pb2.ReadRequest(name="conc", slot_ids=ids.tolist()), timeout=5)
                    rows = np.frombuffer(r.values, "<f4").reshape(200, 8)
                    seen.add(r.version)
                    if not np.array_equal(rows, {"a": a, "b": b}[r.version][ids]):
                        bad.append(r.version)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        with MemoryClient(server.address, token=TOKEN, name="conc", cache_rows=0, chunk_bytes=32 << 10) as slow:
            slow.load_block(b, version="b")
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert not bad and seen == {"a", "b"}


def test_client_cache_follows_deltas_and_versions(server: BackgroundServer) -> None:
    a = np.random.default_rng(8).standard_normal((1000, 4), dtype=np.float32)
    b = a + 100
    with MemoryClient(server.address, token=TOKEN, name="cache", cache_rows=0) as admin:
        admin.load_block(a, version="c1")
        lazy = MemoryClient(server.address, name="cache", cache_rows=500, max_staleness_s=3600)
        fresh = MemoryClient(server.address, name="cache", cache_rows=500, max_staleness_s=0.0)
        try:
            np.testing.assert_array_equal(lazy.read([1, 2, 3]), a[[1, 2, 3]])
            np.testing.assert_array_equal(lazy.read([3, 2]), a[[3, 2]])
            assert (lazy.hits, lazy.misses) == (2, 3) and lazy.cached_rows == 3
            fresh.read([1, 2])
            assert admin.apply_delta([2], np.full((1, 4), 7.0, np.float32)) == ("c1", 1)
            # Within the staleness bound the lazy client may serve its cached row ...
            np.testing.assert_array_equal(lazy.read([2]), a[[2]])
            # ... until any reply shows the newer delta seq: then exactly slot 2 is dropped.
            lazy.read([500])
            np.testing.assert_array_equal(lazy.read([1, 2]), np.stack([a[1], np.full(4, 7.0, np.float32)]))
            # A client with max_staleness_s=0 sees the delta on its next read.
            np.testing.assert_array_equal(fresh.read([2]), np.full((1, 4), 7.0, np.float32))
            # A new version never returns old rows: fresh switches at once, lazy stays on c1 (pinned) ...
            admin.load_block(b, version="c2")
            np.testing.assert_array_equal(fresh.read([1, 3]), b[[1, 3]])
            np.testing.assert_array_equal(lazy.read([1, 3]), a[[1, 3]])
            # ... and when its pinned version is deleted, the next read that reaches the server
            # (slot 900 is not cached) catches up and retries once, on c2 only.
            admin.delete_version("c1")
            np.testing.assert_array_equal(lazy.read([1, 900]), b[[1, 900]])
            assert all(k[0] == "c2" for k in lazy._cache)
            for _ in range(3):
                lazy.read(np.arange(200 * _, 200 * _ + 200))
            assert lazy.cached_rows == 500
        finally:
            lazy.close()
            fresh.close()


def test_redis_down_answers_unavailable_within_deadline_and_recovers() -> None:
    x = np.random.default_rng(9).standard_normal((2000, 8), dtype=np.float32)
    with EmbeddedRedis() as r, BackgroundServer(MemoryServiceConfig(redis_url=r.url, token=TOKEN)) as srv, \
            grpc.insecure_channel(srv.address) as ch, MemoryClient(srv.address, token=TOKEN, cache_rows=0) as c:
        stub = memory_pb2_grpc.MemoryServiceStub(ch)
        c.load_block(x, version="v1")
        # Killed mid-load: the stream fails UNAVAILABLE.
        begin = stub.BeginVersion(memory_pb2.BeginVersionRequest(version="v2", n=2000, d=8, sha256=L.block_sha256(x)), timeout=5, metadata=ADMIN)

        def chunks() -> Iterator[memory_pb2.PutRowsRequest]:
            for i, s in enumerate(range(0, 2000, 200)):
                if i == 3:
                    r.kill()
                yield memory_pb2.PutRowsRequest(version="v2", load_id=begin.load_id, start=s, count=200, d=8, values=x[s : s + 200].tobytes())

        code, details = _code(stub.PutRows, chunks(), timeout=5, metadata=ADMIN)
        assert code == Code.UNAVAILABLE and "redis unavailable" in details
        for method, request in ((stub.Read, memory_pb2.ReadRequest(slot_ids=[1, 2])),
                                (stub.ReadWeighted, memory_pb2.ReadWeightedRequest(k=1, slot_ids=[1], weights=b"\0" * 4)),
                                (stub.Info, memory_pb2.InfoRequest())):
            t0 = time.monotonic()
            code, _ = _code(method, request, timeout=2.0)
            assert code == Code.UNAVAILABLE and time.monotonic() - t0 < 2.5
        with pytest.raises(MemoryRpcError) as e:
            c.load_block(x, version="v3")
        assert e.value.code == Code.UNAVAILABLE
        # Redis returns (empty: it kept nothing). The service reconnects by itself: no version yet.
        r.restart()
        assert _code(stub.Read, memory_pb2.ReadRequest(slot_ids=[1]), timeout=5)[0] == Code.NOT_FOUND
        c.load_block(x, version="v1")
        np.testing.assert_array_equal(_bits(c.read(np.arange(2000))), _bits(x))
        # A hung Redis (SIGSTOP): the deadline still holds.
        os.kill(r.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            t0 = time.monotonic()
            code, _ = _code(stub.Read, memory_pb2.ReadRequest(slot_ids=[1]), timeout=0.5)
            assert code == Code.DEADLINE_EXCEEDED and time.monotonic() - t0 < 1.0
        finally:
            os.kill(r.pid, signal.SIGCONT)  # type: ignore[arg-type]
        np.testing.assert_array_equal(c.read([5]), x[[5]])


def test_redis_auth_url_and_tls_url() -> None:
    x = np.ones((10, 2), dtype=np.float32)
    with EmbeddedRedis(password="pw") as r, BackgroundServer(MemoryServiceConfig(redis_url=r.url, token=TOKEN)) as srv, \
            MemoryClient(srv.address, token=TOKEN, cache_rows=0) as c:
        assert r.url.startswith("redis://:pw@")
        c.load_block(x, version="v1")
        np.testing.assert_array_equal(c.read([9]), x[[9]])
    tls = make_redis_client(MemoryServiceConfig(redis_url="rediss://:pw@127.0.0.1:6380/0"))
    assert tls.connection_pool.connection_class is redis.SSLConnection
    with pytest.raises(ConfigError, match="`redis_url`"):
        MemoryServiceConfig(redis_url="http://x")


@pytest.mark.slow
def test_load_million_row_block_bit_exact() -> None:
    """Acceptance (a): a 1,048,576 x 64 block loads through the service and reads back bit-exact."""
    n, d = 1_048_576, 64
    x = np.random.default_rng(10).standard_normal((n, d), dtype=np.float32)
    with EmbeddedRedis() as r, BackgroundServer(MemoryServiceConfig(redis_url=r.url, token=TOKEN)) as srv, \
            MemoryClient(srv.address, token=TOKEN, cache_rows=0, timeout_s=60) as c:
        info = c.load_block(x, version="big")
        assert (info.n, info.d, info.sha256) == (n, d, L.block_sha256(x))
        step = 65_536
        for s in range(0, n, step):
            got = c.read(np.arange(s, s + step))
            assert np.array_equal(_bits(got), _bits(x[s : s + step])), f"rows {s}..{s + step} differ"
        assert c.info().version == "big"  # (load time is measured by `seedrec bench memory_read`)


def test_cli_load_package(server: BackgroundServer, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    pkg = tmp_path / "lmn" / "7"
    pkg.mkdir(parents=True)
    x = np.random.default_rng(11).standard_normal((500, 8), dtype=np.float32)
    save_file({"values": x}, str(pkg / "memory.safetensors"))
    from serving.package import write_manifest

    write_manifest(pkg, name="lmn", version="7", kind="lmn", model_config={}, feature_spec={})
    values, version, source = read_memory_package(pkg)
    assert (version, source) == ("7", "lmn/7") and values.shape == (500, 8)
    assert load_main(["--package", str(pkg), "--server", server.address, "--token", TOKEN, "--name", "pkg"]) == 0
    with MemoryClient(server.address, name="pkg", cache_rows=0) as c:
        info = c.info()
        assert (info.version, info.source) == ("7", "lmn/7")
        np.testing.assert_array_equal(c.read(np.arange(500)), x)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["files"]["memory.safetensors"] = "0" * 64
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="does not match the manifest"):
        read_memory_package(pkg)
    save_file({"other": x}, str(pkg / "memory.safetensors"))
    (pkg / "manifest.json").unlink()
    with pytest.raises(PackageError, match="named 'values'"):
        read_memory_package(pkg)
    with pytest.raises(PackageError, match="no memory.safetensors"):
        read_memory_package(tmp_path)


def test_cli_serve_embedded_redis_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "seedrec.cli", "memory", "serve", "--port", str(port), "--token", TOKEN, "--grace", "1"],
                            env=env, cwd=Path(__file__).resolve().parents[3], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            while True:
                try:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.2)
        with MemoryClient(f"127.0.0.1:{port}", token=TOKEN, cache_rows=0) as c:
            c.load_block(np.ones((4, 2), np.float32), version="v1")
            assert c.info().version == "v1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
