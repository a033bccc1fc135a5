"""Memory backends and the circuit breaker."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from serving import memory as mem


def test_local_read_is_the_weighted_sum() -> None:
    values = torch.randn(16, 4)
    slots, w = torch.tensor([[1, 5, 9], [0, 0, 2]]), torch.rand(2, 3)
    expect = torch.einsum("qk,qkd->qd", w, values[slots])
    torch.testing.assert_close(mem.LocalMemory(values).read_weighted(slots, w), expect)


def test_breaker_opens_probes_once_and_closes() -> None:
    b = mem.CircuitBreaker(failures=2, reset_s=0.05)
    b.record(False)
    assert b.allow() and not b.is_open
    b.record(False)
    assert b.is_open and not b.allow()
    time.sleep(0.06)
    assert b.allow() and not b.allow()  # exactly one trial
    b.record(False)
    assert not b.allow()  # the failed trial re-opens it
    time.sleep(0.06)
    assert b.allow()
    b.record(True)
    assert not b.is_open and b.allow()


class _Client:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.timeouts = delay, []

    def read_weighted(self, slots: np.ndarray, weights: np.ndarray, *, timeout: float) -> np.ndarray:
        self.timeouts.append(timeout)
        return np.ones((slots.shape[0], 4), np.float32)


def test_remote_read_respects_the_request_deadline() -> None:
    client = _Client()
    remote = mem.RemoteMemory(client, fallback=mem.ZeroMemory(4), breaker=mem.CircuitBreaker(failures=1, reset_s=1), deadline_s=0.5)
    slots, w = torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)
    mem.begin_request(time.monotonic() + 0.1)
    assert remote.read_weighted(slots, w).sum() == 12 and not mem.fell_back()
    assert client.timeouts[-1] <= 0.1
    mem.begin_request(time.monotonic() - 1.0)  # already past the deadline: no call, fallback
    assert remote.read_weighted(slots, w).sum() == 0 and mem.fell_back()
    assert len(client.timeouts) == 1


def test_pinned_reader_finds_the_version_by_checksum() -> None:
    class Info:
        def __init__(self, version: str, sha: str, state: str = "committed") -> None:
            self.version, self.sha256, self.state = version, sha, state

    class Client:
        def __init__(self) -> None:
            self.read_versions: list[str | None] = []

        def list_versions(self) -> list[Info]:
            return [Info("a", "x" * 64), Info("b", "y" * 64, "loading"), Info("c", "y" * 64)]

        def read_weighted(self, slots: np.ndarray, weights: np.ndarray, *, version: str | None = None) -> np.ndarray:
            self.read_versions.append(version)
            return np.zeros((len(slots), 2), np.float32)

    client = Client()
    reader = mem.PinnedMemoryReader(client, sha256="y" * 64)
    reader.read_weighted(np.zeros((1, 1), np.int64), np.ones((1, 1), np.float32), timeout=1.0)
    assert client.read_versions == ["c"]
    with pytest.raises(LookupError, match="seedrec memory load"):
        mem.PinnedMemoryReader(client, sha256="z" * 64).read_weighted(np.zeros((1, 1), np.int64), np.ones((1, 1)), timeout=1.0)
