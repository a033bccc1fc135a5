"""Python clients of the scoring server: :class:`RankingClient` (Score) and :class:`AdminClient`.

Every call carries a deadline (``timeout_s``); gRPC errors come back as :class:`ServingRpcError`
with the status code and the server's message.

Example:
    >>> with RankingClient("127.0.0.1:50051") as rc:                                  # doctest: +SKIP
    ...     r = rc.score(user_id=7, domain="feed", item_ids=[1, 2, 3])
    ...     r.version, r.heads["click"].shape
    ('2', (3,))
    >>> with AdminClient("127.0.0.1:50051", token="s3cret") as ac:                    # doctest: +SKIP
    ...     ac.push("repo/lmn/3", activate=True)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.seedrec.v1 import model_admin_pb2 as admin_pb
from protos.seedrec.v1 import model_admin_pb2_grpc as admin_grpc
from protos.seedrec.v1 import ranking_pb2 as pb
from protos.seedrec.v1 import ranking_pb2_grpc as pb_grpc
from seedrec.errors import PackageError, SeedrecError
from serving.package import MANIFEST_FILE, package_files, sha256_file

__all__ = ["ServingRpcError", "ScoreResult", "build_score_request", "RankingClient", "AdminClient"]

_CHUNK = 1 << 20
_HISTORY_SOURCE = {v: k.removeprefix("HISTORY_SOURCE_").lower() for k, v in pb.HistorySource.items()}


class ServingRpcError(SeedrecError):
    """A scoring-server call failed.

    Attributes:
        method: the RPC.
        code: the ``grpc.StatusCode``.
        details: the server's message.
    """

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method, self.code, self.details = method, code, details
        super().__init__(f"{method} failed: {code.name}: {details}")


@dataclass
class ScoreResult:
    """A decoded ScoreResponse: ``heads[name]`` is (C,) float32, aligned with the candidates."""

    model: str
    version: str
    arm: str
    heads: dict[str, np.ndarray]
    memory_fallback: bool
    history_source: str
    history_length: int
    request_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "arm": self.arm, "request_id": self.request_id,
                "memory_fallback": self.memory_fallback, "history_source": self.history_source,
                "history_length": self.history_length, "scores": {h: s.tolist() for h, s in self.heads.items()}}


def _value(v: Any) -> pb.FeatureValue:
    if isinstance(v, str):
        return pb.FeatureValue(string_value=v)
    if isinstance(v, (bool, int, np.integer)):
        return pb.FeatureValue(int_value=int(v))
    if isinstance(v, (float, np.floating)):
        return pb.FeatureValue(float_value=float(v))
    raise TypeError(f"feature value {v!r}: expected int, float or str")


def _column(values: Sequence[Any] | np.ndarray) -> pb.FeatureColumn:
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return pb.FeatureColumn(int_values=arr.astype(np.int64).tolist())
    if arr.dtype.kind == "f":
        return pb.FeatureColumn(float_values=arr.astype(np.float64).tolist())
    return pb.FeatureColumn(string_values=[str(v) for v in arr.tolist()])


def build_score_request(
    *,
    user_id: int,
    domain: str,
    item_ids: Sequence[int] | np.ndarray,
    model: str = "",
    version: str = "",
    features: Mapping[str, Any] | None = None,
    candidate_features: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    request_id: str = "",
) -> pb.ScoreRequest:
    """Builds a ScoreRequest from Python values.

    Args:
        user_id: raw user id.
        domain: domain name or index (as text).
        item_ids: the candidates' raw ids.
        model: model name (empty: the server's default).
        version: pin a version (empty: active / experiment arm).
        features: user/context features, e.g. ``{"device": "ios", "hour": 21}``.
        candidate_features: per-candidate columns, e.g. ``{"price": [...], "category_id": [...]}``.
        history: behaviours ``{"item_id", "action", "domain", "ts_ms"[, "category_id"]}``, oldest
            first; ``None`` lets the server read the online store (``[]`` means "no history").
        request_id: echoed back.
    """
    req = pb.ScoreRequest(model=model, version=version, user_id=int(user_id), domain=str(domain), request_id=request_id)
    req.candidates.item_ids.extend(np.asarray(item_ids, dtype=np.int64).tolist())
    for name, col in (candidate_features or {}).items():
        req.candidates.features[name].CopyFrom(_column(col))
    for name, v in (features or {}).items():
        req.features[name].CopyFrom(_value(v))
    if history is not None:
        req.history.SetInParent()  # present even when empty: "the user has no history"
        for b in history:
            msg = req.history.behaviours.add(item_id=int(b["item_id"]), action=str(b.get("action", "")),
                                             domain=str(b.get("domain", "")), ts_ms=int(b.get("ts_ms", 0)))
            if b.get("category_id") is not None:
                msg.category_id = int(b["category_id"])
    return req


def decode_response(resp: pb.ScoreResponse) -> ScoreResult:
    """ScoreResponse → :class:`ScoreResult`."""
    return ScoreResult(
        model=resp.model, version=resp.version, arm=resp.arm,
        heads={h.head: np.asarray(h.scores, dtype=np.float32) for h in resp.heads},
        memory_fallback=resp.memory_fallback, history_source=_HISTORY_SOURCE.get(resp.history_source, "unspecified"),
        history_length=resp.history_length, request_id=resp.request_id,
    )


class _Base:
    def __init__(self, address: str, *, timeout_s: float, max_message_bytes: int, token: str | None = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._md = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, fn: Any, request: Any, *, timeout: float | None = None) -> Any:
        try:
            return fn(request, timeout=timeout or self.timeout_s, metadata=self._md or None)
        except grpc.RpcError as e:
            raise ServingRpcError(method, e.code(), e.details() or "") from None

    def health(self, service: str = "") -> str:
        """The health status name of ``service`` (``""`` = the server), e.g. ``"SERVING"``."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        reply = self._call("Health.Check", stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class RankingClient(_Base):
    """Calls ``RankingService.Score``.

    Args:
        address: ``host:port``.
        timeout_s: the deadline of each call.
        max_message_bytes: the largest message sent or received.
    """

    def __init__(self, address: str, *, timeout_s: float = 5.0, max_message_bytes: int = 64 << 20) -> None:
        super().__init__(address, timeout_s=timeout_s, max_message_bytes=max_message_bytes)
        self._stub = pb_grpc.RankingServiceStub(self._channel)

    def score_request(self, request: pb.ScoreRequest, *, timeout: float | None = None) -> pb.ScoreResponse:
        """Sends a prebuilt request; returns the raw response."""
        return self._call("Score", self._stub.Score, request, timeout=timeout)

    def score(self, *, timeout: float | None = None, **kwargs: Any) -> ScoreResult:
        """Scores candidates; keyword arguments as :func:`build_score_request`."""
        return decode_response(self.score_request(build_score_request(**kwargs), timeout=timeout))


class AdminClient(_Base):
    """Calls ``ModelAdmin`` with ``authorization: Bearer <token>``.

    Args:
        address: ``host:port``.
        token: the server's admin token.
        timeout_s: the deadline of each call (pushes and loads: ``load_timeout_s``).
        load_timeout_s: the deadline of calls that load a model (push, activate, rollback, experiments).
    """

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 10.0, load_timeout_s: float = 600.0,
                 max_message_bytes: int = 64 << 20) -> None:
        super().__init__(address, timeout_s=timeout_s, max_message_bytes=max_message_bytes, token=token)
        self.load_timeout_s = load_timeout_s
        self._stub = admin_grpc.ModelAdminStub(self._channel)

    def push(self, package: str | Path, *, name: str | None = None, version: str | None = None, activate: bool = False,
             chunk_bytes: int = _CHUNK) -> admin_pb.PushReply:
        """Streams a package folder (header with every file's size and sha256, then chunks).

        Args:
            package: the package folder (``REPO/NAME/VERSION``).
            name: the model name; default: the manifest's.
            version: the version; default: the manifest's.
            activate: make it the active version once installed.
            chunk_bytes: bytes per chunk message.

        Raises:
            PackageError: the folder has no files, or name/version cannot be read from the manifest.
            ServingRpcError: the server refused the package (the file is named in the message).
        """
        root = Path(package)
        files = [*package_files(root), *([MANIFEST_FILE] if (root / MANIFEST_FILE).is_file() else [])]
        if not files:
            raise PackageError(f"{root}: no files to push")
        if name is None or version is None:
            try:
                manifest = json.loads((root / MANIFEST_FILE).read_text())
                name, version = name or str(manifest["name"]), version or str(manifest["version"])
            except (OSError, ValueError, KeyError) as e:
                raise PackageError(f"{root / MANIFEST_FILE}: cannot read name/version ({e}); pass them explicitly") from None
        header = admin_pb.PushHeader(name=name, version=version, activate=activate, files=[
            admin_pb.PackageFile(path=f, size=(root / f).stat().st_size, sha256=sha256_file(root / f)) for f in files
        ])

        def stream() -> Iterator[admin_pb.PushChunk]:
            yield admin_pb.PushChunk(header=header)
            for f in files:
                with open(root / f, "rb") as fh:
                    offset = 0
                    while data := fh.read(chunk_bytes):
                        yield admin_pb.PushChunk(chunk=admin_pb.FileChunk(path=f, offset=offset, data=data))
                        offset += len(data)

        return self._call("PushModel", self._stub.PushModel, stream(), timeout=self.load_timeout_s)

    def push_stream(self, messages: Iterator[admin_pb.PushChunk]) -> admin_pb.PushReply:
        """Sends a hand-made push stream (tests of corrupt transfers)."""
        return self._call("PushModel", self._stub.PushModel, messages, timeout=self.load_timeout_s)

    def activate(self, name: str, version: str) -> admin_pb.ModelStatus:
        return self._call("Activate", self._stub.Activate, admin_pb.ActivateRequest(name=name, version=version),
                          timeout=self.load_timeout_s)

    def rollback(self, name: str) -> admin_pb.ModelStatus:
        return self._call("Rollback", self._stub.Rollback, admin_pb.RollbackRequest(name=name), timeout=self.load_timeout_s)

    def list(self, name: str = "") -> list[admin_pb.ModelStatus]:
        return list(self._call("List", self._stub.List, admin_pb.ListRequest(name=name)).models)

    def set_experiment(self, model: str, arms: Sequence[tuple[str, str, float]], *, salt: str, name: str = "") -> admin_pb.ModelStatus:
        """Routes users of ``model`` to arms ``(arm name, version, share)``; ``arms=[]`` stops the experiment."""
        exp = admin_pb.Experiment(name=name, salt=salt, arms=[admin_pb.Arm(name=a, version=v, share=s) for a, v, s in arms])
        return self._call("SetExperiment", self._stub.SetExperiment,
                          admin_pb.SetExperimentRequest(model=model, experiment=exp), timeout=self.load_timeout_s)
