"""The online feature store as the scorer sees it: one user's history and attributes, or a reason why not.

Wraps :class:`feature_pipeline.online_store.OnlineStoreReader` (the one layout of the store) with
a short socket timeout and the request deadline. A store that does not answer in time never fails
a Score call: the request is scored with an empty history and says so
(``history_source = STORE_UNAVAILABLE``); a circuit breaker stops a dead store from costing every
request its timeout.

Example:
    >>> store = FeatureStore(StoreConfig(redis_url="redis://127.0.0.1:6379/0"))   # doctest: +SKIP
    >>> user, source = store.read(42, limit=20, deadline=None)                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from typing import Any

from feature_pipeline.online_store import OnlineStoreReader, UserFeatures
from serving.configs import StoreConfig
from serving.memory import CircuitBreaker
from serving.scorer import HistoryProvider, HistorySource

__all__ = ["FeatureStore"]

logger = logging.getLogger(__name__)


class FeatureStore(HistoryProvider):
    """Reads users from the online store with a deadline.

    Args:
        config: the store URL, namespace and per-read deadline.
        client: a ``redis.Redis`` to use instead of one built from ``config.redis_url`` (tests).
    """

    def __init__(self, config: StoreConfig, *, client: Any = None) -> None:
        import redis

        if client is None:
            if not config.redis_url:
                raise ValueError("`redis_url` is empty; pass the online store's redis:// URL")
            timeout = config.deadline_ms / 1000.0
            client = redis.Redis.from_url(config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.config = config
        self._reader = OnlineStoreReader(client, namespace=config.namespace)
        self._breaker = CircuitBreaker(failures=3, reset_s=config.breaker_reset_s)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def read(self, user_id: int, *, limit: int, deadline: float | None) -> tuple[UserFeatures | None, HistorySource]:
        """One user's last ``limit`` behaviours and attributes (one round trip).

        Returns:
            (the user or None, ``ONLINE_STORE`` | ``NONE`` (nothing stored) | ``STORE_UNAVAILABLE``).
        """
        source = HistorySource.STORE_UNAVAILABLE
        user: UserFeatures | None = None
        if (deadline is None or deadline > time.monotonic()) and self._breaker.allow():
            try:
                user = self._reader.read([user_id], limit=limit)[0]
                self._breaker.record(True)
                source = HistorySource.ONLINE_STORE if (user.history or user.attributes) else HistorySource.NONE
            except self._errors as e:
                self._breaker.record(False)
                logger.debug("online store read of user %s failed (%s); scoring without history", user_id, e)
                user = None
        return user, source
