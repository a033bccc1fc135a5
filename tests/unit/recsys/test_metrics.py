"""Tests of recsys/metrics.py: AUC against sklearn, GAUC against a hand loop, logloss, RelaImpr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recsys.metrics import (
    EvalAccumulator,
    all_gather_rows,
    auc,
    domain_auc,
    gauc,
    logloss,
    rela_impr,
    rela_impr_table,
)
from seedrec.errors import ConfigError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _gauc_loop(y: np.ndarray, p: np.ndarray, u: np.ndarray) -> float:
    num = den = 0.0
    for user in np.unique(u):
        m = u == user
        if len(np.unique(y[m])) < 2:
            continue
        num += roc_auc_score(y[m], p[m]) * m.sum()
        den += m.sum()
    return num / den


@pytest.mark.parametrize("n", [2, 17, 1000])
def test_auc_equals_sklearn(rng: np.random.Generator, n: int) -> None:
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    p = rng.random(n)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_with_ties_equals_sklearn(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, 500)
    p = rng.integers(0, 5, 500) / 4.0  # five score levels: many ties, some across classes
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))


def test_gauc_equals_hand_loop(rng: np.random.Generator) -> None:
    n = 3000
    u = rng.integers(0, 80, n)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(rng.random(n) + 0.3 * y, 2)  # rounded: ties inside users
    y[u == 5] = 1  # a one-class user: skipped
    assert gauc(y, p, u) == pytest.approx(_gauc_loop(y, p, u), abs=1e-12)


def test_gauc_without_two_class_users_is_nan() -> None:
    assert math.isnan(gauc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 2])))


def test_logloss_equals_sklearn_and_clips(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)
    assert logloss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7))


def test_domain_auc(rng: np.random.Generator) -> None:
    d = rng.integers(0, 3, 600)
    y = rng.integers(0, 2, 600)
    p = rng.random(600)
    got = domain_auc(y, p, d)
    assert sorted(got) == [0, 1, 2]
    for k, v in got.items():
        assert v == pytest.approx(roc_auc_score(y[d == k], p[d == k]))


def test_rela_impr() -> None:
    assert rela_impr(0.75, base_auc=0.7) == pytest.approx(25.0)
    assert rela_impr_table({"din": 0.7, "lmn": 0.72}, baseline="din") == pytest.approx({"din": 0.0, "lmn": 10.0})
    with pytest.raises(ConfigError, match="`baseline`"):
        rela_impr_table({"din": 0.7}, baseline="ads")
    with pytest.raises(ConfigError, match="`base_auc`"):
        rela_impr(0.7, base_auc=0.5)


def test_accumulator_matches_direct_metrics(rng: np.random.Generator) -> None:
    n = 256
    y = torch.from_numpy(rng.integers(0, 2, (n, 2))).float()
    p = torch.from_numpy(rng.random((n, 2))).float()
    users = torch.from_numpy(rng.integers(0, 20, n))
    doms = torch.from_numpy(rng.integers(0, 2, n))
    acc = EvalAccumulator(["click", "buy"], domain_names=["feed", "search"])
    for s in range(0, n, 100):
        acc.update(labels=y[s:s + 100], probs=p[s:s + 100], users=users[s:s + 100], domains=doms[s:s + 100])
    acc.gather()  # no process group: the local rows
    m = acc.compute(prefix="valid")
    assert m["valid/num_samples"] == n
    assert m["valid/buy/auc"] == pytest.approx(roc_auc_score(y[:, 1], p[:, 1].double()))
    assert m["valid/click/gauc"] == pytest.approx(_gauc_loop(y[:, 0].numpy(), p[:, 0].double().numpy(), users.numpy()))
    assert m["valid/click/logloss"] == pytest.approx(log_loss(y[:, 0], p[:, 0].double()), rel=1e-6)
    search = (doms == 1).numpy()
    assert m["valid/click/auc/search"] == pytest.approx(roc_auc_score(y[search, 0], p[search, 0].double()))


def test_all_gather_rows_without_group_is_identity() -> None:
    x = torch.arange(6.0).reshape(3, 2)
    assert all_gather_rows(x) is x
