"""LMN memory reads at serving: the memory service first, a documented fallback when it is down.

An LMN model reads its product-key memory as ``r = Σ_k w_qk · V[i_qk]`` for the top-K slots
``i (Q, K)`` and softmax weights ``w (Q, K)`` it computes from its own keys and query. At load time
the scorer replaces the model's lookup of the value table with a :class:`MemoryBackend`
(``serving.scorer`` explains the hook), so the weighted sum is computed where the values live:

    RemoteMemory   ``MemoryService.ReadWeighted`` through the cached ``MemoryClient``, with a short
                   deadline and a circuit breaker; on failure (or while the breaker is open) it
                   answers from its fallback and marks the read as a fallback
    LocalMemory    the value table shipped in the package (``memory.safetensors``), in process:
                   exact, the default fallback and the backend when no memory service is configured
    ZeroMemory     a zero read-out: the fallback when the table is too large to hold locally

Whether any read of the current request fell back is recorded in a context variable that the
scorer resets before and reads after each forward (:func:`begin_request`, :func:`fell_back`), so
concurrent requests in other threads never see each other's flags.

Example:
    >>> import torch
    >>> local = LocalMemory(torch.eye(4))
    >>> local.read_weighted(torch.tensor([[0, 3]]), torch.tensor([[0.25, 0.75]]))
    tensor([[0.2500, 0.0000, 0.0000, 0.7500]])
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "MemoryBackend",
    "LocalMemory",
    "ZeroMemory",
    "RemoteMemory",
    "CircuitBreaker",
    "PinnedMemoryReader",
    "begin_request",
    "fell_back",
    "request_deadline",
]

logger = logging.getLogger(__name__)

_FALLBACK: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("seedrec_memory_fallback", default=None)
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("seedrec_request_deadline", default=None)


def begin_request(deadline: float | None = None) -> None:
    """Starts a request in this context: clears the fallback flag, sets the absolute deadline
    (``time.monotonic()`` seconds) memory calls must respect."""
    _FALLBACK.set([False])
    _DEADLINE.set(deadline)


def fell_back() -> bool:
    """Whether a memory read of the current request answered from the fallback."""
    flag = _FALLBACK.get()
    return bool(flag and flag[0])


def request_deadline() -> float | None:
    """The current request's absolute deadline, if any."""
    return _DEADLINE.get()


def _mark_fallback() -> None:
    flag = _FALLBACK.get()
    if flag is not None:
        flag[0] = True


