"""Configuration of the scoring server (dataclasses and enums only: no I/O, no behaviour).

Each config is ``@dataclass(frozen=True, kw_only=True)`` and validates itself in
``__post_init__``, raising :class:`~seedrec.errors.ConfigError` that names the field in
backticks, the bad value and the fix.

Example:
    >>> cfg = ServerConfig(repository="/tmp/repo", port=0)
    >>> cfg.scorer.max_candidates, cfg.memory is None
    (100000, True)
    >>> Experiment(salt="s", arms=(Arm(name="a", version="1", share=0.5),))
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: `arms` shares sum to 0.5; they must sum to 1 (e.g. 0.5 + 0.5)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum, unique

from seedrec.errors import ConfigError

__all__ = [
    "NAME_PATTERN",
    "MemoryFallback",
    "MemoryConfig",
    "ScorerConfig",
    "StoreConfig",
    "ServerConfig",
    "Arm",
    "Experiment",
]

#: Model names, versions and arm names: letters, digits, ``.``, ``_``, ``-`` (no path separators).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(field_name: str, value: str) -> None:
    """Raises ConfigError unless ``value`` is a safe model name / version / arm name."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ConfigError(
            f"`{field_name}` = {value!r}; use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


@unique
class MemoryFallback(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """What an LMN read returns while the memory service is unreachable."""

    LOCAL = "local"  # the value table shipped in the package (memory.safetensors): exact scores
    ZERO = "zero"  # a zero read-out: no memory contribution


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """How the server reaches the LMN memory service.

    Attributes:
        address: ``host:port`` of the memory service; ``None`` = read the packaged table locally.
        block: the memory block name on the service; empty = the service's default block.
        token: its bearer token, if it needs one.
        deadline_ms: the deadline of one ReadWeighted call; past it the fallback answers.
        breaker_failures: consecutive failures that open the circuit breaker.
        breaker_reset_s: how long an open breaker skips the service before one trial call.
        fallback: what answers while the service is down (see :class:`MemoryFallback`).
        cache_rows: the client-side cache size handed to the memory client (0 = no cache).
    """

    address: str | None = None
    block: str = ""
    token: str | None = None
    deadline_ms: float = 50.0
    breaker_failures: int = 3
    breaker_reset_s: float = 2.0
    fallback: MemoryFallback = MemoryFallback.LOCAL
    cache_rows: int = 100_000

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ConfigError(f"`deadline_ms` = {self.deadline_ms}; must be > 0, e.g. 50")
        if self.breaker_failures < 1:
            raise ConfigError(f"`breaker_failures` = {self.breaker_failures}; must be ≥ 1, e.g. 3")
        if not self.breaker_reset_s > 0:
            raise ConfigError(f"`breaker_reset_s` = {self.breaker_reset_s}; must be > 0, e.g. 2")
        if not isinstance(self.fallback, MemoryFallback):
            raise ConfigError(f"`fallback` = {self.fallback!r}; use one of {[f.value for f in MemoryFallback]}")
        if self.cache_rows < 0:
            raise ConfigError(f"`cache_rows` = {self.cache_rows}; must be ≥ 0 (0 = no cache)")


@dataclass(frozen=True, kw_only=True)
class ScorerConfig:
    """Request limits and warm-up of every loaded model.

    Attributes:
        max_candidates: candidates per request; more is RESOURCE_EXHAUSTED.
        max_history: behaviours per request history; more is INVALID_ARGUMENT.
        warmup_requests: synthetic Score calls a model must answer before it is swapped in.
        warmup_candidates: candidates per warm-up call.
    """

    max_candidates: int = 100_000
    max_history: int = 10_000
    warmup_requests: int = 3
    warmup_candidates: int = 16

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ConfigError(f"`max_candidates` = {self.max_candidates}; must be ≥ 1, e.g. 100000")
        if self.max_history < 0:
            raise ConfigError(f"`max_history` = {self.max_history}; must be ≥ 0")
        if self.warmup_requests < 0 or self.warmup_candidates < 1:
            raise ConfigError(
                f"`warmup_requests` = {self.warmup_requests}, `warmup_candidates` = {self.warmup_candidates}; "
                "need warmup_requests ≥ 0 and warmup_candidates ≥ 1"
            )


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """The online feature store the server reads histories from.

    Attributes:
        redis_url: ``redis://host:port/db``; ``None`` = no store (requests without history get none).
        namespace: the key prefix the events writer used.
        deadline_ms: socket timeout of one read; past it the request is scored with an empty history.
        breaker_reset_s: after 3 failed reads in a row, skip the store this long before one trial read.
    """

    redis_url: str | None = None
    namespace: str = "seedrec"
    deadline_ms: float = 20.0
    breaker_reset_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ConfigError(f"`deadline_ms` = {self.deadline_ms}; must be > 0, e.g. 20")
        if not self.namespace or ":" in self.namespace:
            raise ConfigError(f"`namespace` = {self.namespace!r}; give a non-empty prefix without ':'")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """One scoring server.

    Attributes:
        repository: the model repository folder (``REPO/NAME/VERSION/``).
        host: the address to bind.
        port: the gRPC port; 0 picks a free one (returned by ``create_server``).
        admin_token: the bearer token admin calls need; ``None`` = admin calls are open (local use only).
        default_model: the model a request with no model name gets; ``None`` = the only model, or
            the first one loaded.
        models: model names to load at start-up (their active version); ``None`` = every model.
        metrics_port: the Prometheus HTTP port; 0 picks a free one, ``None`` = no HTTP endpoint.
        max_message_bytes: the largest request or response message.
        score_threads: threads that run transforms and forwards (the event loop never blocks on them).
        torch_threads: intra-op threads of torch in this process.
        grace_s: how long graceful shutdown lets in-flight calls finish.
        keep_versions: loaded versions kept in memory per model besides the active and experiment
            ones (for a fast rollback).
    """

    repository: str
    host: str = "127.0.0.1"
    port: int = 0
    admin_token: str | None = None
    default_model: str | None = None
    models: tuple[str, ...] | None = None
    metrics_port: int | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    score_threads: int = 2
    torch_threads: int = 1
    grace_s: float = 5.0
    keep_versions: int = 1
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    memory: MemoryConfig | None = None
    store: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self) -> None:
        if not self.repository:
            raise ConfigError("`repository` is empty; pass the model repository folder (REPO/NAME/VERSION/)")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"`port` = {self.port}; must be in [0, 65535] (0 = a free port)")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"`metrics_port` = {self.metrics_port}; must be in [0, 65535] or None")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"`max_message_bytes` = {self.max_message_bytes}; must be ≥ 1024, e.g. 64 MiB")
        if self.score_threads < 1 or self.torch_threads < 1:
            raise ConfigError(
                f"`score_threads` = {self.score_threads}, `torch_threads` = {self.torch_threads}; both must be ≥ 1"
            )
        if self.grace_s < 0 or self.keep_versions < 0:
            raise ConfigError(f"`grace_s` = {self.grace_s}, `keep_versions` = {self.keep_versions}; both must be ≥ 0")
        if self.admin_token is not None and not self.admin_token:
            raise ConfigError("`admin_token` is empty; pass a non-empty token or None")
        if self.default_model is not None:
            check_name("default_model", self.default_model)


@dataclass(frozen=True, kw_only=True)
class Arm:
    """One experiment arm: the version its users get and their share of traffic."""

    name: str
    version: str
    share: float

    def __post_init__(self) -> None:
        check_name("name", self.name)
        check_name("version", self.version)
        if not (isinstance(self.share, (int, float)) and math.isfinite(self.share) and 0 < self.share <= 1):
            raise ConfigError(f"arm `{self.name}`: `share` = {self.share!r}; must be in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """Arms of one model and the salt of the user hash (a new salt reshuffles users).

    Attributes:
        salt: mixed into the user hash; arms keep their users as long as the salt is unchanged.
        arms: at least one; names unique; shares sum to 1.
        name: a label for reports.
    """

    salt: str
    arms: tuple[Arm, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("`arms` is empty; give at least one arm (or clear the experiment instead)")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"`arms` has duplicate names {sorted({n for n in names if names.count(n) > 1})}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"`arms` shares sum to {total:g}; they must sum to 1 (e.g. 0.5 + 0.5)")
