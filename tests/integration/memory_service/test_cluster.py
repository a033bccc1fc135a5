"""The memory block on a real 3-node Redis Cluster (loopback): rows spread over the nodes, the
control keys share one slot, and the service loads and reads the block bit-exact."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from memory_service import layout as L
from memory_service.client import MemoryClient
from memory_service.configs import MemoryServiceConfig
from memory_service.errors import PreconditionError
from memory_service.server import BackgroundServer
from memory_service.store import MemoryStore
from seedrec.redis_server import EmbeddedRedis, free_port

pytestmark = pytest.mark.integration
TOKEN = "t0k"


def _cluster_port() -> int:
    """A free port <= 55535 whose cluster bus port (+10000, fixed in redis 6.2) is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    """Three masters, 16384 slots split evenly (CLUSTER ADDSLOTS + MEET), no replicas."""
    nodes: list[EmbeddedRedis] = []
    try:
        for _ in range(3):
            port = _cluster_port()
            nodes.append(EmbeddedRedis(port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000"]).start())
        clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in nodes]
        bounds = [0, 5461, 10923, 16384]
        for i, c in enumerate(clients):
            c.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        deadline = time.monotonic() + 30
        while not all(c.cluster("info")["cluster_state"] == "ok" and int(c.cluster("info")["cluster_known_nodes"]) == 3
                      for c in clients):
            assert time.monotonic() < deadline, [c.cluster("info") for c in clients]
            time.sleep(0.1)
        for c in clients:
            c.close()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def _url(nodes: list[EmbeddedRedis]) -> str:
    return f"redis://127.0.0.1:{nodes[0].port}/0"


def test_store_on_cluster_spreads_rows_and_reads_bit_exact(cluster: list[EmbeddedRedis]) -> None:
    rc = RedisCluster.from_url(_url(cluster))
    store = MemoryStore(rc, "cl", group_rows=256)
    a = np.random.default_rng(0).standard_normal((20_000, 16), dtype=np.float32)
    b = a * 2
    for version, x in (("v1", a), ("v2", b)):
        t = store.begin_version(version, n=x.shape[0], d=16, sha256=L.block_sha256(x))
        for s in range(0, x.shape[0], 3000):  # chunks that straddle row groups
            store.put_rows(version, s, x[s : s + 3000], load_id=t.load_id)
        store.commit(version, load_id=t.load_id)
    per_node = [redis.Redis(host="127.0.0.1", port=n.port).dbsize() for n in cluster]
    assert min(per_node) > 0.2 * sum(per_node), per_node  # 2 x 79 row groups over 3 nodes
    ids = np.random.default_rng(1).integers(0, 20_000, 3000)
    np.testing.assert_array_equal(store.read(ids), b[ids])
    np.testing.assert_array_equal(store.read(ids, version="v1"), a[ids])
    q, w = ids[:600].reshape(100, 6), np.random.default_rng(2).random((100, 6), dtype=np.float32)
    np.testing.assert_allclose(store.read_weighted(q, w), np.einsum("qk,qkd->qd", w, b[q]), rtol=1e-5, atol=1e-5)
    assert store.apply_delta([5, 19_999], np.zeros((2, 16), np.float32)) == ("v2", 1)
    np.testing.assert_array_equal(store.read([5, 19_999, 6]), np.stack([np.zeros(16), np.zeros(16), b[6]]).astype(np.float32))
    assert store.delta_updates("v2", 0).slots.tolist() == [5, 19_999]
    with pytest.raises(PreconditionError):
        store.delete_version("v2")
    assert store.delete_version("v1") == 20_000
    # An abandoned load on the cluster is cleaned up by Abort.
    t = store.begin_version("v3", n=20_000, d=16, sha256=L.block_sha256(a))
    store.put_rows("v3", 0, a[:5000], load_id=t.load_id)
    assert store.abort("v3") == 5000
    assert sum(redis.Redis(host="127.0.0.1", port=n.port).dbsize() for n in cluster) < 20_000 + 10
    rc.close()


def test_service_on_cluster_loads_and_reads_bit_exact(cluster: list[EmbeddedRedis]) -> None:
    x = np.random.default_rng(3).standard_normal((60_000, 32), dtype=np.float32)
    cfg = MemoryServiceConfig(redis_url=_url(cluster), cluster=True, token=TOKEN, name="svc")
    with BackgroundServer(cfg) as srv, MemoryClient(srv.address, token=TOKEN, cache_rows=0) as c:
        info = c.load_block(x, version="p1")
        assert (info.n, info.d, info.sha256) == (60_000, 32, L.block_sha256(x))
        got = np.concatenate([c.read(np.arange(s, s + 20_000)) for s in range(0, 60_000, 20_000)])
        assert np.array_equal(got.view(np.uint32), x.view(np.uint32))
        q = np.random.default_rng(4).integers(0, 60_000, (200, 32))
        w = np.random.default_rng(5).random((200, 32), dtype=np.float32)
        np.testing.assert_allclose(c.read_weighted(q, w), np.einsum("qk,qkd->qd", w, x[q]), rtol=1e-4, atol=1e-4)
        assert c.apply_delta([7], np.ones((1, 32), np.float32)) == ("p1", 1)
        np.testing.assert_array_equal(c.read([7]), np.ones((1, 32), np.float32))
