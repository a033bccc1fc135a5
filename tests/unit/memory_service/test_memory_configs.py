"""MemoryServiceConfig validation: each bad field raises ConfigError naming it."""

from __future__ import annotations

import dataclasses

import pytest

from memory_service.configs import MemoryServiceConfig
from seedrec.errors import ConfigError

URL = "redis://127.0.0.1:6379/0"


def test_defaults_are_valid_and_frozen() -> None:
    cfg = MemoryServiceConfig(redis_url=URL)
    assert (cfg.name, cfg.port, cfg.token, cfg.cluster) == ("lmn", 0, None, False)
    assert MemoryServiceConfig(redis_url="rediss://:pw@host:6380/0", cluster=True).cluster
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", "http://x"),
        ("redis_url", ""),
        ("name", "a:b"),
        ("port", 70000),
        ("metrics_port", -1),
        ("token", "  "),
        ("workers", 0),
        ("max_batch_slots", 0),
        ("group_rows", 0),
        ("max_message_bytes", 1000),
        ("redis_socket_timeout_s", 0.0),
        ("redis_connect_timeout_s", -1.0),
        ("grace_s", -1.0),
        ("retire_grace_s", -1.0),
        ("keep_versions", -1),
    ],
)
def test_bad_field_is_named(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"redis_url": URL, field: value}
    with pytest.raises(ConfigError, match=f"`{field}`"):
        MemoryServiceConfig(**kwargs)  # type: ignore[arg-type]


def test_cluster_needs_a_tcp_url() -> None:
    with pytest.raises(ConfigError, match="`cluster`"):
        MemoryServiceConfig(redis_url="unix:///tmp/redis.sock", cluster=True)
