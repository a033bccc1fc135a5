"""Simulated traffic of an A/B test: who is in the experiment, when they arrive, what is retrieved.

Everything is a pure function of the :class:`~abtest.configs.ABTestConfig` (``seed``, ``users``,
``requests_per_user_day``, ``domains``, ``salt`` and the arms' shares) and of the world, so a run
can be replayed exactly:

* **Population.** :func:`select_users` draws ``users`` distinct users of the world
  (``rng([seed, 1])``); all of them when the world has exactly that many.
* **Assignment.** :func:`assign_arms` is the scoring server's own rule
  (:func:`serving.experiments.user_unit`): ``u = sha256(f"{salt}:{user_id}")[:8] / 2**64`` and arm
  ``i`` takes ``u`` in ``[s_0 + … + s_{i-1}, s_0 + … + s_i)``. The closed loop reads the arm from
  the server's answer; this function predicts it (and is the assignment of server-free simulations).
* **Arrivals.** On world day ``d`` user ``u`` sends ``N_ud ~ Poisson(r · m_u)`` requests, with ``r``
  = ``requests_per_user_day`` and ``m_u`` the world's activity multiplier of the user (its mean over
  the world's activity shares is 1, so a day brings about ``users · r`` requests). Each request gets
  a domain from the world's domain mix of the user's activity level restricted to ``domains``, an
  hour from a diurnal profile peaking at 20:00 (the world's), a uniform second within the hour, and
  a device (the user's primary one 80% of the time). Randomness is keyed by ``(seed, stream, d)``,
  so days are independent streams and any day can be regenerated alone.
* **Retrieval.** :class:`Retriever` is the candidate generator in front of the ranker: ``M``
  distinct items per request drawn without replacement (Gumbel top-M) from a mixture of item
  popularity and the categories the production system believes the user likes (the world's
  logging-policy retrieval, read from its public arrays). The ranker under test only reorders them.

Example:
    >>> from abtest.configs import ABTestConfig, ArmConfig
    >>> from feature_pipeline.configs import WorldConfig
    >>> from feature_pipeline.world import World
    >>> world = World.generate(WorldConfig(users=40, items=60, domains=2, categories=6, clusters=2))
    >>> cfg = ABTestConfig(arms=(ArmConfig(name="a", model="m", share=0.5), ArmConfig(name="b", model="m", share=0.5)),
    ...                    users=40, domains=("feed", "search"), candidates=20, slate_size=5, pre_days=1, days=2)
    >>> traffic = Traffic(cfg, world)
    >>> traffic.pre_days, traffic.days
    ((4,), (5, 6))
    >>> req = traffic.requests(5)
    >>> bool((np.diff(req.ts) >= 0).all()), set(req.domain.tolist()) <= {"feed", "search"}
    (True, True)
    >>> Retriever(world, candidates=20).retrieve(req.user_id[:3], np.random.default_rng(0)).shape
    (3, 20)
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import numpy.typing as npt

from abtest.configs import ABTestConfig
from feature_pipeline.world import DEVICES, World
from seedrec.errors import ConfigError
from serving.experiments import user_unit

__all__ = ["Requests", "Traffic", "Retriever", "select_users", "assign_arms", "arrival_rates", "HOUR_PROFILE"]

IntArray = npt.NDArray[np.int64]
_DAY_S = 86_400
_hours = np.arange(24)
#: P(hour) of a request: ``1 + 0.8 cos(2π (h − 20) / 24)``, normalised (the world's diurnal profile).
HOUR_PROFILE: npt.NDArray[np.float64] = (lambda w: w / w.sum())(1.0 + 0.8 * np.cos(2 * np.pi * (_hours - 20) / 24))

# rng streams: (seed, stream, day) keeps each purpose and each day independent
_STREAM_USERS = 1
_STREAM_ARRIVALS = 2


@dataclass(frozen=True)
class Requests:
    """A batch of simulated Score requests, one row per request, in time order.

    Attributes:
        request_id: (B,) str, unique within a run (``ab-00006-000123``: phase, world day, index).
        user_id: (B,) int64 world user ids.
        day: (B,) int64 world day index (0 = the world's ``start_date``).
        ts: (B,) int64 unix seconds.
        hour: (B,) int64 hour of day (UTC).
        domain: (B,) str domain names.
        device: (B,) str device names.
    """

    request_id: npt.NDArray[np.str_]
    user_id: IntArray
    day: IntArray
    ts: IntArray
    hour: IntArray
    domain: npt.NDArray[np.str_]
    device: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def take(self, index: npt.ArrayLike) -> Requests:
        """The rows at ``index`` (a slice, an index array or a mask)."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        return Requests(**{f: getattr(self, f)[idx] for f in self.__dataclass_fields__})

    def chunks(self, size: int) -> list[Requests]:
        """Consecutive batches of at most ``size`` requests (time order kept)."""
        return [self.take(slice(lo, lo + size)) for lo in range(0, len(self), size)]


def select_users(config: ABTestConfig, world: World) -> IntArray:
    """The ``config.users`` distinct world users in the experiment, sorted.

    Raises:
        ConfigError: the world has fewer users than ``config.users``.
    """
    n = world.cfg.users
    if config.users > n:
        raise ConfigError(f"`users` = {config.users} but the world has only {n} users; lower `users` or use a larger world")
    if config.users == n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([config.seed, _STREAM_USERS])
    return np.sort(rng.choice(n, size=config.users, replace=False)).astype(np.int64)


def assign_arms(user_ids: npt.ArrayLike, config: ABTestConfig) -> IntArray:
    """The arm index (into ``config.arms``) of each user: the scoring server's salted-hash rule.

    Example:
        >>> from abtest.configs import ArmConfig
        >>> cfg = ABTestConfig(arms=(ArmConfig(name="a", model="m", share=0.5), ArmConfig(name="b", model="m", share=0.5)))
        >>> assign_arms([1, 2, 3, 4], cfg).tolist()
        [0, 0, 1, 1]
    """
    bounds = [*list(accumulate(a.share for a in config.arms))[:-1], 1.0]  # as serving.experiments.ArmRouter
    last = len(bounds) - 1
    ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
    return np.array([min(bisect_right(bounds, user_unit(int(u), config.salt)), last) for u in ids], dtype=np.int64)


def arrival_rates(config: ABTestConfig, world: World, user_ids: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Expected requests per day of each user: ``requests_per_user_day`` × the world's activity multiplier."""
    mult = np.asarray(world.params.activity_multiplier, dtype=np.float64)
    return config.requests_per_user_day * mult[world.arrays.user_activity[np.asarray(user_ids, dtype=np.int64)]]


class Traffic:
    """The requests of one experiment, day by day (pre-period first).

    Args:
        config: the experiment.
        world: the simulated world.
        start_day: the world day of the first pre-period day; default the day after the world's
            logged days (``world.cfg.days``), so the test follows the logs the models trained on.

    Raises:
        ConfigError: a configured domain is not a domain of the world, or too many users.
    """

    def __init__(self, config: ABTestConfig, world: World, *, start_day: int | None = None) -> None:
        missing = [d for d in config.domains if d not in world.domain_names]
        if missing:
            raise ConfigError(
                f"`domains` {list(config.domains)} includes {missing}, which the world (domains {list(world.domain_names)}) "
                "does not have; drop them or synthesise a world with more domains"
            )
        self.config = config
        self.world = world
        self.start_day = world.cfg.days if start_day is None else int(start_day)
        self.users = select_users(config, world)
        self.rates = arrival_rates(config, world, self.users)
        #: world day indices of the pre-period and of the experiment
        self.pre_days: tuple[int, ...] = tuple(range(self.start_day, self.start_day + config.pre_days))
        self.days: tuple[int, ...] = tuple(range(self.start_day + config.pre_days, self.start_day + config.pre_days + config.days))
        keep = np.array([world.domain_names.index(d) for d in config.domains], dtype=np.int64)
        mix = np.array([d.mix for d in world.params.domains], dtype=np.float64).T[:, keep]  # (3 activities, K')
        self._domain_names = np.array(config.domains)
        self._domain_cdf = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
        self._domain_cdf[:, -1] = 1.0
        self._start_s = int(dt.datetime.fromisoformat(world.cfg.start_date).replace(tzinfo=dt.UTC).timestamp())

    def date(self, day: int) -> str:
        """``YYYY-MM-DD`` of world day ``day``."""
        return (dt.date.fromisoformat(self.world.cfg.start_date) + dt.timedelta(days=int(day))).isoformat()

    def requests(self, day: int) -> Requests:
        """The requests of world day ``day``, sorted by time; the same for the same (seed, day)."""
        rng = np.random.default_rng([self.config.seed, _STREAM_ARRIVALS, int(day)])
        counts = rng.poisson(self.rates)
        user = np.repeat(self.users, counts)
        R = user.shape[0]
        activity = self.world.arrays.user_activity[user].astype(np.int64)
        dom = np.minimum((self._domain_cdf[activity] < rng.random(R)[:, None]).sum(axis=1), len(self._domain_names) - 1)
        hour = rng.choice(24, size=R, p=HOUR_PROFILE).astype(np.int64)
        ts = self._start_s + int(day) * _DAY_S + hour * 3600 + rng.integers(0, 3600, R)
        primary = self.world.arrays.user_device[user].astype(np.int64)
        device = np.where(rng.random(R) < 0.8, primary, rng.integers(0, len(DEVICES), R))
        order = np.argsort(ts, kind="stable")
        phase = "pre" if int(day) in self.pre_days else "ab"
        ids = np.array([f"{phase}-{int(day):05d}-{i:06d}" for i in range(R)])
        return Requests(
            request_id=ids,
            user_id=user[order].astype(np.int64),
            day=np.full(R, int(day), dtype=np.int64),
            ts=ts[order].astype(np.int64),
            hour=hour[order],
            domain=self._domain_names[dom[order]],
            device=np.array(DEVICES)[device[order]],
        )


class Retriever:
    """The retrieval stage: ``candidates`` distinct items per request for the ranker to order.

    Items are drawn without replacement with weights
    ``pop_share · pop_i + (1 − pop_share) · P(cat_i | u) · pop_i / pop(cat_i)``, where
    ``P(c | u) ∝ exp(τ ŵ_u · c_c)`` uses the production system's noisy belief ``ŵ_u`` about the
    user (the world's ``user_estimate``) and ``τ`` the world's policy temperature. Drawing is by
    Gumbel top-M (successive sampling), which keeps every row distinct.

    Args:
        world: the world whose catalogue is retrieved from.
        candidates: M, items per request (all items when the catalogue is smaller).
        pop_share: the popularity part of the mixture, in [0, 1].
    """

    def __init__(self, world: World, *, candidates: int, pop_share: float = 0.5) -> None:
        if not 0.0 <= pop_share <= 1.0:
            raise ConfigError(f"`pop_share` = {pop_share}; must be in [0, 1], e.g. 0.5")
        a = world.arrays
        self.world = world
        self.candidates = min(int(candidates), world.cfg.items)
        self.pop_share = float(pop_share)
        self._pop = a.item_popularity.astype(np.float64)  # (I,), sums to 1
        cat_pop = np.bincount(a.item_category, weights=self._pop, minlength=world.cfg.categories)
        self._within = self._pop / cat_pop[a.item_category]  # (I,) P(item | its category)
        self._temperature = float(world.params.policy_temperature)

    def retrieve(self, user_ids: npt.ArrayLike, rng: np.random.Generator) -> IntArray:
        """(B, M) distinct candidate item ids for users ``user_ids`` (B,)."""
        u = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        B, M, NI = u.shape[0], self.candidates, self.world.cfg.items
        if M == NI:
            return np.broadcast_to(np.arange(NI, dtype=np.int64), (B, NI)).copy()
        a = self.world.arrays
        aff = self._temperature * (a.user_estimate[u] @ a.category_centre.T).astype(np.float64)  # (B, C)
        p_cat = np.exp(aff - aff.max(axis=1, keepdims=True))
        p_cat /= p_cat.sum(axis=1, keepdims=True)
        w = self.pop_share * self._pop + (1.0 - self.pop_share) * p_cat[:, a.item_category] * self._within  # (B, I)
        keys = np.log(np.maximum(w, 1e-300)) + rng.gumbel(size=w.shape)  # (B, I)
        return np.argpartition(-keys, M - 1, axis=1)[:, :M].astype(np.int64)  # (B, M)
