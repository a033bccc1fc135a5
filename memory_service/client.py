"""The gRPC client of the memory service, with a bounded in-process row cache.

**Cache.** Rows are cached by ``(version, slot)`` in an LRU of ``cache_rows`` rows. Reads go to
one version: the client's view of the current version, refreshed by an ``Info`` call at most every
``max_staleness_s`` seconds, and passed explicitly in every ``Read`` so the rows of one call never
mix versions (cached or not). A new version therefore never returns old rows: its keys differ, and
the old version's rows are dropped when the client sees the switch.

``ApplyDelta`` bumps the version's ``delta_seq``. Every ``Read`` reply carries the seq (read before
the rows on the server), and so does every ``Info``; when the client sees a newer seq it asks for
the slots changed since the seq it knew and drops exactly those (all rows of the version if the
server's delta log no longer reaches back). Rows read in a reply older than the newest seq seen are
returned but not cached.

**Staleness bound.** A cached row can lag a delta, and the client's version can lag a commit, by at
most ``max_staleness_s`` plus one RPC (the next refresh), or less if any reply shows the change
first. Servers keep a retired version ``retire_grace_s`` (default 300 s > ``max_staleness_s``);
if a pinned version was deleted anyway, the read refreshes and retries once on the new version.
With ``cache_rows=0`` there is no cache and no staleness: every call reads the current version.

Example:
    >>> mc = MemoryClient("127.0.0.1:50061", token="s3cret")  # doctest: +SKIP
    >>> mc.load_block(values, version="v2", source="lmn/2").state  # doctest: +SKIP
    'committed'
    >>> mc.read([1, 5, 7]).shape  # doctest: +SKIP
    (3, 64)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from memory_service.layout import DTYPE, block_sha256
from memory_service.store import VersionInfo
from protos.seedrec.v1 import memory_pb2, memory_pb2_grpc
from seedrec.errors import SeedrecError

__all__ = ["MemoryClient", "MemoryRpcError"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STATE = {
    memory_pb2.VERSION_STATE_LOADING: "loading",
    memory_pb2.VERSION_STATE_COMMITTED: "committed",
    memory_pb2.VERSION_STATE_ABORTED: "aborted",
    memory_pb2.VERSION_STATE_DELETING: "deleting",
}


class MemoryRpcError(SeedrecError):
    """A memory-service call failed.

    Attributes:
        method: the RPC (``Read``, ``Commit``, ...).
        code: the ``grpc.StatusCode``.
        details: the server's message.
    """

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method, self.code, self.details = method, code, details
        super().__init__(f"{method} failed: {code.name}: {details}")


def _info(pb: memory_pb2.VersionInfo) -> VersionInfo:
    return VersionInfo(
        name=pb.name, version=pb.version, state=_STATE.get(pb.state, "unspecified"), n=pb.n, d=pb.d,
        dtype=pb.dtype, sha256=pb.sha256, source=pb.source, created_ms=pb.created_unix_ms,
        committed_ms=pb.committed_unix_ms, delta_seq=pb.delta_seq, is_current=pb.is_current,
    )


class MemoryClient:
    """Reads and loads the memory block through a memory server.

    Args:
        address: ``host:port`` of the server.
        token: the admin token (needed by ``load_block``, ``apply_delta``, ``abort``, ``delete_version``).
        name: the memory block; empty means the server's default.
        cache_rows: rows kept in the LRU cache; 0 disables the cache.
        max_staleness_s: how old the client's view of the current version and its delta seq may get.
        timeout_s: the deadline of each read/info call.
        chunk_bytes: the payload of each ``PutRows`` message when loading.
        max_message_bytes: the largest gRPC message sent or received.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        name: str = "",
        cache_rows: int = 100_000,
        max_staleness_s: float = 1.0,
        timeout_s: float = 10.0,
        chunk_bytes: int = 1 << 20,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        if cache_rows < 0:
            raise ValueError(f"`cache_rows` must be >= 0, got {cache_rows}")
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)
        self._admin_md = (("authorization", f"Bearer {token}"),) if token else ()
        self._name = name
        self._timeout_s = timeout_s
        self._chunk_bytes = chunk_bytes
        self._max_staleness_s = max_staleness_s
        self._cache_rows = cache_rows
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._version: str | None = None        # the client's view of the current version
        self._seq: dict[str, int] = {}          # delta seq known (and applied to the cache) per version
        self._d: dict[str, int] = {}
        self._checked = 0.0
        self.hits = 0
        self.misses = 0

    # ---- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, fn: Callable[..., T], request: Any, *, admin: bool = False, timeout: float | None = None) -> T:
        try:
            return fn(request, timeout=timeout or self._timeout_s, metadata=self._admin_md if admin else None)
        except grpc.RpcError as e:
            raise MemoryRpcError(method, e.code(), e.details() or "") from None

    # ---- reads --------------------------------------------------------------------------------
    def info(self, version: str | None = None) -> VersionInfo:
        """The given version, or the current one (``NOT_FOUND`` if none is committed)."""
        reply = self._call("Info", self._stub.Info, memory_pb2.InfoRequest(name=self._name, version=version or ""))
        return _info(reply.info)

    def list_versions(self) -> list[VersionInfo]:
        """Every loading or committed version, oldest first."""
        reply = self._call("ListVersions", self._stub.ListVersions, memory_pb2.ListVersionsRequest(name=self._name))
        return [_info(v) for v in reply.versions]

    def read(self, slot_ids: Sequence[int] | np.ndarray, *, version: str | None = None) -> np.ndarray:
        """``(N, d)`` float32 rows of ``slot_ids`` (request order), all from one version.

        Args:
            slot_ids: ``(N,)`` slot ids.
            version: a specific committed version; default the current one.
        """
        slots = np.asarray(slot_ids, dtype=np.int64).reshape(-1)
        if not self._cache_rows:
            reply = self._read_rpc(slots, version or "")
            return np.frombuffer(reply.values, dtype="<f4").astype(np.float32).reshape(reply.rows, reply.d)
        pinned = version or self._current()
        try:
            return self._read_cached(slots, pinned)
        except MemoryRpcError as e:
            if version or e.code != grpc.StatusCode.NOT_FOUND:
                raise
            self._refresh()  # our view of the current version was deleted: catch up, retry once
            return self._read_cached(slots, self._current())

    def read_weighted(self, slot_ids: np.ndarray, weights: np.ndarray, *, version: str | None = None) -> np.ndarray:
        """``(Q, d)`` weighted sums ``sum_k weights[q, k] * row[slot_ids[q, k]]``.

        Without a cache the server computes them (``ReadWeighted``: only ``Q x d`` floats travel);
        with one, the rows come through :meth:`read` and the sum runs here.
        """
        ids = np.asarray(slot_ids, dtype=np.int64)
        w = np.asarray(weights, dtype=np.float32)
        if ids.ndim != 2 or w.shape != ids.shape:
            raise ValueError(f"slot_ids and weights must be (Q, K) of one shape, got {ids.shape} and {w.shape}")
        Q, K = ids.shape
        if not self._cache_rows:
            request = memory_pb2.ReadWeightedRequest(
                name=self._name, version=version or "", k=K, slot_ids=ids.reshape(-1).tolist(),
                weights=w.astype("<f4").tobytes(),
            )
            reply = self._call("ReadWeighted", self._stub.ReadWeighted, request)
            return np.frombuffer(reply.values, dtype="<f4").astype(np.float32).reshape(reply.rows, reply.d)
        rows = self.read(ids.reshape(-1), version=version).reshape(Q, K, -1)  # (Q, K, d)
        return np.matmul(w[:, None, :], rows)[:, 0, :]                      # (Q, d)

    @property
    def cached_rows(self) -> int:
        return len(self._cache)

    def _read_rpc(self, slots: np.ndarray, version: str) -> memory_pb2.ReadResponse:
        request = memory_pb2.ReadRequest(name=self._name, version=version, slot_ids=slots.tolist())
        return self._call("Read", self._stub.Read, request)

    def _current(self) -> str:
        if self._version is None or time.monotonic() - self._checked > self._max_staleness_s:
            self._refresh()
        assert self._version is not None
        return self._version

    def _refresh(self) -> None:
        """One ``Info`` call: the current version and the slots changed since our delta seq."""
        known = self._version
        request = memory_pb2.InfoRequest(name=self._name, with_updates=known is not None, since_delta_seq=self._seq.get(known or "", 0))
        reply = self._call("Info", self._stub.Info, request)
        version = reply.info.version
        with self._lock:
            self._checked = time.monotonic()
            if version != known:
                for key in [k for k in self._cache if k[0] != version]:  # a new version: drop the old rows
                    del self._cache[key]
                self._seq = {version: reply.info.delta_seq}
                self._version = version
            else:
                self._drop_updated(version, reply)
            self._d[version] = reply.info.d

    def _drop_updated(self, version: str, reply: memory_pb2.InfoResponse) -> None:
        """Under the lock: forget the cached rows that deltas after our seq changed."""
        if reply.info.delta_seq <= self._seq.get(version, 0):
            return
        if reply.updated_slots_complete:
            for s in reply.updated_slots:
                self._cache.pop((version, s), None)
        else:
            for key in [k for k in self._cache if k[0] == version]:
                del self._cache[key]
        self._seq[version] = reply.info.delta_seq

    def _read_cached(self, slots: np.ndarray, version: str) -> np.ndarray:
        rowbytes: list[bytes | None] = [None] * len(slots)
        missing: dict[int, list[int]] = {}
        with self._lock:
            for i, s in enumerate(slots.tolist()):
                row = self._cache.get((version, s))
                if row is None:
                    missing.setdefault(s, []).append(i)
                else:
                    self._cache.move_to_end((version, s))
                    rowbytes[i] = row
            self.hits += len(slots) - sum(len(v) for v in missing.values())
            self.misses += sum(len(v) for v in missing.values())
        if missing:
            want = np.fromiter(missing.keys(), dtype=np.int64, count=len(missing))
            reply = self._read_rpc(want, version)
            width = reply.d * 4
            got = [reply.values[j * width : (j + 1) * width] for j in range(reply.rows)]
            cacheable = self._observe_seq(version, reply.delta_seq)
            with self._lock:
                for s, row in zip(missing, got):
                    for i in missing[s]:
                        rowbytes[i] = row
                    if cacheable:
                        self._cache[(version, s)] = row
                while len(self._cache) > self._cache_rows:
                    self._cache.popitem(last=False)
            self._d[version] = reply.d
        d = self._d.get(version) or len(rowbytes[0] or b"") // 4
        return np.frombuffer(b"".join(rowbytes), dtype="<f4").astype(np.float32).reshape(len(slots), d)  # type: ignore[arg-type]  (all filled)

    def _observe_seq(self, version: str, seq: int) -> bool:
        """A reply of ``version`` at delta ``seq``: invalidate what changed; True if its rows may be cached."""
        if seq <= self._seq.get(version, 0):
            return seq == self._seq.get(version, 0)
        request = memory_pb2.InfoRequest(name=self._name, version=version, with_updates=True, since_delta_seq=self._seq.get(version, 0))
        reply = self._call("Info", self._stub.Info, request)
        with self._lock:
            self._drop_updated(version, reply)
        # Rows read at `seq` may predate deltas up to the seq just learnt: do not cache them.
        return reply.info.delta_seq == seq

    # ---- admin --------------------------------------------------------------------------------
    def load_block(self, values: np.ndarray, *, version: str, source: str = "", timeout_s: float | None = None) -> VersionInfo:
        """Loads ``values`` as a new version and commits it (BeginVersion, PutRows stream, Commit).

        On any failure the half-written version is aborted (best effort) and the error re-raised;
        the current version is untouched until the commit succeeds.

        Args:
            values: ``(n, d)`` float32 block (``M x D``).
            version: the new version id.
            source: where it came from (e.g. the model package), kept in the version's meta.
            timeout_s: deadline of the PutRows stream and of the commit; default scales with size.

        Returns:
            The committed version.
        """
        arr = np.ascontiguousarray(values, dtype="<f4")
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"values must be a non-empty (n, d) array, got shape {arr.shape}")
        n, d = arr.shape
        budget = timeout_s or (30.0 + arr.nbytes / (5 << 20))  # >= 5 MiB/s
        t0 = time.perf_counter()
        sha = block_sha256(arr)
        begin = self._call(
            "BeginVersion", self._stub.BeginVersion,
            memory_pb2.BeginVersionRequest(name=self._name, version=version, n=n, d=d, dtype=DTYPE, sha256=sha, source=source),
            admin=True,
        )
        if begin.leftover_keys_deleted:
            logger.warning("memory version %s: the server removed %d keys of an earlier unfinished load", version, begin.leftover_keys_deleted)
        try:
            put = self._call("PutRows", self._stub.PutRows, self._chunks(arr, version, begin.load_id), admin=True, timeout=budget)
            if put.rows_written != n:
                raise MemoryRpcError("PutRows", grpc.StatusCode.DATA_LOSS, f"server wrote {put.rows_written} of {n} rows")
            done = self._call(
                "Commit", self._stub.Commit,
                memory_pb2.CommitRequest(name=self._name, version=version, load_id=begin.load_id), admin=True, timeout=budget,
            )
        except BaseException:
            try:
                self.abort(version, load_id=begin.load_id)
            except MemoryRpcError as e:
                logger.warning("aborting version %s after a failed load failed too: %s", version, e)
            raise
        logger.info("memory version %s (%d x %d) loaded and committed in %.1fs", version, n, d, time.perf_counter() - t0)
        return _info(done.info)

    def _chunks(self, arr: np.ndarray, version: str, load_id: str) -> Iterator[memory_pb2.PutRowsRequest]:
        n, d = arr.shape
        step = max(1, self._chunk_bytes // (d * 4))
        for start in range(0, n, step):
            part = arr[start : start + step]
            yield memory_pb2.PutRowsRequest(
                name=self._name, version=version, load_id=load_id, start=start, count=part.shape[0], d=d,
                values=part.tobytes(),
            )

    def abort(self, version: str, *, load_id: str = "") -> int:
        """Aborts a loading version; returns the row keys deleted."""
        reply = self._call("Abort", self._stub.Abort, memory_pb2.AbortRequest(name=self._name, version=version, load_id=load_id), admin=True)
        return int(reply.keys_deleted)

    def apply_delta(self, slot_ids: Sequence[int] | np.ndarray, rows: np.ndarray, *, version: str | None = None) -> tuple[str, int]:
        """Overwrites rows of the current version; returns ``(version, delta_seq)``."""
        slots = np.asarray(slot_ids, dtype=np.int64).reshape(-1)
        arr = np.ascontiguousarray(rows, dtype="<f4")
        if arr.ndim != 2 or arr.shape[0] != slots.shape[0]:
            raise ValueError(f"rows must be ({slots.shape[0]}, d), got shape {arr.shape}")
        request = memory_pb2.ApplyDeltaRequest(
            name=self._name, version=version or "", slot_ids=slots.tolist(), d=arr.shape[1], values=arr.tobytes(),
        )
        reply = self._call("ApplyDelta", self._stub.ApplyDelta, request, admin=True)
        return reply.version, int(reply.delta_seq)

    def delete_version(self, version: str) -> int:
        """Deletes a committed, non-current version; returns the row keys deleted."""
        reply = self._call(
            "DeleteVersion", self._stub.DeleteVersion, memory_pb2.DeleteVersionRequest(name=self._name, version=version),
            admin=True, timeout=max(self._timeout_s, 120.0),
        )
        return int(reply.keys_deleted)
