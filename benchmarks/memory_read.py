"""Memory service read speed: ``ReadWeighted`` through gRPC against raw MGET of the same rows.

Setup: a private redis-server, the memory server on loopback (BackgroundServer), one client.
A block of ``n x 64`` float32 (1,048,576 rows; ``quick``: 65,536) is loaded through the service
(BeginVersion, PutRows stream, Commit with its full verification), which gives the load time.
Then, per request, 200 candidates x k=32 slots (6,400 random slots) with weights:

* ours: ``ReadWeighted`` through the service (resolve version, MGETs, weighted sum, gRPC both ways);
* peer: raw redis-py ``MGET`` of the same 6,400 row keys on the same Redis + ``np.frombuffer``
  (no version resolution, no sum, no gRPC);
* layout check: a pipeline of ``GETRANGE`` on a 64-rows-per-key chunked copy of the block, the
  alternative layout :mod:`memory_service.layout` rejected.

Requests alternate ours / peer so machine drift hits both. ``ratio`` = ours rows/s / peer rows/s
(target >= 0.5). Run: ``seedrec bench memory_read`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import time

import numpy as np
import redis

from benchmarks._common import BenchResult
from memory_service import layout as L
from memory_service.client import MemoryClient
from memory_service.configs import MemoryServiceConfig
from memory_service.server import BackgroundServer
from seedrec.redis_server import EmbeddedRedis

__all__ = ["run"]

_TOKEN = "bench"


def _pct(ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(ms), q))


def run(*, quick: bool = False) -> BenchResult:
    """Measures load time and ReadWeighted throughput/latency against raw MGET."""
    n, d, Q, K = (65_536 if quick else 1_048_576), 64, 200, 32
    iters = 40 if quick else 300
    chunk_rows = 64
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    batches = [rng.integers(0, n, (Q, K)) for _ in range(iters + 5)]
    weights = rng.random((Q, K), dtype=np.float32)
    with EmbeddedRedis() as server, \
            BackgroundServer(MemoryServiceConfig(redis_url=server.url, token=_TOKEN)) as srv, \
            MemoryClient(srv.address, token=_TOKEN, cache_rows=0, timeout_s=60) as client:
        raw = redis.Redis.from_url(server.url)
        mem0 = int(raw.info("memory")["used_memory"])
        t0 = time.perf_counter()
        info = client.load_block(x, version="bench", source="benchmark")
        load_s = time.perf_counter() - t0
        bytes_per_row = (int(raw.info("memory")["used_memory"]) - mem0) / n
        meta = L.decode_meta(raw.hmget(L.meta_key(info.name, info.version), L.META_FIELDS))
        assert meta is not None

        def ours(ids: np.ndarray) -> np.ndarray:
            return client.read_weighted(ids, weights)

        def peer(ids: np.ndarray) -> np.ndarray:
            keys = L.row_keys(info.name, info.version, ids.reshape(-1), meta.group_rows)
            return np.frombuffer(b"".join(raw.mget(keys)), dtype="<f4").reshape(-1, d)

        for ids in batches[:5]:  # warm-up (connections, caches); also a correctness check
            np.testing.assert_allclose(ours(ids), np.einsum("qk,qkd->qd", weights, x[ids]), rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(peer(ids), x[ids.reshape(-1)])
        t_ours: list[float] = []
        t_peer: list[float] = []
        for ids in batches[5:]:
            for fn, sink in ((ours, t_ours), (peer, t_peer)):
                t = time.perf_counter()
                fn(ids)
                sink.append((time.perf_counter() - t) * 1e3)

        # The rejected layout: 64 rows per key, a pipeline of GETRANGEs per request.
        row_b = d * 4
        pipe = raw.pipeline(transaction=False)
        for c in range(0, n, chunk_rows):
            pipe.set(f"bench:chunk:{c // chunk_rows}", x[c : c + chunk_rows].tobytes())
            if (c // chunk_rows) % 256 == 255:
                pipe.execute()
        pipe.execute()
        t_chunk: list[float] = []
        for ids in batches[5 : 5 + max(10, iters // 4)]:
            t = time.perf_counter()
            pipe = raw.pipeline(transaction=False)
            for s in ids.reshape(-1).tolist():
                off = (s % chunk_rows) * row_b
                pipe.getrange(f"bench:chunk:{s // chunk_rows}", off, off + row_b - 1)
            got = np.frombuffer(b"".join(pipe.execute()), dtype="<f4").reshape(-1, d)
            t_chunk.append((time.perf_counter() - t) * 1e3)
        np.testing.assert_array_equal(got, x[ids.reshape(-1)])
        raw.close()

    rows = Q * K
    ours_rps = rows / (float(np.mean(t_ours)) / 1e3)
    peer_rps = rows / (float(np.mean(t_peer)) / 1e3)
    return BenchResult(
        name="memory_read",
        params={"n": n, "d": d, "candidates": Q, "k": K, "requests": iters, "quick": quick,
                "group_rows": meta.group_rows, "redis": "embedded redis-server, loopback", "client": "1 thread"},
        results={
            "rows_per_s": ours_rps,
            "p50_ms": _pct(t_ours, 50),
            "p99_ms": _pct(t_ours, 99),
            "load_s": load_s,
            "load_rows_per_s": n / load_s,
            "redis_bytes_per_row": bytes_per_row,
        },
        peer={
            "rows_per_s": peer_rps,
            "p50_ms": _pct(t_peer, 50),
            "p99_ms": _pct(t_peer, 99),
            "chunked_getrange_rows_per_s": rows / (float(np.mean(t_chunk)) / 1e3),
            "chunked_getrange_p50_ms": _pct(t_chunk, 50),
        },
        ratio=ours_rps / peer_rps,
        notes=(
            "ours = ReadWeighted through gRPC (version pinned, 6,400 slots, weighted sum server-side); "
            "peer = raw redis-py MGET of the same row keys + frombuffer on the same Redis; "
            "chunked_getrange = the rejected 64-rows-per-key layout; load_s = BeginVersion + PutRows + "
            "Commit (verifies every row and the sha256)."
        ),
    )
