"""Configuration dataclasses of the feature pipeline (dataclasses only: no I/O, no behaviour).

Each config is ``@dataclass(frozen=True, kw_only=True)`` and validates itself in ``__post_init__``,
raising :class:`~seedrec.errors.ConfigError` (a ``ValueError``) that names the field in backticks,
the bad value and the fix.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from seedrec.errors import ConfigError
from seedrec.validation import check_float as _check_float
from seedrec.validation import check_int as _check_int

__all__ = ["WorldConfig", "DOMAIN_NAMES"]

#: The domain names of the synthetic world, in order; a world with ``domains=K`` uses the first K.
DOMAIN_NAMES: tuple[str, ...] = ("feed", "search", "mall", "live")






@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """The size and shape of a synthetic world (see :mod:`feature_pipeline.world`).

    Attributes:
        users: number of users ``U``.
        items: number of items ``I``; at least ``categories`` and ``2 * slate_size``.
        days: number of simulated days of logs.
        domains: number of domains ``K`` (1..4), named by the first K of ``feed, search, mall, live``.
        categories: number of item categories ``C``.
        latent_dim: width ``D`` of the user/item latent vectors.
        clusters: number of user interest clusters ``G``.
        long_term_interests: long-term interest categories per user.
        seed: the random seed; the same seed gives the same world and the same logs.
        impressions_per_user_day: mean impressions per user per day (before the activity multiplier).
        slate_size: items shown per request ``S``.
        explore_eps: probability that the logging policy replaces a slot by a uniformly random item.
        candidates: size of the logging policy's retrieval pool per request.
        organic_per_user_day: mean organic (non-impression) behaviours per user per day.
        position_decay: exponent ``η`` of the examination probability ``(1 + position) ** -η``.
        start_date: the first simulated day, ``YYYY-MM-DD`` (UTC).

    Example:
        >>> cfg = WorldConfig(users=100, items=50, days=2, domains=2)
        >>> cfg.domain_names
        ('feed', 'search')
    """

    users: int = 2000
    items: int = 500
    days: int = 4
    domains: int = 3
    categories: int = 40
    latent_dim: int = 16
    clusters: int = 8
    long_term_interests: int = 3
    seed: int = 0
    impressions_per_user_day: float = 20.0
    slate_size: int = 10
    explore_eps: float = 0.1
    candidates: int = 64
    organic_per_user_day: float = 2.0
    position_decay: float = 0.6
    start_date: str = "2024-01-01"

    def __post_init__(self) -> None:
        _check_int("users", self.users, 1, None, "pass a positive number of users")
        _check_int("days", self.days, 1, 3660, "pass between 1 and 3660 days")
        _check_int(
            "domains", self.domains, 1, len(DOMAIN_NAMES), f"pick 1..{len(DOMAIN_NAMES)} of {DOMAIN_NAMES}"
        )
        _check_int("categories", self.categories, 2, None, "pass at least 2 categories")
        _check_int("latent_dim", self.latent_dim, 2, 1024, "pass a latent width such as 16")
        _check_int("clusters", self.clusters, 1, None, "pass at least one interest cluster")
        _check_int("seed", self.seed, 0, 2**63 - 1, "pass a non-negative seed")
        _check_int(
            "slate_size", self.slate_size, 1, 1000, "pass the number of items shown per request, e.g. 10"
        )
        _check_int("items", self.items, 1, None, "pass a positive number of items")
        if self.items < max(self.categories, 2 * self.slate_size):
            raise ConfigError(
                f"`items` must be >= max(`categories`, 2 * `slate_size`) = {max(self.categories, 2 * self.slate_size)}, "
                f"got {self.items}; add items or lower `categories`/`slate_size`"
            )
        if self.clusters > self.users:
            raise ConfigError(
                f"`clusters` must be <= `users` ({self.users}), got {self.clusters}; lower `clusters`"
            )
        _check_int(
            "long_term_interests",
            self.long_term_interests,
            1,
            self.categories,
            "pass 1..`categories` long-term categories",
        )
        _check_int(
            "candidates",
            self.candidates,
            self.slate_size,
            None,
            "pass a retrieval pool at least `slate_size` large",
        )
        _check_float(
            "impressions_per_user_day",
            self.impressions_per_user_day,
            0.0,
            1e5,
            "pass a positive mean",
            open_lo=True,
        )
        _check_float("explore_eps", self.explore_eps, 0.0, 1.0, "pass a probability in [0, 1], e.g. 0.1")
        _check_float(
            "organic_per_user_day", self.organic_per_user_day, 0.0, 1e5, "pass a non-negative mean, e.g. 2"
        )
        _check_float(
            "position_decay", self.position_decay, 0.0, 10.0, "pass a non-negative exponent, e.g. 0.6"
        )
        try:
            _dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            raise ConfigError(
                f"`start_date` must be an ISO date YYYY-MM-DD, got {self.start_date!r}; e.g. '2024-01-01'"
            ) from None

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The names of the K domains of this world."""
        return DOMAIN_NAMES[: self.domains]
