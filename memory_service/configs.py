"""Configuration of the memory service (dataclasses only: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from memory_service.layout import DEFAULT_GROUP_ROWS, validate_name
from seedrec.errors import ConfigError

__all__ = ["MemoryServiceConfig"]


@dataclass(frozen=True, kw_only=True)
class MemoryServiceConfig:
    """How to run one memory server.

    Attributes:
        redis_url: ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS); passed to redis-py's
            ``from_url``. Required (the CLI resolves the embedded default before building this).
        cluster: the URL names a node of a Redis Cluster (use ``RedisCluster``).
        name: the default memory block, used when a request leaves ``name`` empty.
        host: address to bind the gRPC server to.
        port: gRPC port; 0 picks a free one (the bound port is returned by ``create_server``).
        token: the admin token (``authorization: Bearer <token>``); None disables admin calls.
        metrics_port: serve Prometheus metrics on this HTTP port (0: a free one); None: not served.
        workers: threads running Redis calls; also bounds concurrent Redis connections.
        max_batch_slots: the most slot ids one Read / ReadWeighted / ApplyDelta may carry.
        max_message_bytes: the largest gRPC message accepted or sent.
        group_rows: slots per row group (hash tag) for new versions.
        redis_socket_timeout_s: per-command socket timeout; a hung Redis fails within it.
        redis_connect_timeout_s: connect timeout; a down Redis fails within it.
        grace_s: on SIGTERM, in-flight calls get this long to finish.
        keep_versions: after a commit, delete committed non-current versions beyond this many
            newest ones (0: never delete automatically).
        retire_grace_s: a version is auto-deleted only this long after it stopped being current,
            so readers that resolved it can finish (and clients that pinned it can refresh).
    """

    redis_url: str
    cluster: bool = False
    name: str = "lmn"
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    metrics_port: int | None = None
    workers: int = 8
    max_batch_slots: int = 65_536
    max_message_bytes: int = 64 << 20
    group_rows: int = DEFAULT_GROUP_ROWS
    redis_socket_timeout_s: float = 2.0
    redis_connect_timeout_s: float = 1.0
    grace_s: float = 5.0
    keep_versions: int = 0
    retire_grace_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.redis_url or not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"`redis_url` must be a redis://, rediss:// or unix:// URL, got {self.redis_url!r}; "
                "pass --redis URL or set REDIS_URL (or leave both unset for the embedded default)"
            )
        try:
            validate_name(self.name)
        except ValueError as e:
            raise ConfigError(f"`name`: {e}") from None
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"`port` must be in [0, 65535], got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"`metrics_port` must be in [0, 65535] or None, got {self.metrics_port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("`token` must be non-empty (or None to disable admin calls)")
        for field_name in ("workers", "max_batch_slots", "group_rows"):
            if getattr(self, field_name) < 1:
                raise ConfigError(f"`{field_name}` must be >= 1, got {getattr(self, field_name)}")
        if self.max_message_bytes < 1 << 20:
            raise ConfigError(f"`max_message_bytes` must be >= 1 MiB, got {self.max_message_bytes}")
        for field_name in ("redis_socket_timeout_s", "redis_connect_timeout_s"):
            if not getattr(self, field_name) > 0:
                raise ConfigError(f"`{field_name}` must be > 0, got {getattr(self, field_name)}")
        for field_name in ("grace_s", "retire_grace_s"):
            if getattr(self, field_name) < 0:
                raise ConfigError(f"`{field_name}` must be >= 0, got {getattr(self, field_name)}")
        if self.keep_versions < 0:
            raise ConfigError(f"`keep_versions` must be >= 0 (0 keeps every version), got {self.keep_versions}")
        if self.cluster and self.redis_url.startswith("unix://"):
            raise ConfigError("`cluster` needs a redis:// or rediss:// node URL, not a unix socket")
