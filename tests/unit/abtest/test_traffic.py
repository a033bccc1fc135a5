"""Simulated traffic: deterministic per seed, arrivals / domains / arm shares as configured.

Tolerances are a few standard deviations of the simulated counts (Poisson or binomial), so a
failure is a ≥ 4σ event.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from abtest.configs import ABTestConfig, ArmConfig
from abtest.traffic import HOUR_PROFILE, Retriever, Traffic, arrival_rates, assign_arms, select_users
from feature_pipeline.configs import WorldConfig
from feature_pipeline.world import World
from seedrec.errors import ConfigError
from serving.configs import Arm, Experiment
from serving.experiments import ArmRouter


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(WorldConfig(users=3000, items=150, days=2, domains=3, categories=12, clusters=4, seed=7))


def _config(**kw: Any) -> ABTestConfig:
    shares = kw.pop("shares", (0.5, 0.5))
    arms = tuple(ArmConfig(name=f"arm{i}", model="ranker", version=str(i + 1), share=s) for i, s in enumerate(shares))
    base: dict[str, Any] = dict(users=2000, days=3, pre_days=2, domains=("feed", "search", "mall"), candidates=40,
                                slate_size=8, seed=3)
    base.update(kw)
    return ABTestConfig(arms=arms, **base)


def _equal(a: Any, b: Any) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


def test_requests_are_deterministic_per_seed(world: World) -> None:
    cfg = _config()
    one, two = Traffic(cfg, world), Traffic(cfg, world)
    assert np.array_equal(one.users, two.users)
    for day in (*one.pre_days, *one.days):
        assert _equal(one.requests(day), two.requests(day))
    assert _equal(one.requests(one.days[1]), Traffic(cfg, world).requests(one.days[1]))  # a day regenerates alone
    other = Traffic(_config(seed=4), world)
    assert not np.array_equal(one.users, other.users)
    assert not _equal(one.requests(one.days[0]), other.requests(one.days[0]))


def test_days_follow_the_logged_days(world: World) -> None:
    t = Traffic(_config(), world)
    assert t.pre_days == (2, 3) and t.days == (4, 5, 6)  # world logs cover days 0, 1
    assert Traffic(_config(), world, start_day=10).days == (12, 13, 14)
    req = t.requests(4)
    assert t.date(4) == "2024-01-05"
    day0 = 1704067200 + 4 * 86_400  # 2024-01-05T00:00Z
    assert req.ts.min() >= day0 and req.ts.max() < day0 + 86_400 and np.all(np.diff(req.ts) >= 0)
    assert np.array_equal(req.hour, (req.ts - day0) // 3600)
    assert len(set(req.request_id.tolist())) == len(req) and req.request_id[0].startswith("ab-00004-")
    assert t.requests(2).request_id[0].startswith("pre-00002-")


def test_population_is_sampled_without_replacement(world: World) -> None:
    users = select_users(_config(), world)
    assert users.shape == (2000,) and np.unique(users).size == 2000 and np.all(np.diff(users) > 0)
    assert users.min() >= 0 and users.max() < world.cfg.users
    assert np.array_equal(select_users(_config(users=3000), world), np.arange(3000))
    with pytest.raises(ConfigError, match="`users`"):
        select_users(_config(users=3001), world)


def test_arrival_counts_match_the_configured_rate(world: World) -> None:
    cfg = _config(requests_per_user_day=1.5)
    t = Traffic(cfg, world)
    rates = arrival_rates(cfg, world, t.users)
    mult = np.asarray(world.params.activity_multiplier)
    assert np.allclose(rates, 1.5 * mult[world.arrays.user_activity[t.users]])
    counts = np.array([len(t.requests(d)) for d in (*t.pre_days, *t.days)])
    expected = rates.sum()  # Poisson per user: the day's total has mean = variance = Σ rates
    assert expected == pytest.approx(1.5 * 2000, rel=0.1)  # activity multipliers average to 1
    assert np.all(np.abs(counts - expected) <= 4 * math.sqrt(expected)), (counts, expected)
    # per user: heavy users arrive more, in proportion to their rate
    per_user = np.zeros(world.cfg.users)
    for d in t.days:
        np.add.at(per_user, t.requests(d).user_id, 1)
    got, want = per_user[t.users].sum(), rates.sum() * len(t.days)
    assert abs(got - want) <= 4 * math.sqrt(want)
    high = world.arrays.user_activity[t.users] == 2
    assert per_user[t.users][high].mean() > 2 * per_user[t.users][~high].mean()


def test_domains_and_hours_follow_the_world_mix(world: World) -> None:
    cfg = _config(domains=("feed", "mall"), users=3000, requests_per_user_day=3.0)
    t = Traffic(cfg, world)
    req = t.requests(t.days[0])
    assert set(req.domain.tolist()) == {"feed", "mall"}
    act = world.arrays.user_activity[req.user_id]
    mix = np.array([d.mix for d in world.params.domains])[[0, 2]].T  # (activities, 2): feed, mall
    p_feed = mix[act, 0] / mix[act].sum(axis=1)
    n = len(req)
    expected = p_feed.sum()
    got = int((req.domain == "feed").sum())
    assert abs(got - expected) <= 4 * math.sqrt((p_feed * (1 - p_feed)).sum())
    hours = np.bincount(req.hour, minlength=24) / n
    assert np.abs(hours - HOUR_PROFILE).max() < 4 * math.sqrt(HOUR_PROFILE.max() / n)
    assert set(req.device.tolist()) <= {"ios", "android", "web"}


def test_unknown_domain_is_refused(world: World) -> None:
    small = World.generate(WorldConfig(users=50, items=40, days=1, domains=2, categories=5, clusters=2))
    with pytest.raises(ConfigError, match="`domains`"):
        Traffic(_config(users=50, domains=("feed", "mall")), small)


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.2, 0.3, 0.5), (0.7, 0.3)])
def test_arm_shares_as_configured_and_equal_to_the_server(shares: tuple[float, ...]) -> None:
    cfg = _config(shares=shares, salt="unit-salt")
    ids = np.arange(20_000)
    arms = assign_arms(ids, cfg)
    n = ids.size
    for k, s in enumerate(shares):
        assert abs((arms == k).sum() - s * n) <= 4 * math.sqrt(n * s * (1 - s)), (k, s)
    router = ArmRouter(Experiment(salt="unit-salt", arms=tuple(
        Arm(name=a.name, version=a.version, share=a.share) for a in cfg.arms)))
    names = [a.name for a in cfg.arms]
    assert [names[k] for k in arms[:2000]] == [router.assign(int(u)).name for u in ids[:2000]]
    assert not np.array_equal(arms, assign_arms(ids, _config(shares=shares, salt="another")))


def test_retriever_returns_distinct_candidates(world: World) -> None:
    r = Retriever(world, candidates=40)
    users = np.array([0, 1, 2, 3, 0])
    a = r.retrieve(users, np.random.default_rng(1))
    assert a.shape == (5, 40) and a.min() >= 0 and a.max() < world.cfg.items
    assert all(np.unique(row).size == 40 for row in a)
    assert np.array_equal(a, r.retrieve(users, np.random.default_rng(1)))
    everything = Retriever(world, candidates=10_000).retrieve(users, np.random.default_rng(1))
    assert everything.shape == (5, world.cfg.items) and np.array_equal(np.sort(everything[0]), np.arange(world.cfg.items))
    # popular items are retrieved more often than unpopular ones
    many = Retriever(world, candidates=10, pop_share=1.0).retrieve(np.zeros(2000, np.int64), np.random.default_rng(2))
    freq = np.bincount(many.ravel(), minlength=world.cfg.items)
    top = np.argsort(-world.arrays.item_popularity)
    assert freq[top[:10]].sum() > freq[top[-10:]].sum()
    with pytest.raises(ConfigError, match="`pop_share`"):
        Retriever(world, candidates=10, pop_share=1.5)
