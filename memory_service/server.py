"""The gRPC memory server: ``seedrec.v1.MemoryService`` over :class:`~memory_service.store.MemoryStore`.

Run it with ``seedrec memory serve [--redis URL] [--port P] [--token T]``; in tests and benchmarks
use :class:`BackgroundServer` (a server on its own event loop thread, port 0).

**Async server, blocking store in a thread pool.** The server is ``grpc.aio``; each handler
validates the request and runs one :class:`MemoryStore` call in a bounded ``ThreadPoolExecutor``.
We keep one tested implementation of the logic (the sync store, which the tests call directly)
instead of a line-for-line async twin; the work per call is mostly CPU (RESP parsing, numpy,
protobuf) under the GIL, so an async Redis client would not add throughput; and the pool size
(``workers``) bounds the Redis connections. The store call runs under ``asyncio.wait_for`` with
the RPC's remaining deadline, so a call answers by its deadline whatever Redis does.

**Redis outages.** The client uses short socket/connect timeouts and one immediate retry (a stale
pooled connection after a Redis restart reconnects transparently), never redis-py's default
backoff storm. A refused or timed-out connection answers ``UNAVAILABLE`` at once; the next request
reconnects, so the service recovers by itself when Redis returns.

Status codes: see :func:`status_of`. Admin calls (BeginVersion, PutRows, Commit, Abort,
ApplyDelta, DeleteVersion) need ``authorization: Bearer <token>`` metadata.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from memory_service import layout as L
from memory_service.configs import MemoryServiceConfig
from memory_service.errors import (
    InvalidRequestError,
    PreconditionError,
    VersionExistsError,
    VersionNotFoundError,
)
from memory_service.store import MemoryStore, VersionInfo
from protos.seedrec.v1 import memory_pb2, memory_pb2_grpc
from seedrec.errors import ServiceUnavailableError

__all__ = [
    "SERVICE_NAME",
    "MemoryServiceServicer",
    "BackgroundServer",
    "create_server",
    "make_redis_client",
    "serve",
    "status_of",
    "stop_server",
]

logger = logging.getLogger(__name__)

SERVICE_NAME = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name  # seedrec.v1.MemoryService
T = TypeVar("T")

_REQUESTS = Counter("seedrec_memory_requests_total", "Memory service RPCs by method and status code", ["method", "code"])
_LATENCY = Histogram(
    "seedrec_memory_request_seconds", "Memory service RPC latency", ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
_ROWS = Counter("seedrec_memory_rows_total", "Rows read (Read, ReadWeighted) or written (PutRows, ApplyDelta)", ["method"])

_STATE_PB = {
    L.State.LOADING: memory_pb2.VERSION_STATE_LOADING,
    L.State.COMMITTED: memory_pb2.VERSION_STATE_COMMITTED,
    L.State.ABORTED: memory_pb2.VERSION_STATE_ABORTED,
    L.State.DELETING: memory_pb2.VERSION_STATE_DELETING,
}
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ClusterError,
)


class _Reject(Exception):
    """A request refused with a given status (auth, limits)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call answers with.

    ``INVALID_ARGUMENT`` malformed request (message names the field); ``NOT_FOUND`` unknown
    version; ``ALREADY_EXISTS`` duplicate version; ``FAILED_PRECONDITION`` wrong state;
    ``UNAVAILABLE`` Redis unreachable; ``RESOURCE_EXHAUSTED`` Redis out of memory or a reply too
    big; ``DEADLINE_EXCEEDED`` the deadline passed; ``INTERNAL`` anything else (a bug).
    """
    if isinstance(exc, _Reject):
        return exc.code, str(exc)
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, VersionNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, VersionExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    if isinstance(exc, PreconditionError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, TimeoutError):  # asyncio.wait_for on the RPC deadline
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while waiting for Redis"
    if isinstance(exc, _REDIS_DOWN):
        return grpc.StatusCode.UNAVAILABLE, f"redis unavailable: {type(exc).__name__}: {exc}"
    if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("OOM"):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"redis out of memory: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


# ---- request decoding (pure) -------------------------------------------------------------------
def _slots(field: str, ids: Any, max_slots: int) -> np.ndarray:
    n = len(ids)
    if n == 0:
        raise InvalidRequestError(field, "must not be empty")
    if n > max_slots:
        raise InvalidRequestError(field, f"{n} slot ids exceed the server's max batch of {max_slots}; split the request")
    return np.fromiter(ids, dtype=np.int64, count=n)


def _floats(field: str, data: bytes, count: int) -> np.ndarray:
    if len(data) != count * 4:
        raise InvalidRequestError(field, f"expected {count} float32 ({count * 4} bytes), got {len(data)} bytes")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _rows_bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def _info_pb(vi: VersionInfo) -> memory_pb2.VersionInfo:
    return memory_pb2.VersionInfo(
        name=vi.name, version=vi.version, state=_STATE_PB.get(vi.state, memory_pb2.VERSION_STATE_UNSPECIFIED),
        n=vi.n, d=vi.d, dtype=vi.dtype, sha256=vi.sha256, source=vi.source,
        created_unix_ms=vi.created_ms, committed_unix_ms=vi.committed_ms, delta_seq=vi.delta_seq,
        is_current=vi.is_current,
    )


def make_redis_client(cfg: MemoryServiceConfig) -> redis.Redis | RedisCluster:
    """A redis-py client for ``cfg.redis_url`` (AUTH and ``rediss://`` TLS come from the URL).

    Short timeouts and one immediate retry: an outage answers fast and the next call reconnects.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": cfg.redis_socket_timeout_s,
        "socket_connect_timeout": cfg.redis_connect_timeout_s,
        "retry": Retry(NoBackoff(), 1),
    }
    if cfg.cluster:
        try:
            return RedisCluster.from_url(cfg.redis_url, **kwargs)
        except _REDIS_DOWN as e:
            raise ServiceUnavailableError(f"redis cluster at {_redact(cfg.redis_url)} is unreachable: {e}") from e
    return redis.Redis.from_url(cfg.redis_url, max_connections=max(cfg.workers * 2, 16), **kwargs)


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if sep else url


