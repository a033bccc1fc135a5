"""MemoryStore against a real redis-server: versions, atomic commit, deltas, cleanup, errors."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from memory_service import layout as L
from memory_service.errors import (
    InvalidRequestError,
    PreconditionError,
    VersionExistsError,
    VersionNotFoundError,
)
from memory_service.store import MemoryStore
from seedrec.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration
_names = itertools.count()


@pytest.fixture()
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    yield r
    r.close()


@pytest.fixture()
def store(client: redis.Redis) -> MemoryStore:
    return MemoryStore(client, f"t{next(_names)}", group_rows=512)


def _block(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def _load(store: MemoryStore, version: str, x: np.ndarray, *, chunk: int = 4096, commit: bool = True) -> str:
    ticket = store.begin_version(version, n=x.shape[0], d=x.shape[1], sha256=L.block_sha256(x), source="test")
    for s in range(0, x.shape[0], chunk):
        store.put_rows(version, s, x[s : s + chunk], load_id=ticket.load_id)
    if commit:
        store.commit(version, load_id=ticket.load_id)
    return ticket.load_id


def _row_keys_left(client: redis.Redis, store: MemoryStore, version: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{{mem:{store.name}:{version}:*", count=10_000))


def test_load_commit_read_round_trip(store: MemoryStore) -> None:
    x = _block(5000, 16, 0)
    with pytest.raises(VersionNotFoundError, match="no committed version"):
        store.read([0])
    _load(store, "v1", x, chunk=777)
    info = store.info()
    assert (info.version, info.state, info.n, info.d, info.is_current) == ("v1", "committed", 5000, 16, True)
    assert info.sha256 == L.block_sha256(x) and info.source == "test"
    ids = np.array([4999, 0, 17, 17, 2048])
    np.testing.assert_array_equal(store.read(ids), x[ids])
    res = store.read_versioned(ids, version="v1")
    assert res.version == "v1" and res.delta_seq == 0
    q = np.random.default_rng(1).integers(0, 5000, (7, 5))
    w = np.random.default_rng(2).random((7, 5), dtype=np.float32)
    np.testing.assert_allclose(store.read_weighted(q, w), np.einsum("qk,qkd->qd", w, x[q]), rtol=1e-5, atol=1e-5)
    assert [v.version for v in store.list_versions()] == ["v1"]


def test_concurrent_readers_see_old_or_new_never_a_mix(store: MemoryStore) -> None:
    a, b = _block(20_000, 16, 1), _block(20_000, 16, 2)
    _load(store, "v1", a)
    stop = threading.Event()
    seen: dict[str, int] = {"v1": 0, "v2": 0}
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            ids = rng.integers(0, 20_000, 300)
            res = store.read_versioned(ids)
            want = {"v1": a, "v2": b}[res.version][ids]
            other = {"v1": b, "v2": a}[res.version][ids]
            if not np.array_equal(res.values, want):
                mixed = bool(np.any(np.all(res.values == other, axis=1)))
                errors.append(f"{res.version}: rows differ from the version they claim (mixed={mixed})")
            seen[res.version] += 1

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    ticket = store.begin_version("v2", n=20_000, d=16, sha256=L.block_sha256(b))
    for s in range(0, 20_000, 1000):
        store.put_rows("v2", s, b[s : s + 1000], load_id=ticket.load_id)
        time.sleep(0.005)  # let readers run while v2 is half written
    store.commit("v2", load_id=ticket.load_id)
    deadline = time.monotonic() + 10
    while seen["v2"] < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert seen["v1"] > 0 and seen["v2"] > 0
    # A reader that resolved v1 before the flip can still finish on intact keys.
    np.testing.assert_array_equal(store.read([1, 2, 3], version="v1"), a[[1, 2, 3]])


def test_abandoned_load_leaves_previous_current_and_abort_cleans_up(client: redis.Redis, store: MemoryStore) -> None:
    a, b = _block(6000, 8, 3), _block(6000, 8, 4)
    _load(store, "v1", a)
    ticket = store.begin_version("v2", n=6000, d=8, sha256=L.block_sha256(b))
    store.put_rows("v2", 0, b[:3000], load_id=ticket.load_id)  # ... and the loader goes away
    assert store.current_version() == "v1"
    np.testing.assert_array_equal(store.read(np.arange(6000)), a)
    with pytest.raises(VersionNotFoundError, match="no committed version 'v2'"):
        store.read([0], version="v2")  # invisible until committed
    with pytest.raises(PreconditionError, match="missing 3000 of 6000 rows .first missing slot 3000"):
        store.commit("v2", load_id=ticket.load_id)
    assert store.current_version() == "v1"
    assert _row_keys_left(client, store, "v2") == 3000
    assert store.abort("v2") == 3000
    assert _row_keys_left(client, store, "v2") == 0
    with pytest.raises(PreconditionError, match="aborted"):
        store.commit("v2", load_id=ticket.load_id)
    with pytest.raises(PreconditionError, match="aborted"):
        store.put_rows("v2", 0, b[:10], load_id=ticket.load_id)
    assert [v.version for v in store.list_versions()] == ["v1"]
    np.testing.assert_array_equal(store.read(np.arange(6000)), a)
    _load(store, "v2", b)  # an aborted id can be loaded again
    np.testing.assert_array_equal(store.read(np.arange(6000)), b)


def test_restarted_load_cleans_up_the_half_written_version(client: redis.Redis, store: MemoryStore) -> None:
    a, b = _block(4000, 8, 5), _block(4000, 8, 6)
    _load(store, "v1", a)
    crashed = store.begin_version("v2", n=4000, d=8, sha256=L.block_sha256(b))
    store.put_rows("v2", 0, b[:2500], load_id=crashed.load_id)  # loader crashes here
    again = store.begin_version("v2", n=4000, d=8, sha256=L.block_sha256(b))
    assert again.leftover_keys_deleted == 2500 and again.load_id != crashed.load_id
    assert _row_keys_left(client, store, "v2") == 0
    with pytest.raises(PreconditionError, match="another BeginVersion restarted it"):
        store.put_rows("v2", 2500, b[2500:], load_id=crashed.load_id)
    for s in range(0, 4000, 1000):
        store.put_rows("v2", s, b[s : s + 1000], load_id=again.load_id)
    with pytest.raises(PreconditionError, match="restarted"):
        store.commit("v2", load_id=crashed.load_id)
    assert store.commit("v2", load_id=again.load_id).previous_version == "v1"
    np.testing.assert_array_equal(store.read(np.arange(4000)), b)
    assert store.commit("v2", load_id=again.load_id).info.version == "v2"  # retry-safe


def test_checksum_mismatch_refuses_the_commit(store: MemoryStore) -> None:
    a, b = _block(3000, 4, 7), _block(3000, 4, 8)
    _load(store, "v1", a)
    ticket = store.begin_version("v2", n=3000, d=4, sha256=L.block_sha256(b))
    bad = b.copy()
    bad[1234, 2] += 1.0
    store.put_rows("v2", 0, bad, load_id=ticket.load_id)
    with pytest.raises(PreconditionError, match="checksum mismatch"):
        store.commit("v2", load_id=ticket.load_id)
    assert store.current_version() == "v1"


def test_duplicate_and_delete_rules(client: redis.Redis, store: MemoryStore) -> None:
    a, b = _block(3000, 4, 9), _block(3000, 4, 10)
    _load(store, "v1", a)
    with pytest.raises(VersionExistsError, match="'v1' .* already exists"):
        store.begin_version("v1", n=3000, d=4, sha256=L.block_sha256(a))
    with pytest.raises(PreconditionError, match="current version"):
        store.delete_version("v1")
    with pytest.raises(VersionNotFoundError):
        store.delete_version("nope")
    ticket = _load(store, "v2", b, commit=False)
    with pytest.raises(PreconditionError, match="still loading"):
        store.delete_version("v2")
    store.commit("v2", load_id=ticket)
    assert [(v.version, v.is_current) for v in store.list_versions()] == [("v1", False), ("v2", True)]
    assert store.delete_version("v1") == 3000
    assert _row_keys_left(client, store, "v1") == 0
    assert client.exists(L.meta_key(store.name, "v1")) == 0
    with pytest.raises(VersionNotFoundError):
        store.read([0], version="v1")
    assert [v.version for v in store.list_versions()] == ["v2"]


def test_delta_is_applied_atomically_and_logged(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _block(2000, 8, 11)
    _load(store, "v1", a)
    pair = np.array([10, 1500])
    stop = threading.Event()
    torn: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            rows = store.read(pair)
            if rows[0, 0] != rows[1, 0]:  # every delta writes the same value to both slots
                if not (rows[0, 0] == a[10, 0] and rows[1, 0] == a[1500, 0]):
                    torn.append(1)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 41):
        version, seq = store.apply_delta(pair, np.full((2, 8), float(i), dtype=np.float32))
        assert (version, seq) == ("v1", i)
    stop.set()
    t.join()
    assert not torn
    np.testing.assert_array_equal(store.read(pair), np.full((2, 8), 40.0, dtype=np.float32))
    assert store.info().delta_seq == 40 and store.read_versioned([0]).delta_seq == 40
    store.apply_delta([7], a[[7]] + 1)
    upd = store.delta_updates("v1", 40)
    assert upd.slots.tolist() == [7] and upd.complete
    assert store.delta_updates("v1", 0).slots.tolist() == [7, 10, 1500]
    big = np.arange(L.DELTA_LOG_MAX_SLOTS + 1) % 2000
    assert store.apply_delta(big, a[big])[1] == 42  # logged as "all slots"
    upd = store.delta_updates("v1", 41)
    assert not upd.complete and upd.slots.size == 0
    np.testing.assert_array_equal(store.read(big[:5]), a[big[:5]])
    monkeypatch.setattr(L, "DELTA_LOG_MAX", 2)
    store.apply_delta([8], a[[8]])
    store.apply_delta([9], a[[9]])  # the log now holds seqs 43, 44 only
    assert not store.delta_updates("v1", 41).complete
    assert store.delta_updates("v1", 42).complete
    with pytest.raises(PreconditionError, match="not the current version"):
        store.apply_delta([1], a[[1]], version="v0")
    with pytest.raises(InvalidRequestError, match="^d: rows have d=4"):
        store.apply_delta([1], np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InvalidRequestError, match=r"^slot_ids: slot 2000 is out of range \[0, 2000\)"):
        store.apply_delta([2000], np.zeros((1, 8), dtype=np.float32))


def test_malformed_requests_name_the_field(store: MemoryStore) -> None:
    x = _block(100, 4, 12)
    with pytest.raises(InvalidRequestError, match="^sha256: expected 64 hex"):
        store.begin_version("v1", n=100, d=4, sha256="abc")
    with pytest.raises(InvalidRequestError, match="^version: "):
        store.begin_version("bad:id", n=100, d=4, sha256=L.block_sha256(x))
    with pytest.raises(InvalidRequestError, match="^d: must be >= 1"):
        store.begin_version("v1", n=100, d=0, sha256=L.block_sha256(x))
    ticket = store.begin_version("v1", n=100, d=4, sha256=L.block_sha256(x))
    with pytest.raises(InvalidRequestError, match=r"^values: expected \(count, d=4\) rows, got shape \(10, 3\)"):
        store.put_rows("v1", 0, x[:10, :3], load_id=ticket.load_id)
    with pytest.raises(InvalidRequestError, match="^start: rows 95..104 fall outside"):
        store.put_rows("v1", 95, x[:10], load_id=ticket.load_id)
    with pytest.raises(VersionNotFoundError):
        store.put_rows("v9", 0, x[:10])
    store.put_rows("v1", 0, x, load_id=ticket.load_id)
    store.commit("v1", load_id=ticket.load_id)
    with pytest.raises(InvalidRequestError, match=r"^slot_ids: slot 100 is out of range \[0, 100\)"):
        store.read([0, 100])
    with pytest.raises(InvalidRequestError, match="^slot_ids: slot -1 is negative"):
        store.read([-1])
    with pytest.raises(InvalidRequestError, match="^slot_ids: must not be empty"):
        store.read([])
    with pytest.raises(InvalidRequestError, match="^weights: shape"):
        store.read_weighted(np.zeros((2, 3), dtype=np.int64), np.ones((2, 2)))
    with pytest.raises(InvalidRequestError, match="^weights: must be finite; entry 4 is nan"):
        store.read_weighted(np.zeros((2, 3), dtype=np.int64), np.array([[1, 1, 1], [1, np.nan, 1]]))
    with pytest.raises(VersionNotFoundError, match="no committed version 'v7'"):
        store.read([0], version="v7")
    with pytest.raises(VersionNotFoundError):
        store.info("v7")


def test_prune_waits_for_the_grace_period(store: MemoryStore) -> None:
    for i in range(1, 4):
        _load(store, f"v{i}", _block(600, 4, 20 + i))
    assert store.prune(keep=0, grace_s=60) == []  # retired just now: readers may still use them
    assert store.prune(keep=1, grace_s=0) == ["v1"]
    assert [v.version for v in store.list_versions()] == ["v2", "v3"]
