"""The scoring server: ``RankingService`` and ``ModelAdmin`` over gRPC (asyncio), plus health,
reflection and Prometheus metrics.

::

    seedrec serve --repository REPO --port 50051 [--memory HOST:PORT] [--redis URL] [--token T]

Threads: the event loop only parses, routes and answers; transforms and forwards run on a pool of
``score_threads`` threads, model loads on one admin thread (a load never delays scoring). Health
is NOT_SERVING until the start-up models are loaded, SERVING while at least one model serves, and
NOT_SERVING again on shutdown (SIGTERM / SIGINT → ``stop(grace)``: in-flight calls finish).

Status codes (``shared/design/STYLE.md`` rule 13): INVALID_ARGUMENT names the field of a malformed
request or the file of a corrupt package; NOT_FOUND an unknown model or version; ALREADY_EXISTS a
pushed version that exists; FAILED_PRECONDITION a package that cannot load, or a rollback with
nothing to return to; UNAUTHENTICATED / PERMISSION_DENIED admin calls without / with a wrong
token; DEADLINE_EXCEEDED past the caller's deadline; INTERNAL only for bugs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.seedrec.v1 import model_admin_pb2 as admin_pb
from protos.seedrec.v1 import model_admin_pb2_grpc as admin_grpc
from protos.seedrec.v1 import ranking_pb2 as pb
from protos.seedrec.v1 import ranking_pb2_grpc as pb_grpc
from seedrec.errors import ConfigError, PackageError, SeedrecError, ServiceUnavailableError
from serving import wire
from serving.configs import MemoryFallback, ServerConfig, check_name
from serving.errors import AlreadyExistsError, InvalidRequestError, LoadError, NotFoundError, StateError
from serving.feature_store import FeatureStore
from serving.manager import ModelManager
from serving.memory import (
    CircuitBreaker,
    LocalMemory,
    MemoryBackend,
    PinnedMemoryReader,
    RemoteMemory,
    ZeroMemory,
)
from serving.metrics import ServingMetrics
from serving.package import ALLOWED_SUFFIXES, Manifest
from serving.repository import ModelRepository
from serving.scorer import LoadedModel, ModelFactory

__all__ = ["RankingServicer", "ModelAdminServicer", "ScoringServer", "create_server", "serve", "BackgroundServer"]

logger = logging.getLogger(__name__)

RANKING_SERVICE = pb.DESCRIPTOR.services_by_name["RankingService"].full_name
ADMIN_SERVICE = admin_pb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_PACKAGE_BYTES = 64 << 30


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message an error is answered with."""
    if isinstance(e, (InvalidRequestError, PackageError, ConfigError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(e)
    if isinstance(e, AlreadyExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, str(e)
    if isinstance(e, (LoadError, StateError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, ServiceUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(e)
    if isinstance(e, SeedrecError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(e).__name__}); see the server log"


# ==== RankingService ===========================================================================
class RankingServicer(pb_grpc.RankingServiceServicer):
    """``RankingService.Score``: routes the request, scores it on the score pool, answers."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        executor: ThreadPoolExecutor,
        metrics: ServingMetrics,
        store: FeatureStore | None = None,
    ) -> None:
        self._manager = manager
        self._executor = executor
        self._metrics = metrics
        self._store = store

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        t0 = time.perf_counter()
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self._metrics.errors.labels(method="Score", code="DEADLINE_EXCEEDED").inc()
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before scoring started")
        model_name, version, arm = request.model or "-", "", ""
        try:
            inputs = wire.request_to_inputs(request, deadline=wire.deadline_of(remaining))
            loaded, arm = self._manager.route(request.model, request.version, request.user_id)
            model_name, version = loaded.name, loaded.version
            loop = asyncio.get_running_loop()
            out = await loop.run_in_executor(self._executor, _score, loaded, inputs, self._store)
        except Exception as e:  # noqa: BLE001  mapped to a status below; never crash the server
            code, msg = status_of(e)
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("Score failed (request %s)", request.request_id)
            self._metrics.errors.labels(method="Score", code=code.name).inc()
            self._metrics.requests.labels(model=model_name, version=version, arm=arm, code=code.name).inc()
            await context.abort(code, msg)
        resp = wire.outputs_to_response(out, model=loaded.name, version=loaded.version, arm=arm, request_id=request.request_id)
        m = self._metrics
        m.requests.labels(model=loaded.name, version=loaded.version, arm=arm, code="OK").inc()
        m.candidates.labels(model=loaded.name, version=loaded.version).inc(len(inputs.item_ids))
        m.history_reads.labels(source=out.history_source.value).inc()
        if out.memory_fallback:
            m.memory_fallbacks.labels(model=loaded.name).inc()
        m.latency.labels(model=loaded.name).observe(time.perf_counter() - t0)
        return resp


def _score(loaded: LoadedModel, inputs: Any, store: FeatureStore | None) -> Any:
    return loaded.score(inputs, store=store)


# ==== ModelAdmin ===============================================================================
class _Upload:
    """One file of a push being received: ordered chunks, running sha256."""

    def __init__(self, path: Path, size: int, sha256: str) -> None:
        self.path, self.size, self.sha256 = path, size, sha256
        self.received = 0
        self.hash = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "wb")  # noqa: SIM115  closed in finish() / on failure

    def write(self, offset: int, data: bytes, rel: str) -> None:
        if offset != self.received:
            raise InvalidRequestError("chunk.offset", f"{rel}: chunk at offset {offset}, expected {self.received} (send chunks in order)")
        if self.received + len(data) > self.size:
            raise InvalidRequestError("chunk.data", f"{rel}: more bytes than the {self.size} announced")
        self.file.write(data)
        self.hash.update(data)
        self.received += len(data)

    def finish(self, rel: str) -> None:
        self.file.close()
        if self.received != self.size:
            raise InvalidRequestError("files", f"{rel}: incomplete, received {self.received} of {self.size} bytes")
        got = self.hash.hexdigest()
        if got != self.sha256:
            raise InvalidRequestError("files", f"{rel}: sha256 mismatch (announced {self.sha256[:12]}…, received {got[:12]}…)")


class ModelAdminServicer(admin_grpc.ModelAdminServicer):
    """``ModelAdmin``: push, activate, roll back, list, experiments; every call needs the token."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        loader: Any,
        executor: ThreadPoolExecutor,
        metrics: ServingMetrics,
        token: str | None,
        on_change: Any = None,
    ) -> None:
        self._manager = manager
        self._load = loader
        self._executor = executor
        self._metrics = metrics
        self._token = token
        self._on_change = on_change

    async def _authorize(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if self._token is None:
            return
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        value = md.get("authorization")
        if not value:
            self._metrics.errors.labels(method=method, code="UNAUTHENTICATED").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin calls need `authorization: Bearer <token>` metadata")
        scheme, _, given = str(value).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            self._metrics.errors.labels(method=method, code="PERMISSION_DENIED").inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the admin token is wrong")

    async def _run(self, context: grpc.aio.ServicerContext, method: str, fn: Any, *args: Any) -> Any:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except Exception as e:  # noqa: BLE001  mapped to a status
            code, msg = status_of(e)
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("%s failed", method)
            self._metrics.errors.labels(method=method, code=code.name).inc()
            await context.abort(code, msg)
        if self._on_change is not None:
            await self._on_change()
        return result

    async def PushModel(self, request_iterator: AsyncIterator[admin_pb.PushChunk], context: grpc.aio.ServicerContext) -> admin_pb.PushReply:
        await self._authorize(context, "PushModel")
        repo = self._manager.repository
        staged = repo.staging_dir()
        uploads: dict[str, _Upload] = {}
        try:
            try:
                header, total = await self._receive(request_iterator, staged, uploads)
            except Exception as e:  # noqa: BLE001  mapped to a status
                code, msg = status_of(e)
                self._metrics.errors.labels(method="PushModel", code=code.name).inc()
                await context.abort(code, msg)
            status = await self._run(context, "PushModel", self._install, staged, header)
            return admin_pb.PushReply(name=header.name, version=header.version, bytes=total, activated=status is not None)
        finally:
            for u in uploads.values():
                u.file.close()
            repo.discard(staged)  # a no-op after a successful install (the folder was renamed)

    async def _receive(self, it: AsyncIterator[admin_pb.PushChunk], staged: Path, uploads: dict[str, _Upload]) -> tuple[admin_pb.PushHeader, int]:
        header: admin_pb.PushHeader | None = None
        total = 0
        async for msg in it:
            part = msg.WhichOneof("part")
            if part == "header":
                if header is not None:
                    raise InvalidRequestError("header", "sent twice; send it once, first")
                header = msg.header
                self._check_header(header)
                for f in header.files:
                    uploads[f.path] = _Upload(staged / f.path, f.size, f.sha256)
            elif part == "chunk":
                if header is None:
                    raise InvalidRequestError("header", "missing; the first message of a push is its header")
                up = uploads.get(msg.chunk.path)
                if up is None:
                    raise InvalidRequestError("chunk.path", f"{msg.chunk.path!r} is not among the announced files")
                await asyncio.to_thread(up.write, msg.chunk.offset, msg.chunk.data, msg.chunk.path)
                total += len(msg.chunk.data)
            else:
                raise InvalidRequestError("part", "empty message; set `header` or `chunk`")
        if header is None:
            raise InvalidRequestError("header", "missing; the stream was empty")
        for rel, up in uploads.items():
            up.finish(rel)
        return header, total

    def _check_header(self, h: admin_pb.PushHeader) -> None:
        try:
            check_name("name", h.name)
            check_name("version", h.version)
        except ConfigError as e:
            raise InvalidRequestError("header", str(e)) from None
        if not h.files:
            raise InvalidRequestError("header.files", "is empty; a package has a manifest and its files")
        if h.version in self._manager.repository.versions(h.name):
            raise AlreadyExistsError(f"model {h.name!r} version {h.version!r} is already installed; push a new version")
        seen: set[str] = set()
        total = 0
        for f in h.files:
            p = Path(f.path)
            if not f.path or p.is_absolute() or ".." in p.parts or f.path in seen:
                raise InvalidRequestError("header.files", f"bad or duplicate path {f.path!r}")
            if not f.path.endswith(ALLOWED_SUFFIXES):
                raise InvalidRequestError("header.files", f"{f.path}: only {list(ALLOWED_SUFFIXES)} files may be pushed (no pickle)")
            if f.size < 0 or not _SHA_RE.match(f.sha256):
                raise InvalidRequestError("header.files", f"{f.path}: size {f.size} / sha256 {f.sha256!r} invalid (hex, 64 chars)")
            seen.add(f.path)
            total += f.size
        if total > _MAX_PACKAGE_BYTES:
            raise InvalidRequestError("header.files", f"{total} bytes announced; the limit is {_MAX_PACKAGE_BYTES}")

    def _install(self, staged: Path, header: admin_pb.PushHeader) -> Any:
        """(admin thread) verify + load + warm up the staged package, rename it in, maybe activate."""
        loaded = self._load(staged, header.name, header.version)  # verifies every sha256 against the manifest
        dest, _ = self._manager.repository.install(staged, name=header.name, version=header.version)
        loaded.path = dest
        return self._manager.adopt(loaded, activate=header.activate)

    async def Activate(self, request: admin_pb.ActivateRequest, context: grpc.aio.ServicerContext) -> admin_pb.ModelStatus:
        await self._authorize(context, "Activate")
        status = await self._run(context, "Activate", self._manager.activate, request.name, request.version)
        return wire.status_to_proto(status)

    async def Rollback(self, request: admin_pb.RollbackRequest, context: grpc.aio.ServicerContext) -> admin_pb.ModelStatus:
        await self._authorize(context, "Rollback")
        status = await self._run(context, "Rollback", self._manager.rollback, request.name)
        return wire.status_to_proto(status)

    async def List(self, request: admin_pb.ListRequest, context: grpc.aio.ServicerContext) -> admin_pb.ListReply:
        await self._authorize(context, "List")
        try:
            statuses = self._manager.status(request.name or None)
        except Exception as e:  # noqa: BLE001  mapped to a status
            code, msg = status_of(e)
            await context.abort(code, msg)
        return admin_pb.ListReply(models=[wire.status_to_proto(s) for s in statuses])

    async def SetExperiment(self, request: admin_pb.SetExperimentRequest, context: grpc.aio.ServicerContext) -> admin_pb.ModelStatus:
        await self._authorize(context, "SetExperiment")
        try:
            experiment = wire.experiment_from_proto(request.experiment)
        except InvalidRequestError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        status = await self._run(context, "SetExperiment", self._manager.set_experiment, request.model, experiment)
        return wire.status_to_proto(status)


# ==== assembling a server =======================================================================
def _memory_factory(cfg: ServerConfig) -> Any:
    """(manifest, packaged values) → the memory backend of an LMN model, per the config.

    Without a memory service the packaged table is the memory (reads are local, not a fallback).
    With one, reads go to the service through one shared, cached ``MemoryClient`` pinned to the
    version holding the package's table, and fall back (flagged) to the packaged table or to zero.
    """
    mc = cfg.memory
    state: dict[str, Any] = {}

    def make(manifest: Manifest, values: torch.Tensor | None) -> MemoryBackend:
        assert values is not None  # LoadedModel.load reads memory.safetensors before calling this
        local = LocalMemory(values)
        if mc is None or mc.address is None or manifest.memory is None:
            return local
        if "client" not in state:
            from memory_service.client import MemoryClient

            state["client"] = MemoryClient(mc.address, token=mc.token, name=mc.block, cache_rows=mc.cache_rows,
                                           timeout_s=mc.deadline_ms / 1000.0)
            state["breaker"] = CircuitBreaker(failures=mc.breaker_failures, reset_s=mc.breaker_reset_s)
        fallback: MemoryBackend = local if mc.fallback is MemoryFallback.LOCAL else ZeroMemory(local.dim)
        reader = PinnedMemoryReader(state["client"], sha256=manifest.memory.sha256)
        return RemoteMemory(reader, fallback=fallback, breaker=state["breaker"], deadline_s=mc.deadline_ms / 1000.0)

    return make


class ScoringServer:
    """A configured, not yet started scoring server (see :func:`create_server`)."""

    def __init__(self, cfg: ServerConfig, *, factory: ModelFactory | None = None) -> None:
        torch.set_num_threads(cfg.torch_threads)  # many small forwards on few cores: 1 thread each
        self.cfg = cfg
        self.metrics = ServingMetrics()
        self.repository = ModelRepository(cfg.repository)
        memory = _memory_factory(cfg)

        def load(path: Path, name: str, version: str) -> LoadedModel:
            return LoadedModel.load(path, config=cfg.scorer, factory=factory, memory=memory,
                                    expect_name=name, expect_version=version)

        self.manager = ModelManager(self.repository, load=load, default_model=cfg.default_model,
                                    keep_versions=cfg.keep_versions, metrics=self.metrics)
        self.score_pool = ThreadPoolExecutor(cfg.score_threads, thread_name_prefix="score")
        self.admin_pool = ThreadPoolExecutor(1, thread_name_prefix="admin")
        store = None
        if cfg.store.redis_url:
            store = FeatureStore(cfg.store)
        self.health = health.aio.HealthServicer()
        opts = [("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", cfg.max_message_bytes)]
        self.server = grpc.aio.server(options=opts)
        pb_grpc.add_RankingServiceServicer_to_server(
            RankingServicer(self.manager, executor=self.score_pool, metrics=self.metrics, store=store), self.server)
        admin_grpc.add_ModelAdminServicer_to_server(
            ModelAdminServicer(self.manager, loader=load, executor=self.admin_pool, metrics=self.metrics,
                               token=cfg.admin_token, on_change=self.update_health), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (RANKING_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        if self.port == 0:
            raise ConfigError(f"cannot bind {cfg.host}:{cfg.port}")
        self.metrics_port: int | None = None

    async def update_health(self) -> None:
        """SERVING while at least one model serves, else NOT_SERVING."""
        serving = health_pb2.HealthCheckResponse.SERVING if self.manager.table.models else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", serving)
        await self.health.set(RANKING_SERVICE, serving)
        await self.health.set(ADMIN_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    async def start(self) -> None:
        """Starts listening (health NOT_SERVING), loads the start-up models, then reports SERVING."""
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(RANKING_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.cfg.metrics_port, self.cfg.host)
        models = list(self.cfg.models) if self.cfg.models is not None else None
        await asyncio.get_running_loop().run_in_executor(self.admin_pool, self.manager.start, models)
        await self.update_health()
        logger.info("scoring server on %s:%s (models %s, metrics port %s)", self.cfg.host, self.port,
                    sorted(self.manager.table.models), self.metrics_port)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, stop accepting, let in-flight calls finish for ``grace`` s."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.cfg.grace_s if grace is None else grace)
        self.metrics.stop_http()
        self.score_pool.shutdown(wait=False, cancel_futures=True)
        self.admin_pool.shutdown(wait=False, cancel_futures=True)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def create_server(cfg: ServerConfig, *, factory: ModelFactory | None = None) -> tuple[ScoringServer, int]:
    """Builds a server with health, reflection and metrics registered; returns it and its port.

    Call inside the event loop that will run it; then ``await server.start()``.
    """
    server = ScoringServer(cfg, factory=factory)
    return server, server.port


async def serve(cfg: ServerConfig, *, factory: ModelFactory | None = None) -> None:
    """Runs a server until SIGTERM / SIGINT, then stops it gracefully (``grace_s``)."""
    server, port = create_server(cfg, factory=factory)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down (grace %.1fs)", cfg.grace_s)
    await server.stop()


class BackgroundServer:
    """A server on its own event loop thread: for tests, benchmarks and notebooks.

    Example:
        >>> with BackgroundServer(ServerConfig(repository="/tmp/repo")) as srv:   # doctest: +SKIP
        ...     RankingClient(f"127.0.0.1:{srv.port}").score(...)
    """

    def __init__(self, cfg: ServerConfig, *, factory: ModelFactory | None = None) -> None:
        self.cfg = cfg
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="serving-loop", daemon=True)
        self.server: ScoringServer | None = None
        self.port = 0

    def start(self) -> BackgroundServer:
        self._thread.start()

        async def boot() -> ScoringServer:
            server, _ = create_server(self.cfg, factory=self._factory)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout=300)
        self.port = self.server.port
        return self

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result(timeout=60)
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
