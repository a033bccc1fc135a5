"""The online feature store on a real Redis: the writer, the reader, and Score calls without history."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from feature_pipeline.online_store import OnlineStoreReader, OnlineStoreWriter, history_key
from seedrec.redis_server import EmbeddedRedis
from serving.client import RankingClient
from serving.configs import ServerConfig, StoreConfig
from serving.server import BackgroundServer
from serving.testing import toy_factory

pytestmark = pytest.mark.integration
TS = pa.timestamp("ms", tz="UTC")


def _events(rows: list[tuple[int, int, int, str, str]]) -> pa.Table:
    ts, user, item, dom, act = zip(*rows)
    return pa.table({"ts": pa.array(ts, TS), "user_id": pa.array(user, pa.int64()), "item_id": pa.array(item, pa.int64()),
                     "domain": list(dom), "action": list(act)})


ITEMS = pa.table({"item_id": pa.array(range(200), pa.int64()), "category_id": pa.array([i % 10 for i in range(200)], pa.int64()),
                  "price": pa.array([1.0] * 200, pa.float32())})


def test_writer_caps_orders_and_reads_back_in_one_round_trip(redis_server: EmbeddedRedis) -> None:
    r = redis.Redis.from_url(redis_server.url)
    w = OnlineStoreWriter(r, namespace="t1", max_len=3, items=ITEMS)
    assert w.write_events(_events([(5, 1, 50, "feed", "click"), (1, 1, 10, "feed", "click"), (3, 2, 30, "mall", "purchase"),
                                   (2, 1, 20, "search", "like"), (4, 1, 40, "feed", "click")])) == 5
    w.write_events(_events([(9, 1, 999, "feed", "click")]))  # an item outside the items table
    assert w.write_users(pa.table({"user_id": [1, 2], "gender": ["F", None], "age": [31, 40]})) == 2
    assert r.llen(history_key(1, namespace="t1")) == 3
    u1, u2, u3 = OnlineStoreReader(r, namespace="t1").read([1, 2, 3])
    assert [(b.item_id, b.category_id) for b in u1.history] == [(40, 0), (50, 0), (999, None)]
    assert u1.attributes == {"gender": "F", "age": 31} and u2.attributes == {"age": 40}
    assert [b.action for b in u2.history] == ["purchase"] and u3.history == () and u3.attributes == {}
    assert OnlineStoreReader(r, namespace="t1").read([1], limit=2)[0].history[0].item_id == 50


@pytest.fixture(scope="module")
def store_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="module")
def store_server(store_redis: EmbeddedRedis, packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(packages["1"], repo / "toy" / "1")
    cfg = ServerConfig(repository=str(repo), store=StoreConfig(redis_url=store_redis.url, deadline_ms=50, breaker_reset_s=0.2))
    with BackgroundServer(cfg, factory=toy_factory) as srv:
        yield srv


def test_score_reads_the_history_from_the_store_and_survives_its_outage(store_redis: EmbeddedRedis, store_server: BackgroundServer) -> None:
    rows = [(1000 + i, 7, (13 * i) % 200, "feed", "click") for i in range(12)]
    OnlineStoreWriter(redis.Redis.from_url(store_redis.url), items=ITEMS).write_events(_events(rows))
    history = [{"item_id": it, "action": a, "domain": d, "ts_ms": t, "category_id": it % 10} for t, _, it, d, a in rows]
    with RankingClient(store_server.address) as rc:
        stored = rc.score(user_id=7, domain="feed", item_ids=list(range(20)))
        given = rc.score(user_id=7, domain="feed", item_ids=list(range(20)), history=history)
        assert stored.history_source == "online_store" and stored.history_length == 8
        np.testing.assert_array_equal(stored.heads["click"], given.heads["click"])
        assert rc.score(user_id=8, domain="feed", item_ids=[1]).history_source == "none"

        store_redis.kill()
        down = [rc.score(user_id=7, domain="feed", item_ids=list(range(20))) for _ in range(5)]
        assert {d.history_source for d in down} == {"store_unavailable"} and down[0].history_length == 0
        store_redis.restart()  # empty again: the user has no history now, but the store answers
        OnlineStoreWriter(redis.Redis.from_url(store_redis.url), items=ITEMS).write_events(_events(rows))
        import time

        deadline = time.monotonic() + 10
        while rc.score(user_id=7, domain="feed", item_ids=[1]).history_source != "online_store":
            assert time.monotonic() < deadline, "the server did not reconnect to the store"
            time.sleep(0.1)
