"""All the logic of the memory block, over a plain redis-py client (standalone or Cluster).

:class:`MemoryStore` loads versions (begin, put rows, verify + commit atomically, abort), applies
deltas to the current version, reads rows and weighted sums pinned to one version, and lists and
deletes versions. The gRPC server only validates requests and calls it from worker threads. The
key layout is in :mod:`memory_service.layout`.

Consistency:

* **Commit is atomic.** Rows are written under the new version's own keys while readers keep
  reading the current one; commit verifies every row (count and sha256), then one MULTI/EXEC
  (under WATCH) marks the meta committed and flips ``{mem:NAME}:current``.
* **A read pins one version.** It resolves the pointer once, checks the meta, then reads only that
  version's keys. Old versions stay until an explicit DeleteVersion or :meth:`MemoryStore.prune`
  (which waits ``grace_s`` after a version stops being current), so a reader that resolved the
  old pointer finishes on intact keys.
* **A delta is atomic** on a standalone Redis (rows, seq and log in one MULTI/EXEC). On a Cluster
  its rows span hash slots, so each row is replaced atomically but a concurrent read may see part
  of a delta; the seq is bumped only after every row is written.
* **Freshness bound of ``delta_seq``.** A read fetches the meta (with ``delta_seq``) in the round
  trip *before* its rows, so the rows are at least as new as the seq it reports.

Round trips (RT) are counted in comments. The client must be created with ``decode_responses``
left False (rows are bytes).

Example:
    >>> store = MemoryStore(redis.Redis.from_url(url), "lmn")  # doctest: +SKIP
    >>> t = store.begin_version("v1", n=4, d=2, sha256=L.block_sha256(x))  # doctest: +SKIP
    >>> store.put_rows("v1", 0, x, load_id=t.load_id)  # doctest: +SKIP
    4
    >>> store.commit("v1", load_id=t.load_id).info.state  # doctest: +SKIP
    'committed'
    >>> store.read([3, 0]).shape  # doctest: +SKIP
    (2, 2)
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster

from memory_service import layout as L
from memory_service.errors import (
    InvalidRequestError,
    PreconditionError,
    VersionExistsError,
    VersionNotFoundError,
)

__all__ = ["MemoryStore", "VersionInfo", "ReadResult", "DeltaUpdates", "LoadTicket", "CommitResult", "is_cluster"]

logger = logging.getLogger(__name__)

_MGET_BATCH = 1024        # keys per MGET / MSET / UNLINK (Redis docs: keep commands <~1000 keys)
_VERIFY_BATCH = 16_384    # rows per verification round trip at commit
_ABORTED_META_TTL_S = 86_400  # an aborted version's meta lingers a day, for a clear "aborted" error

RedisClient = redis.Redis | RedisCluster


def is_cluster(client: RedisClient) -> bool:
    """True for a ``RedisCluster`` client."""
    return isinstance(client, RedisCluster)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    """One version as :meth:`MemoryStore.info` / :meth:`MemoryStore.list_versions` report it."""

    name: str
    version: str
    state: str
    n: int
    d: int
    dtype: str
    sha256: str
    source: str
    created_ms: int
    committed_ms: int
    delta_seq: int
    is_current: bool


@dataclass(frozen=True, kw_only=True)
class LoadTicket:
    """What :meth:`MemoryStore.begin_version` returns.

    Attributes:
        load_id: carried by the put/commit/abort calls of this load.
        leftover_keys_deleted: row keys of a crashed or abandoned earlier load that were removed.
    """

    load_id: str
    leftover_keys_deleted: int


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """What :meth:`MemoryStore.commit` returns: the committed version and the one it replaced."""

    info: VersionInfo
    previous_version: str | None


@dataclass(frozen=True, kw_only=True)
class ReadResult:
    """Rows (or weighted sums) read from one version.

    Attributes:
        version: the version every row came from.
        delta_seq: the version's delta seq read before the rows (the rows are at least this new).
        values: ``(N, d)`` rows or ``(Q, d)`` weighted sums, float32.
    """

    version: str
    delta_seq: int
    values: np.ndarray


@dataclass(frozen=True, kw_only=True)
class DeltaUpdates:
    """Slots changed by deltas after some seq (for client cache invalidation).

    Attributes:
        slots: unique slot ids changed by deltas with seq > ``since``.
        complete: False when the delta log was trimmed past ``since`` (drop every cached row).
    """

    slots: np.ndarray
    complete: bool


class MemoryStore:
    """The memory block ``name`` in one Redis (standalone or Cluster).

    Thread-safe as far as the redis-py client is (each call takes its own connection or pipeline).

    Args:
        client: a redis-py ``Redis`` or ``RedisCluster`` (``decode_responses=False``).
        name: the block's name (``[A-Za-z0-9_.-]``, no ``:``).
        group_rows: slots per row group (hash tag) for versions begun by this store; readers use
            the value recorded in each version's meta.

    Raises:
        InvalidRequestError: a bad name or group size.
    """

    def __init__(self, client: RedisClient, name: str, *, group_rows: int = L.DEFAULT_GROUP_ROWS) -> None:
        try:
            self.name = L.validate_name(name)
        except ValueError as e:
            raise InvalidRequestError("name", str(e).removeprefix("name: ")) from None
        if group_rows < 1:
            raise InvalidRequestError("group_rows", f"must be >= 1, got {group_rows}")
        self._r = client
        self._cluster = is_cluster(client)
        self._group_rows = group_rows
        self._pointer = L.pointer_key(name)
        self._versions = L.versions_key(name)

    # ---- loading ------------------------------------------------------------------------------
    def begin_version(
        self, version: str, *, n: int, d: int, sha256: str, source: str = "", dtype: str = L.DTYPE,
    ) -> LoadTicket:
        """Starts loading ``version``; returns its load id (carried by put/commit/abort).

        A version left ``loading`` (a crashed or abandoned loader) or ``aborted`` is restarted: its
        leftover row keys are deleted first. RTs: 1 (meta) + cleanup + 1 (MULTI/EXEC).

        Raises:
            InvalidRequestError: bad version id, n, d, dtype or sha256.
            VersionExistsError: the version is already committed (or being deleted).
        """
        version = self._check_version(version)
        if int(n) < 1:
            raise InvalidRequestError("n", f"must be >= 1, got {n}")
        if int(d) < 1:
            raise InvalidRequestError("d", f"must be >= 1, got {d}")
        if dtype not in ("", L.DTYPE):
            raise InvalidRequestError("dtype", f"only {L.DTYPE!r} is supported, got {dtype!r}")
        sha = (sha256 or "").lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InvalidRequestError("sha256", f"expected 64 hex characters, got {sha256!r}")
        mkey = L.meta_key(self.name, version)
        old = L.decode_meta(self._r.hgetall(mkey))  # RT 1
        if old is not None:
            if old.state in (L.State.COMMITTED, L.State.DELETING):
                raise VersionExistsError(
                    f"version {version!r} of memory {self.name!r} already exists ({old.state}); "
                    "pick a new version id, or DeleteVersion it first"
                )
            deleted = self._delete_rows(version, old.n, old.group_rows)
            logger.warning("memory %s: restarted load of %s, removed %d leftover row keys", self.name, version, deleted)
        else:
            deleted = 0
        load_id = secrets.token_hex(8)
        created = _now_ms()
        meta = L.encode_meta(n=int(n), d=int(d), sha256=sha, source=source, load_id=load_id,
                             created_ms=created, group_rows=self._group_rows)

        def txn(pipe: Any) -> None:
            cur = L.decode_meta(pipe.hgetall(mkey))
            if cur is not None and cur.state in (L.State.COMMITTED, L.State.DELETING):
                raise VersionExistsError(f"version {version!r} of memory {self.name!r} already exists ({cur.state})")
            pipe.multi()
            pipe.delete(mkey, L.delta_log_key(self.name, version))
            pipe.hset(mkey, mapping=meta)
            pipe.zadd(self._versions, {version: created})

        self._r.transaction(txn, mkey)  # RT: WATCH + HGETALL + MULTI/EXEC
        return LoadTicket(load_id=load_id, leftover_keys_deleted=deleted)

    def put_rows(self, version: str, start: int, rows: np.ndarray, *, load_id: str | None = None) -> int:
        """Writes rows ``start .. start+N-1`` of a loading version. RTs: 1 (meta) + 1 (writes).

        Args:
            version: a version in state ``loading``.
            start: slot of ``rows[0]``.
            rows: ``(N, d)`` float32 (other float dtypes are cast).
            load_id: when given it must be the id :meth:`begin_version` returned.

        Returns:
            N.

        Raises:
            InvalidRequestError: out-of-range slots or wrong ``d``.
            VersionNotFoundError: unknown version.
            PreconditionError: the version is not loading, or another loader restarted it.
        """
        meta = self._loading_meta(version, load_id)
        arr = np.asarray(rows)
        if arr.ndim != 2 or arr.shape[1] != meta.d:
            raise InvalidRequestError("values", f"expected (count, d={meta.d}) rows, got shape {arr.shape}")
        N = arr.shape[0]
        if start < 0 or start + N > meta.n:
            raise InvalidRequestError("start", f"rows {start}..{start + N - 1} fall outside [0, {meta.n})")
        if N == 0:
            return 0
        keys = L.row_range_keys(self.name, version, start, start + N, meta.group_rows)
        self._mset(keys, L.pack_rows(arr), np.arange(start, start + N) // meta.group_rows)  # RT 2
        return N

    def commit(self, version: str, *, load_id: str | None = None) -> CommitResult:
        """Verifies a loaded version and makes it current, atomically.

        Verification reads every row back (n / 16,384 RTs) and checks the count and the sha256
        given at begin. The flip is one MULTI/EXEC under WATCH of the meta and the pointer (both in
        the ``{mem:NAME}`` slot): meta -> committed, pointer -> version, previous -> retired. A
        reader sees the old version or the new one, never a mix. Committing a version that is
        already committed with the same load id returns its info (retry-safe).

        Raises:
            VersionNotFoundError: unknown version.
            PreconditionError: aborted, restarted by another loader, rows missing, checksum
                mismatch.
        """
        version = self._check_version(version)
        mkey = L.meta_key(self.name, version)
        meta = self._meta(version)  # RT 1
        if meta.state == L.State.COMMITTED and (not load_id or load_id == meta.load_id):
            return CommitResult(info=self.info(version), previous_version=None)
        meta = self._loading_meta(version, load_id, meta=meta)
        self._verify(version, meta)  # n / 16k RTs
        previous: list[str | None] = [None]

        def txn(pipe: Any) -> None:
            cur = L.decode_meta(pipe.hgetall(mkey))
            if cur is None or cur.state != L.State.LOADING or cur.load_id != meta.load_id:
                state = cur.state if cur else "gone"
                raise PreconditionError(f"version {version!r} changed during commit (now {state}); load it again")
            prev = pipe.get(self._pointer)
            previous[0] = prev.decode() if prev else None
            now = _now_ms()
            pipe.multi()
            pipe.hset(mkey, mapping={"state": L.State.COMMITTED, "committed_ms": str(now)})
            pipe.set(self._pointer, version)
            pipe.zadd(self._versions, {version: meta.created_ms})
            if previous[0] and previous[0] != version:
                pipe.hset(L.meta_key(self.name, previous[0]), "retired_ms", str(now))

        self._r.transaction(txn, mkey, self._pointer)  # RT: WATCH, HGETALL, GET, MULTI/EXEC
        logger.info("memory %s: committed %s (%d x %d), previous %s", self.name, version, meta.n, meta.d, previous[0])
        return CommitResult(info=self.info(version), previous_version=previous[0])

    def abort(self, version: str, *, load_id: str | None = None) -> int:
        """Abandons a loading version and deletes its row keys; returns how many were deleted.

        The meta is marked ``aborted`` first (so a concurrent commit fails), lingers a day for
        clear errors, and the version leaves the version set.

        Raises:
            VersionNotFoundError: unknown version.
            PreconditionError: the version is committed (use DeleteVersion) or the load id differs.
        """
        version = self._check_version(version)
        mkey = L.meta_key(self.name, version)
        meta = self._meta(version)  # RT 1
        if meta.state in (L.State.COMMITTED, L.State.DELETING):
            raise PreconditionError(f"version {version!r} is {meta.state}; Abort is for loading versions (use DeleteVersion)")
        if load_id and meta.load_id != load_id:
            raise PreconditionError(f"load_id {load_id!r} does not match version {version!r} (restarted by another loader?)")

        def txn(pipe: Any) -> None:
            cur = L.decode_meta(pipe.hgetall(mkey))
            if cur is not None and cur.state in (L.State.COMMITTED, L.State.DELETING):
                raise PreconditionError(f"version {version!r} was {cur.state} meanwhile")
            pipe.multi()
            pipe.hset(mkey, "state", L.State.ABORTED)
            pipe.expire(mkey, _ABORTED_META_TTL_S)
            pipe.zrem(self._versions, version)

        self._r.transaction(txn, mkey)
        deleted = self._delete_rows(version, meta.n, meta.group_rows)  # n / 1024 UNLINKs, pipelined
        logger.info("memory %s: aborted %s, deleted %d row keys", self.name, version, deleted)
        return deleted

    # ---- deltas -------------------------------------------------------------------------------
    def apply_delta(self, slot_ids: Sequence[int] | np.ndarray, rows: np.ndarray, *, version: str | None = None) -> tuple[str, int]:
        """Overwrites rows of the current version; returns ``(version, new delta_seq)``.

        Standalone: one MULTI/EXEC (rows + seq + log) under WATCH of the pointer and the meta,
        retried if either changes, so a commit racing the delta never loses it. Cluster: rows first
        (one pipeline per node), then the seq and log in a MULTI/EXEC on the ``{mem:NAME}`` slot.

        Args:
            slot_ids: ``(N,)`` slots; a repeated slot keeps its last row.
            rows: ``(N, d)`` float32.
            version: when given it must be the current version.

        Raises:
            InvalidRequestError: shapes, out-of-range slots.
            VersionNotFoundError: no current version.
            PreconditionError: ``version`` is not the current version.
        """
        slots = self._check_slots(slot_ids, None)
        arr = np.asarray(rows)
        if arr.ndim != 2 or arr.shape[0] != slots.shape[0]:
            raise InvalidRequestError("values", f"expected ({slots.shape[0]}, d) rows for {slots.shape[0]} slot_ids, got shape {arr.shape}")
        values = L.pack_rows(arr)
        result: list[Any] = [None, 0]

        def txn(pipe: Any) -> None:
            cur = pipe.get(self._pointer)
            if cur is None:
                raise VersionNotFoundError(f"memory {self.name!r} has no committed version to apply a delta to")
            v = cur.decode()
            if version and version != v:
                raise PreconditionError(f"version: {version!r} is not the current version ({v!r})")
            mkey = L.meta_key(self.name, v)
            pipe.watch(mkey)
            meta = L.decode_meta(pipe.hmget(mkey, L.META_FIELDS))
            if meta is None or meta.state != L.State.COMMITTED:
                raise VersionNotFoundError(f"current version {v!r} of memory {self.name!r} has no committed meta")
            self._check_slots(slots, meta.n)
            if arr.shape[1] != meta.d:
                raise InvalidRequestError("d", f"rows have d={arr.shape[1]}, version {v!r} has d={meta.d}")
            seq = meta.delta_seq + 1
            keys = L.row_keys(self.name, v, slots, meta.group_rows)
            if self._cluster:  # rows span slots: write them before the seq bump, outside MULTI
                self._mset(keys, values, slots // meta.group_rows)
            pipe.multi()
            if not self._cluster:
                for i in range(0, len(keys), _MGET_BATCH):
                    pipe.mset(dict(zip(keys[i : i + _MGET_BATCH], values[i : i + _MGET_BATCH])))
            dlog = L.delta_log_key(self.name, v)
            pipe.hset(mkey, "delta_seq", str(seq))
            pipe.rpush(dlog, L.pack_delta_entry(seq, slots))
            pipe.ltrim(dlog, -L.DELTA_LOG_MAX, -1)
            result[0], result[1] = v, seq

        self._r.transaction(txn, self._pointer)  # RT: WATCH, GET, WATCH, HMGET, MULTI/EXEC
        return str(result[0]), int(result[1])

    def delta_updates(self, version: str, since: int) -> DeltaUpdates:
        """Slots changed by deltas of ``version`` with seq > ``since``. RTs: 1 (LRANGE)."""
        version = self._check_version(version)
        entries = self._r.lrange(L.delta_log_key(self.name, version), 0, -1)
        parsed = [L.unpack_delta_entry(e) for e in entries]
        changed = [s for seq, s in parsed if seq > since]
        oldest = parsed[0][0] if parsed else None
        latest = parsed[-1][0] if parsed else 0
        # Complete iff every seq in (since, latest] is still in the log and none was "all slots".
        complete = since >= latest or (oldest is not None and oldest <= since + 1)
        complete = complete and not any(s.size and s[0] == L.ALL_SLOTS for s in changed)
        slots = np.unique(np.concatenate(changed)) if changed else np.zeros(0, dtype=np.int64)
        return DeltaUpdates(slots=slots[slots >= 0], complete=bool(complete))

    # ---- reading ------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        """The current version id, or None. RTs: 1."""
        cur = self._r.get(self._pointer)
        return cur.decode() if cur else None

    def read(self, slot_ids: Sequence[int] | np.ndarray, *, version: str | None = None) -> np.ndarray:
        """``(N, d)`` rows of ``slot_ids`` (request order) from one version (default: current)."""
        return self.read_versioned(slot_ids, version=version).values

    def read_versioned(self, slot_ids: Sequence[int] | np.ndarray, *, version: str | None = None) -> ReadResult:
        """Like :meth:`read`, with the version and delta seq the rows came from.

        RTs: 1 (pointer + meta of the expected version, pipelined), +1 if the pointer moved,
        +1 (rows: one pipeline of MGETs; on a Cluster, one MGET per row group, per node).

        Raises:
            InvalidRequestError: empty, negative or out-of-range slot ids.
            VersionNotFoundError: unknown version, no current version, or the version was deleted
                during the read.
        """
        slots = self._check_slots(slot_ids, None)
        if slots.shape[0] == 0:
            raise InvalidRequestError("slot_ids", "must not be empty")
        v, meta = self._resolve(version)
        self._check_slots(slots, meta.n)
        uniq, inverse = np.unique(slots, return_inverse=True)
        rows = self._read_rows(v, meta, uniq)
        return ReadResult(version=v, delta_seq=meta.delta_seq, values=rows[inverse])  # (N, d)

    def read_weighted(self, slot_ids: np.ndarray, weights: np.ndarray, *, version: str | None = None) -> np.ndarray:
        """``(Q, d)`` weighted sums: ``out[q] = sum_k weights[q, k] * row[slot_ids[q, k]]``."""
        return self.read_weighted_versioned(slot_ids, weights, version=version).values

    def read_weighted_versioned(self, slot_ids: np.ndarray, weights: np.ndarray, *, version: str | None = None) -> ReadResult:
        """Like :meth:`read_weighted`, with the version and delta seq.

        Each distinct slot is read once; the sum runs in float32 in this process.

        Args:
            slot_ids: ``(Q, K)`` slot ids.
            weights: ``(Q, K)`` float weights (finite).

        Raises:
            InvalidRequestError: shape mismatch, non-finite weights, bad slot ids.
            VersionNotFoundError: as :meth:`read_versioned`.
        """
        ids = np.asarray(slot_ids)
        w = np.asarray(weights, dtype=np.float32)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise InvalidRequestError("slot_ids", f"expected a non-empty (Q, K) array, got shape {ids.shape}")
        if w.shape != ids.shape:
            raise InvalidRequestError("weights", f"shape {w.shape} does not match slot_ids {ids.shape}")
        if not np.isfinite(w).all():
            bad = int(np.flatnonzero(~np.isfinite(w.reshape(-1)))[0])
            raise InvalidRequestError("weights", f"must be finite; entry {bad} is {w.reshape(-1)[bad]}")
        Q, K = ids.shape
        res = self.read_versioned(ids.reshape(-1), version=version)
        rows = res.values.reshape(Q, K, -1)                       # (Q, K, d)
        out = np.matmul(w[:, None, :], rows)[:, 0, :]            # (Q, d)
        return ReadResult(version=res.version, delta_seq=res.delta_seq, values=out)

    # ---- versions -----------------------------------------------------------------------------
    def info(self, version: str | None = None) -> VersionInfo:
        """A version (default: the current one). RTs: 1-2.

        Raises:
            VersionNotFoundError: unknown version, or no current version.
        """
        cur = self.current_version()
        if version is None:
            if cur is None:
                raise VersionNotFoundError(f"memory {self.name!r} has no committed version")
            version = cur
        return self._info(version, self._meta(self._check_version(version)), cur)

    def list_versions(self) -> list[VersionInfo]:
        """Every version in the version set (loading and committed), oldest first. RTs: 2."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._pointer)
        pipe.zrange(self._versions, 0, -1)
        cur_raw, names = pipe.execute()  # RT 1
        cur = cur_raw.decode() if cur_raw else None
        versions = [n.decode() for n in names]
        pipe = self._r.pipeline(transaction=False)
        for v in versions:
            pipe.hmget(L.meta_key(self.name, v), L.META_FIELDS)
        metas = pipe.execute() if versions else []  # RT 2
        out = []
        for v, raw in zip(versions, metas):
            meta = L.decode_meta(raw)
            if meta is not None:
                out.append(self._info(v, meta, cur))
        return out

    def delete_version(self, version: str) -> int:
        """Deletes a version that is not current; returns the row keys deleted.

        Raises:
            VersionNotFoundError: unknown version.
            PreconditionError: it is the current version, or still loading (use Abort).
        """
        version = self._check_version(version)
        mkey = L.meta_key(self.name, version)
        holder: list[L.VersionMeta | None] = [None]

        def txn(pipe: Any) -> None:
            cur = pipe.get(self._pointer)
            if cur is not None and cur.decode() == version:
                raise PreconditionError(f"version {version!r} is the current version of memory {self.name!r}; commit another first")
            meta = L.decode_meta(pipe.hgetall(mkey))
            if meta is None or meta.state == L.State.ABORTED:
                raise VersionNotFoundError(f"memory {self.name!r} has no version {version!r}")
            if meta.state == L.State.LOADING:
                raise PreconditionError(f"version {version!r} is still loading; Abort it instead")
            holder[0] = meta
            pipe.multi()
            pipe.hset(mkey, "state", L.State.DELETING)
            pipe.zrem(self._versions, version)

        self._r.transaction(txn, self._pointer, mkey)
        meta = holder[0]
        assert meta is not None
        deleted = self._delete_rows(version, meta.n, meta.group_rows)
        self._r.delete(mkey, L.delta_log_key(self.name, version))
        logger.info("memory %s: deleted %s (%d row keys)", self.name, version, deleted)
        return deleted

    def prune(self, *, keep: int, grace_s: float) -> list[str]:
        """Deletes old committed versions: all but the ``keep`` newest non-current ones, and only
        those retired more than ``grace_s`` ago. Returns the versions deleted."""
        now = _now_ms()
        old = [i for i in self.list_versions() if i.state == L.State.COMMITTED and not i.is_current]
        doomed = old[: max(0, len(old) - keep)]
        deleted = []
        for vi in doomed:
            retired = L.decode_meta(self._r.hmget(L.meta_key(self.name, vi.version), L.META_FIELDS))
            if retired is None or not retired.retired_ms or now - retired.retired_ms < grace_s * 1000:
                continue
            self.delete_version(vi.version)
            deleted.append(vi.version)
        return deleted

    # ---- helpers ------------------------------------------------------------------------------
    def _check_version(self, version: str) -> str:
        try:
            return L.validate_version(version)
        except ValueError as e:
            raise InvalidRequestError("version", str(e).removeprefix("version: ")) from None

    @staticmethod
    def _check_slots(slot_ids: Sequence[int] | np.ndarray, n: int | None) -> np.ndarray:
        slots = np.asarray(slot_ids)
        if slots.ndim != 1:
            raise InvalidRequestError("slot_ids", f"expected a 1-D list of slot ids, got shape {slots.shape}")
        if slots.size and not np.issubdtype(slots.dtype, np.integer):
            raise InvalidRequestError("slot_ids", f"must be integers, got dtype {slots.dtype}")
        slots = slots.astype(np.int64, copy=False)
        if slots.size:
            lo, hi = int(slots.min()), int(slots.max())
            if lo < 0:
                raise InvalidRequestError("slot_ids", f"slot {lo} is negative; slots are in [0, n)")
            if n is not None and hi >= n:
                raise InvalidRequestError("slot_ids", f"slot {hi} is out of range [0, {n})")
        return slots

    def _meta(self, version: str) -> L.VersionMeta:
        meta = L.decode_meta(self._r.hmget(L.meta_key(self.name, version), L.META_FIELDS))
        if meta is None:
            raise VersionNotFoundError(f"memory {self.name!r} has no version {version!r}")
        return meta

    def _loading_meta(self, version: str, load_id: str | None, *, meta: L.VersionMeta | None = None) -> L.VersionMeta:
        version = self._check_version(version)
        meta = meta or self._meta(version)
        if meta.state == L.State.ABORTED:
            raise PreconditionError(f"version {version!r} was aborted; begin it again to reload")
        if meta.state != L.State.LOADING:
            raise PreconditionError(f"version {version!r} is {meta.state}, not loading")
        if load_id and load_id != meta.load_id:
            raise PreconditionError(
                f"load_id {load_id!r} is not the current load of version {version!r} "
                "(another BeginVersion restarted it)"
            )
        return meta

    def _resolve(self, version: str | None) -> tuple[str, L.VersionMeta]:
        """The version to read and its meta, read before any row (pins the version)."""
        if version:
            version = self._check_version(version)
            meta = L.decode_meta(self._r.hmget(L.meta_key(self.name, version), L.META_FIELDS))  # RT 1
            if meta is None or meta.state != L.State.COMMITTED:
                state = f" (state {meta.state})" if meta else ""
                raise VersionNotFoundError(f"memory {self.name!r} has no committed version {version!r}{state}")
            return version, meta
        # Optimistic: the pointer usually still names the version we saw last, so its meta rides
        # in the same round trip.
        guess = getattr(self, "_last_current", None)
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._pointer)
        if guess:
            pipe.hmget(L.meta_key(self.name, guess), L.META_FIELDS)
        replies = pipe.execute()  # RT 1
        if replies[0] is None:
            raise VersionNotFoundError(f"memory {self.name!r} has no committed version")
        v = replies[0].decode()
        meta = L.decode_meta(replies[1]) if guess == v else None
        if meta is None:
            meta = L.decode_meta(self._r.hmget(L.meta_key(self.name, v), L.META_FIELDS))  # RT 1b
        if meta is None or meta.state != L.State.COMMITTED:
            raise VersionNotFoundError(f"memory {self.name!r}: current version {v!r} has no committed meta")
        self._last_current = v
        return v, meta

    def _read_rows(self, version: str, meta: L.VersionMeta, uniq: np.ndarray) -> np.ndarray:
        """Rows of sorted unique slots. RTs: 1 pipeline (Cluster: one per node)."""
        keys = L.row_keys(self.name, version, uniq, meta.group_rows)
        values = self._mget(keys, uniq // meta.group_rows)
        if None in values:
            missing = int(uniq[[i for i, v in enumerate(values) if v is None][0]])
            raise VersionNotFoundError(
                f"memory {self.name!r} version {version!r} lost row {missing} during the read "
                "(the version was deleted); retry to read the current version"
            )
        try:
            return L.unpack_rows(values, meta.d)  # (U, d)
        except ValueError as e:
            raise PreconditionError(f"memory {self.name!r} version {version!r}: {e}") from None

    def _mget(self, keys: list[bytes], groups: np.ndarray) -> list[bytes | None]:
        """Values of ``keys`` in order. RTs: 1 pipeline of MGETs of <= 1024 keys; on a Cluster one
        MGET per row group (``groups[i]`` is the group of ``keys[i]``), pipelined per node."""
        pipe = self._r.pipeline(transaction=False)
        if not self._cluster:
            for i in range(0, len(keys), _MGET_BATCH):
                pipe.mget(keys[i : i + _MGET_BATCH])
            return [v for part in pipe.execute() for v in part]
        order, bounds = _group_bounds(groups)
        for a, b in zip(bounds[:-1], bounds[1:]):
            # ClusterPipeline blocks its .mget() helper (keys may span slots); one group's keys
            # share a hash tag, so a raw MGET routes to its node.
            pipe.execute_command("MGET", *[keys[j] for j in order[a:b]])
        out: list[bytes | None] = [None] * len(keys)
        for a, b, part in zip(bounds[:-1], bounds[1:], pipe.execute()):
            for j, val in zip(order[a:b], part):
                out[j] = val
        return out

    def _mset(self, keys: list[bytes], values: list[bytes], groups: np.ndarray) -> None:
        """Writes ``keys[i] -> values[i]`` (a repeated key keeps its last value). RTs: 1 pipeline
        of MSETs of <= 1024 keys; on a Cluster one MSET per row group, pipelined per node."""
        pipe = self._r.pipeline(transaction=False)
        if not self._cluster:
            for i in range(0, len(keys), _MGET_BATCH):
                pipe.mset(dict(zip(keys[i : i + _MGET_BATCH], values[i : i + _MGET_BATCH])))
        else:
            order, bounds = _group_bounds(groups)
            for a, b in zip(bounds[:-1], bounds[1:]):
                pairs = {keys[j]: values[j] for j in order[a:b]}
                pipe.execute_command("MSET", *[x for kv in pairs.items() for x in kv])
        pipe.execute()

    def _delete_rows(self, version: str, n: int, group_rows: int) -> int:
        """UNLINKs every row key of a version (n / 1024 UNLINKs, 16 per RT)."""
        deleted = 0
        step = _MGET_BATCH * 16
        for s in range(0, n, step):
            keys = L.row_range_keys(self.name, version, s, min(n, s + step), group_rows)
            if self._cluster:
                deleted += int(self._r.unlink(*keys))  # redis-py splits by slot, one pipeline
                continue
            pipe = self._r.pipeline(transaction=False)
            for i in range(0, len(keys), _MGET_BATCH):
                pipe.unlink(*keys[i : i + _MGET_BATCH])
            deleted += sum(int(x) for x in pipe.execute())
        return deleted

    def _verify(self, version: str, meta: L.VersionMeta) -> None:
        """Reads every row in slot order: all present, and the sha256 matches."""
        h = hashlib.sha256()
        missing, first_missing = 0, -1
        for s in range(0, meta.n, _VERIFY_BATCH):
            e = min(meta.n, s + _VERIFY_BATCH)
            keys = L.row_range_keys(self.name, version, s, e, meta.group_rows)
            values = self._mget(keys, np.arange(s, e) // meta.group_rows)
            for i, v in enumerate(values):
                if v is None:
                    if first_missing < 0:
                        first_missing = s + i
                    missing += 1
                elif len(v) != meta.d * 4:
                    raise PreconditionError(f"version {version!r}: row {s + i} holds {len(v)} bytes, expected {meta.d * 4}")
            if not missing:
                h.update(b"".join(values))  # type: ignore[arg-type]  (no None when nothing is missing)
        if missing:
            raise PreconditionError(
                f"version {version!r} is missing {missing} of {meta.n} rows (first missing slot {first_missing}); "
                "PutRows the rest, or Abort"
            )
        got = h.hexdigest()
        if got != meta.sha256:
            raise PreconditionError(
                f"version {version!r} checksum mismatch: rows hash to sha256 {got}, BeginVersion declared {meta.sha256}"
            )

    def _info(self, version: str, meta: L.VersionMeta, current: str | None) -> VersionInfo:
        return VersionInfo(
            name=self.name, version=version, state=meta.state, n=meta.n, d=meta.d, dtype=meta.dtype,
            sha256=meta.sha256, source=meta.source, created_ms=meta.created_ms,
            committed_ms=meta.committed_ms, delta_seq=meta.delta_seq, is_current=(version == current),
        )


def _group_bounds(groups: np.ndarray) -> tuple[list[int], list[int]]:
    """Stable order of positions by group, and the run boundaries of each group in that order."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    cuts = np.flatnonzero(np.diff(sorted_groups)) + 1
    return order.tolist(), [0, *cuts.tolist(), len(groups)]