# ---- the servicer ------------------------------------------------------------------------------
class MemoryServiceServicer(memory_pb2_grpc.MemoryServiceServicer):
    """``seedrec.v1.MemoryService``: validates requests and calls :class:`MemoryStore`.

    Args:
        cfg: the service configuration.
        client: the redis-py client the stores use; default :func:`make_redis_client`.
    """

    def __init__(self, cfg: MemoryServiceConfig, *, client: redis.Redis | RedisCluster | None = None) -> None:
        self._cfg = cfg
        self._client = client if client is not None else make_redis_client(cfg)
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="memory-redis")
        self._stores: dict[str, MemoryStore] = {}
        self._lock = threading.Lock()
        self._metrics_http: Any = None
        self._health_task: asyncio.Task[None] | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port of the Prometheus endpoint, or None when metrics are not served."""
        return int(self._metrics_http.server_address[1]) if self._metrics_http is not None else None

    def close(self) -> None:
        """Stops the worker threads, the Redis client and the metrics endpoint."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 (closing a client whose Redis is gone)
            logger.debug("closing the redis client failed", exc_info=True)

    # ---- plumbing -----------------------------------------------------------------------------
    def _store(self, name: str) -> MemoryStore:
        name = name or self._cfg.name
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = MemoryStore(self._client, name, group_rows=self._cfg.group_rows)
            return store

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
        if not header:
            raise _Reject(grpc.StatusCode.UNAUTHENTICATED, "authorization: missing `authorization: Bearer <token>` metadata (admin call)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Reject(grpc.StatusCode.UNAUTHENTICATED, "authorization: expected `Bearer <token>`")
        if self._cfg.token is None:
            raise _Reject(grpc.StatusCode.PERMISSION_DENIED, "authorization: admin calls are disabled on this server (start it with --token)")
        if not hmac.compare_digest(token.strip().encode(), self._cfg.token.encode()):
            raise _Reject(grpc.StatusCode.PERMISSION_DENIED, "authorization: wrong admin token")

    async def _in_pool(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        """Runs ``fn`` on a worker thread, bounded by the RPC's remaining deadline."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        return await asyncio.wait_for(future, remaining)

    async def _handle(
        self, method: str, context: grpc.aio.ServicerContext, body: Callable[[], Awaitable[T]], *, admin: bool = False,
    ) -> T:
        """Auth, metrics and the status-code mapping around one RPC."""
        t0 = time.perf_counter()
        try:
            if admin:
                self._authorize(context)
            result = await body()
        except Exception as e:  # noqa: BLE001 (mapped to a status code below; bugs are INTERNAL and logged)
            code, message = status_of(e)
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("%s failed", method)
            elif code == grpc.StatusCode.UNAVAILABLE:
                logger.warning("%s: %s", method, message)
        else:
            _REQUESTS.labels(method, "OK").inc()
            _LATENCY.labels(method).observe(time.perf_counter() - t0)
            return result
        _REQUESTS.labels(method, code.name).inc()
        _LATENCY.labels(method).observe(time.perf_counter() - t0)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    # ---- reads --------------------------------------------------------------------------------
    async def Read(self, request: memory_pb2.ReadRequest, context: grpc.aio.ServicerContext) -> memory_pb2.ReadResponse:
        def work() -> memory_pb2.ReadResponse:
            slots = _slots("slot_ids", request.slot_ids, self._cfg.max_batch_slots)
            res = self._store(request.name).read_versioned(slots, version=request.version or None)
            N, D = res.values.shape
            self._check_reply(N * D * 4)
            _ROWS.labels("Read").inc(N)
            return memory_pb2.ReadResponse(version=res.version, delta_seq=res.delta_seq, rows=N, d=D, values=_rows_bytes(res.values))

        return await self._handle("Read", context, lambda: self._in_pool(context, work))

    async def ReadWeighted(
        self, request: memory_pb2.ReadWeightedRequest, context: grpc.aio.ServicerContext,
    ) -> memory_pb2.ReadWeightedResponse:
        def work() -> memory_pb2.ReadWeightedResponse:
            k = request.k
            if k < 1:
                raise InvalidRequestError("k", f"slots per query must be >= 1, got {k}")
            slots = _slots("slot_ids", request.slot_ids, self._cfg.max_batch_slots)
            if slots.shape[0] % k:
                raise InvalidRequestError("slot_ids", f"{slots.shape[0]} ids is not a multiple of k={k}")
            Q = slots.shape[0] // k
            weights = _floats("weights", request.weights, Q * k).reshape(Q, k)  # (Q, K)
            res = self._store(request.name).read_weighted_versioned(slots.reshape(Q, k), weights, version=request.version or None)
            _ROWS.labels("ReadWeighted").inc(slots.shape[0])
            return memory_pb2.ReadWeightedResponse(
                version=res.version, delta_seq=res.delta_seq, rows=Q, d=res.values.shape[1], values=_rows_bytes(res.values),
            )

        return await self._handle("ReadWeighted", context, lambda: self._in_pool(context, work))

    async def Info(self, request: memory_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> memory_pb2.InfoResponse:
        def work() -> memory_pb2.InfoResponse:
            store = self._store(request.name)
            info = store.info(request.version or None)
            reply = memory_pb2.InfoResponse(info=_info_pb(info), current_version=info.version if info.is_current else (store.current_version() or ""))
            if request.with_updates:
                if request.since_delta_seq < 0:
                    raise InvalidRequestError("since_delta_seq", f"must be >= 0, got {request.since_delta_seq}")
                upd = store.delta_updates(info.version, request.since_delta_seq)
                reply.updated_slots.extend(upd.slots.tolist())
                reply.updated_slots_complete = upd.complete
            return reply

        return await self._handle("Info", context, lambda: self._in_pool(context, work))

    async def ListVersions(
        self, request: memory_pb2.ListVersionsRequest, context: grpc.aio.ServicerContext,
    ) -> memory_pb2.ListVersionsResponse:
        def work() -> memory_pb2.ListVersionsResponse:
            versions = self._store(request.name).list_versions()
            current = next((v.version for v in versions if v.is_current), "")
            return memory_pb2.ListVersionsResponse(versions=[_info_pb(v) for v in versions], current_version=current)

        return await self._handle("ListVersions", context, lambda: self._in_pool(context, work))

    # ---- admin --------------------------------------------------------------------------------
    async def BeginVersion(
        self, request: memory_pb2.BeginVersionRequest, context: grpc.aio.ServicerContext,
    ) -> memory_pb2.BeginVersionResponse:
        def work() -> memory_pb2.BeginVersionResponse:
            ticket = self._store(request.name).begin_version(
                request.version, n=request.n, d=request.d, sha256=request.sha256, source=request.source,
                dtype=request.dtype,
            )
            return memory_pb2.BeginVersionResponse(load_id=ticket.load_id, leftover_keys_deleted=ticket.leftover_keys_deleted)

        return await self._handle("BeginVersion", context, lambda: self._in_pool(context, work), admin=True)

    async def PutRows(
        self, request_iterator: AsyncIterator[memory_pb2.PutRowsRequest], context: grpc.aio.ServicerContext,
    ) -> memory_pb2.PutRowsResponse:
        async def body() -> memory_pb2.PutRowsResponse:
            rows = messages = 0
            first: tuple[str, str] | None = None
            async for req in request_iterator:
                if first is None:
                    first = (req.name, req.version)
                elif (req.name, req.version) != first:
                    raise InvalidRequestError("version", f"changed within the stream from {first[1]!r} to {req.version!r}")
                rows += await self._in_pool(context, functools.partial(self._put_rows, req))
                messages += 1
            if messages == 0:
                raise InvalidRequestError("stream", "no PutRows messages")
            return memory_pb2.PutRowsResponse(rows_written=rows, messages=messages)

        return await self._handle("PutRows", context, body, admin=True)

    def _put_rows(self, req: memory_pb2.PutRowsRequest) -> int:
        if req.count < 1:
            raise InvalidRequestError("count", f"must be >= 1, got {req.count}")
        if req.d < 1:
            raise InvalidRequestError("d", f"must be >= 1, got {req.d}")
        rows = _floats("values", req.values, req.count * req.d).reshape(req.count, req.d)  # (count, d)
        written = self._store(req.name).put_rows(req.version, req.start, rows, load_id=req.load_id or None)
        _ROWS.labels("PutRows").inc(written)
        return written

    async def Commit(self, request: memory_pb2.CommitRequest, context: grpc.aio.ServicerContext) -> memory_pb2.CommitResponse:
        def work() -> memory_pb2.CommitResponse:
            store = self._store(request.name)
            done = store.commit(request.version, load_id=request.load_id or None)
            if self._cfg.keep_versions > 0:
                try:
                    pruned = store.prune(keep=self._cfg.keep_versions, grace_s=self._cfg.retire_grace_s)
                    if pruned:
                        logger.info("memory %s: pruned old versions %s", store.name, pruned)
                except redis.RedisError:
                    logger.warning("pruning old versions failed; the commit stands", exc_info=True)
            return memory_pb2.CommitResponse(info=_info_pb(done.info), previous_version=done.previous_version or "")

        return await self._handle("Commit", context, lambda: self._in_pool(context, work), admin=True)

    async def Abort(self, request: memory_pb2.AbortRequest, context: grpc.aio.ServicerContext) -> memory_pb2.AbortResponse:
        def work() -> memory_pb2.AbortResponse:
            deleted = self._store(request.name).abort(request.version, load_id=request.load_id or None)
            return memory_pb2.AbortResponse(keys_deleted=deleted)

        return await self._handle("Abort", context, lambda: self._in_pool(context, work), admin=True)

    async def ApplyDelta(
        self, request: memory_pb2.ApplyDeltaRequest, context: grpc.aio.ServicerContext,
    ) -> memory_pb2.ApplyDeltaResponse:
        def work() -> memory_pb2.ApplyDeltaResponse:
            slots = _slots("slot_ids", request.slot_ids, self._cfg.max_batch_slots)
            if request.d < 1:
                raise InvalidRequestError("d", f"must be >= 1, got {request.d}")
            rows = _floats("values", request.values, slots.shape[0] * request.d).reshape(-1, request.d)  # (N, d)
            version, seq = self._store(request.name).apply_delta(slots, rows, version=request.version or None)
            _ROWS.labels("ApplyDelta").inc(slots.shape[0])
            return memory_pb2.ApplyDeltaResponse(version=version, delta_seq=seq)

        return await self._handle("ApplyDelta", context, lambda: self._in_pool(context, work), admin=True)

    async def DeleteVersion(
        self, request: memory_pb2.DeleteVersionRequest, context: grpc.aio.ServicerContext,
    ) -> memory_pb2.DeleteVersionResponse:
        def work() -> memory_pb2.DeleteVersionResponse:
            return memory_pb2.DeleteVersionResponse(keys_deleted=self._store(request.name).delete_version(request.version))

        return await self._handle("DeleteVersion", context, lambda: self._in_pool(context, work), admin=True)

    def _check_reply(self, nbytes: int) -> None:
        if nbytes > self._cfg.max_message_bytes - 4096:
            raise _Reject(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"slot_ids: the reply would be {nbytes} bytes, over max_message_bytes={self._cfg.max_message_bytes}; read fewer slots",
            )


# ---- server lifecycle --------------------------------------------------------------------------
_SERVICERS: weakref.WeakKeyDictionary[Any, tuple[MemoryServiceServicer, Any]] = weakref.WeakKeyDictionary()


def create_server(cfg: MemoryServiceConfig, *, client: redis.Redis | RedisCluster | None = None) -> tuple[grpc.aio.Server, int]:
    """Builds (does not start) the server: MemoryService, health, reflection, metrics.

    Call it from a running event loop. Stop it with :func:`stop_server` (which also closes the
    Redis client, the worker threads and the metrics endpoint).

    Args:
        cfg: the configuration; ``cfg.port == 0`` binds a free port.
        client: a redis-py client to use instead of one built from ``cfg.redis_url``.

    Returns:
        ``(server, port)``: the bound port.

    Raises:
        ServiceUnavailableError: the port cannot be bound, or (Cluster) Redis is unreachable.
    """
    opts = [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=opts)
    servicer = MemoryServiceServicer(cfg, client=client)
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    except RuntimeError as e:
        servicer.close()
        raise ServiceUnavailableError(f"cannot bind the memory server to {cfg.host}:{cfg.port}: {e}") from e
    if cfg.metrics_port is not None:
        httpd, _thread = start_http_server(cfg.metrics_port, addr=cfg.host)
        servicer._metrics_http = httpd
        logger.info("memory service metrics on http://%s:%s/metrics", cfg.host, httpd.server_address[1])
    _SERVICERS[server] = (servicer, health_servicer)
    # SERVING for the server and the service; the task runs as soon as the loop does (kept
    # referenced on the servicer so it is not garbage-collected first).
    servicer._health_task = asyncio.get_running_loop().create_task(_set_serving(health_servicer))
    return server, port


async def _set_serving(health_servicer: Any) -> None:
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def stop_server(server: grpc.aio.Server, grace: float | None) -> None:
    """Graceful stop: health NOT_SERVING, in-flight calls get ``grace`` seconds, then cleanup."""
    servicer, health_servicer = _SERVICERS.pop(server, (None, None))
    if health_servicer is not None:
        await health_servicer.enter_graceful_shutdown()
    await server.stop(grace)
    if servicer is not None:
        servicer.close()


async def serve(cfg: MemoryServiceConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT, then stops it gracefully (``cfg.grace_s``).

    Args:
        cfg: the configuration.
        ready: called with the bound port once the server accepts calls.
    """
    server, port = create_server(cfg)
    await server.start()
    logger.info("memory service %s listening on %s:%d (block %r)", SERVICE_NAME, cfg.host, port, cfg.name)
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("memory service: stopping (grace %.1fs)", cfg.grace_s)
    await stop_server(server, cfg.grace_s)


class BackgroundServer:
    """A memory server on its own event-loop thread (tests, benchmarks, notebooks).

    Example:
        >>> srv = BackgroundServer(MemoryServiceConfig(redis_url=url, token="t")).start()  # doctest: +SKIP
        >>> MemoryClient(srv.address, token="t").info().version  # doctest: +SKIP
        'v1'
        >>> srv.stop()  # doctest: +SKIP
    """

    def __init__(self, cfg: MemoryServiceConfig) -> None:
        self.cfg = cfg
        self.port = 0
        self.metrics_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Starts the server; returns once it accepts calls."""
        self._thread = threading.Thread(target=self._run, name="memory-server", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        if not self.port:
            raise ServiceUnavailableError("the memory server did not start within 30 s")
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                server, port = create_server(self.cfg)
                await server.start()
            except BaseException as e:  # noqa: BLE001 (re-raised in start())
                self._error = e
                self._started.set()
                return
            self.port = port
            self.metrics_port = _SERVICERS[server][0].metrics_port
            self._started.set()
            await self._stop.wait()
            await stop_server(server, self.cfg.grace_s)

        asyncio.run(main())

    def stop(self) -> None:
        """Stops the server gracefully and joins its thread."""
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=self.cfg.grace_s + 10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