class MemoryBackend(Protocol):
    """Computes weighted sums of value rows."""

    dim: int

    def read_weighted(self, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``slots`` (Q, K) int64, ``weights`` (Q, K) float → (Q, d_v) float32."""
        ...


class LocalMemory:
    """The value table in process.

    Args:
        values: (M, d_v) the value table.
    """

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values.detach().to(torch.float32).contiguous()
        self.dim = int(values.shape[1])

    def read_weighted(self, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        Q, K = slots.shape
        rows = self.values[slots.reshape(-1)].view(Q, K, self.dim)  # (Q, K, d_v)
        return (rows * weights.to(rows.dtype)[:, :, None]).sum(dim=1)  # (Q, d_v)


class ZeroMemory:
    """A zero read-out of width ``dim``."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    def read_weighted(self, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return torch.zeros(slots.shape[0], self.dim, dtype=torch.float32)


class CircuitBreaker:
    """Closed → (``failures`` consecutive errors) → open for ``reset_s`` → one trial call (half-open).

    A success closes it; a failed trial opens it again. Thread-safe.

    Example:
        >>> b = CircuitBreaker(failures=2, reset_s=60.0)
        >>> b.allow(); b.record(False); b.allow(); b.record(False); b.allow()
        True
        True
        False
    """

    def __init__(self, *, failures: int, reset_s: float) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._lock = threading.Lock()
        self._errors = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether the next call may go to the service."""
        with self._lock:
            if self._opened_at is None:
                return True
            if not self._trial and time.monotonic() - self._opened_at >= self.reset_s:
                self._trial = True  # exactly one caller probes the service
                return True
            return False

    def record(self, ok: bool) -> None:
        """Reports the outcome of an allowed call."""
        with self._lock:
            if ok:
                if self._opened_at is not None:
                    logger.info("memory service answered again: circuit breaker closed")
                self._errors, self._opened_at, self._trial = 0, None, False
                return
            self._errors += 1
            if self._trial or (self._opened_at is None and self._errors >= self.failures):
                if self._opened_at is None:
                    logger.warning("memory service failed %d times: circuit breaker open for %.1fs", self._errors, self.reset_s)
                self._opened_at, self._trial = time.monotonic(), False


class RemoteMemory:
    """Reads through ``MemoryService.ReadWeighted``; falls back on any error, deadline or open breaker.

    Args:
        client: an object with ``read_weighted(slots, weights, *, timeout) -> (Q, d) array``
            (``memory_service.client.MemoryClient``), already pointed at the right memory version.
        fallback: answers while the service is down.
        breaker: the circuit breaker shared by every model reading this service.
        deadline_s: the longest one call may take (shortened to the request's deadline).
    """

    def __init__(
        self,
        client: Any,
        *,
        fallback: MemoryBackend,
        breaker: CircuitBreaker,
        deadline_s: float,
    ) -> None:
        self.client = client
        self.fallback = fallback
        self.breaker = breaker
        self.deadline_s = deadline_s
        self.dim = fallback.dim

    def read_weighted(self, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        timeout = self.deadline_s
        deadline = request_deadline()
        if deadline is not None:
            timeout = min(timeout, max(deadline - time.monotonic(), 0.0))
        if timeout > 0.0 and self.breaker.allow():
            try:
                out = self.client.read_weighted(
                    slots.detach().cpu().numpy().astype(np.int64, copy=False),
                    weights.detach().cpu().numpy().astype(np.float32, copy=False),
                    timeout=timeout,
                )
                self.breaker.record(True)
                return torch.as_tensor(np.asarray(out, dtype=np.float32))
            except Exception as e:  # noqa: BLE001  any client failure (gRPC, Redis behind it, shape) → fallback
                self.breaker.record(False)
                logger.debug("memory read failed (%s: %s); answering from the fallback", type(e).__name__, e)
        _mark_fallback()
        return self.fallback.read_weighted(slots, weights)


class PinnedMemoryReader:
    """``MemoryClient`` reads pinned to the memory-service version that holds a package's table.

    The version is the committed one whose block sha256 equals ``manifest.memory.sha256`` (so a
    model never reads another model's memory); it is looked up on first use and again after a
    ``NOT_FOUND`` (the version was deleted) or a failed lookup (not loaded yet).

    Args:
        client: a ``memory_service.client.MemoryClient`` (shared by every model of the server:
            its row cache is keyed by version).
        sha256: the block checksum to find.
    """

    def __init__(self, client: Any, *, sha256: str) -> None:
        self._client = client
        self._sha = sha256
        self._version: str | None = None

    def _resolve(self) -> str:
        for v in self._client.list_versions():
            if v.sha256 == self._sha and v.state == "committed":
                self._version = v.version
                logger.info("memory reads pinned to memory-service version %s (sha256 %s…)", v.version, self._sha[:12])
                return v.version
        raise LookupError(f"no committed memory-service version holds block sha256 {self._sha[:12]}… "
                          "(load it with `seedrec memory load`)")

    def read_weighted(self, slots: np.ndarray, weights: np.ndarray, *, timeout: float) -> np.ndarray:
        """(Q, K) slots and weights → (Q, d) sums; the client's own deadline bounds the call."""
        version = self._version or self._resolve()
        try:
            return np.asarray(self._client.read_weighted(slots, weights, version=version))
        except Exception as e:
            if getattr(e, "code", None) is not None and getattr(e.code, "name", "") == "NOT_FOUND":
                self._version = None  # deleted: look it up again next time
            raise
