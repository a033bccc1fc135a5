"""Salted-hash arm assignment: stable, close to the shares, reshuffled by a new salt."""

from __future__ import annotations

import numpy as np

from serving.configs import Arm, Experiment
from serving.experiments import ArmRouter, user_unit


def _exp(salt: str, share_a: float) -> Experiment:
    return Experiment(salt=salt, arms=(Arm(name="a", version="1", share=share_a), Arm(name="b", version="2", share=1 - share_a)))


def test_assignment_is_stable_and_follows_the_shares() -> None:
    router = ArmRouter(_exp("s1", 0.3))
    arms = [router.assign(u).name for u in range(20_000)]
    assert arms == [ArmRouter(_exp("s1", 0.3)).assign(u).name for u in range(20_000)]  # same salt, same arms
    share_a = arms.count("a") / len(arms)
    assert abs(share_a - 0.3) < 0.015  # binomial sd ≈ 0.0032


def test_unit_is_sha256_of_salt_and_user() -> None:
    import hashlib

    d = hashlib.sha256(b"s1:42").digest()
    assert user_unit(42, "s1") == int.from_bytes(d[:8], "big") / 2.0**64


def test_a_new_salt_reshuffles_users() -> None:
    a = np.array([ArmRouter(_exp("s1", 0.5)).assign(u).name == "a" for u in range(5000)])
    b = np.array([ArmRouter(_exp("s2", 0.5)).assign(u).name == "a" for u in range(5000)])
    assert 0.4 < (a == b).mean() < 0.6  # independent halves agree about half the time


def test_growing_an_arm_only_moves_users_into_it() -> None:
    small, large = ArmRouter(_exp("s", 0.1)), ArmRouter(_exp("s", 0.2))
    moved = [u for u in range(5000) if small.assign(u).name == "a" and large.assign(u).name != "a"]
    assert moved == []  # cumulative intervals: the treatment users of a 10% ramp stay at 20%


def test_versions_lists_each_version_once() -> None:
    exp = Experiment(salt="s", arms=(Arm(name="a", version="1", share=0.5), Arm(name="b", version="1", share=0.5)))
    assert ArmRouter(exp).versions == ("1",)
