"""Routing state: activate, rollback, experiments, failed loads, snapshots (no real models needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serving.configs import Arm, Experiment
from serving.errors import LoadError, NotFoundError, StateError
from serving.manager import ModelManager
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository


@pytest.fixture()
def repo(tmp_path: Path) -> ModelRepository:
    for v in ("1", "2", "3", "10"):
        (tmp_path / "m" / v).mkdir(parents=True)
    (tmp_path / "other" / "1").mkdir(parents=True)
    return ModelRepository(tmp_path)


class _Loader:
    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.loads: list[tuple[str, str]] = []

    def __call__(self, path: Path, name: str, version: str) -> Any:
        if version in self.fail:
            raise LoadError(f"{path}: warm-up failed")
        self.loads.append((name, version))
        return SimpleNamespace(name=name, version=version, path=path)


def _manager(repo: ModelRepository, loader: _Loader, **kw: Any) -> ModelManager:
    return ModelManager(repo, load=loader, metrics=ServingMetrics(), **kw)  # type: ignore[arg-type]  # stand-in models


def test_start_serves_the_latest_version_numerically(repo: ModelRepository) -> None:
    m = _manager(repo, _Loader(), default_model="m")
    m.start()
    assert m.route("", "", 1)[0].version == "10"  # 10 > 3, not "10" < "3"
    assert m.route("other", "", 1)[0].version == "1"
    assert m.table.default == "m"


def test_activate_rollback_and_the_saved_state(repo: ModelRepository) -> None:
    loader = _Loader()
    m = _manager(repo, loader)
    m.activate("m", "1")
    m.activate("m", "2")
    status = m.activate("m", "3")
    assert status.active_version == "3" and status.history == ["1", "2"] and status.loaded_versions == ["2", "3"]
    assert m.rollback("m").active_version == "2"
    assert m.rollback("m").active_version == "1"
    with pytest.raises(StateError, match="no earlier active version"):
        m.rollback("m")
    restarted = _manager(repo, _Loader())
    restarted.start(["m"])
    assert restarted.route("m", "", 0)[0].version == "1"  # serving_state.json survives a restart


def test_a_failed_load_leaves_the_old_version_serving(repo: ModelRepository) -> None:
    loader = _Loader()
    m = _manager(repo, loader)
    m.activate("m", "1")
    before = m.table
    loader.fail.add("2")
    with pytest.raises(LoadError):
        m.activate("m", "2")
    assert m.table is before and m.route("m", "", 0)[0].version == "1"
    with pytest.raises(NotFoundError, match="version '99' is not in the repository"):
        m.activate("m", "99")


def test_a_snapshot_keeps_routing_to_the_old_model(repo: ModelRepository) -> None:
    m = _manager(repo, _Loader())
    m.activate("m", "1")
    snapshot = m.table  # what an in-flight request holds
    m.activate("m", "2")
    assert snapshot.models["m"].active.version == "1" and m.route("m", "", 0)[0].version == "2"


def test_experiments_route_users_by_arm(repo: ModelRepository) -> None:
    m = _manager(repo, _Loader())
    m.activate("m", "1")
    exp = Experiment(salt="s", arms=(Arm(name="control", version="1", share=0.5), Arm(name="treat", version="2", share=0.5)))
    status = m.set_experiment("m", exp)
    assert status.experiment == exp and status.loaded_versions == ["1", "2"]
    routed = {u: m.route("m", "", u) for u in range(200)}
    assert {(lm.version, arm) for lm, arm in routed.values()} == {("1", "control"), ("2", "treat")}
    assert all(m.route("m", "", u) == routed[u] for u in range(200))  # stable
    assert m.route("m", "2", 5) == (m.table.models["m"].loaded["2"], "")  # a pinned version bypasses the arms
    bad = Experiment(salt="s", arms=(Arm(name="a", version="77", share=1.0),))
    with pytest.raises(NotFoundError):
        m.set_experiment("m", bad)
    assert m.status("m")[0].experiment == exp  # unchanged
    m.set_experiment("m", None)
    assert all(m.route("m", "", u) == (m.table.models["m"].active, "") for u in range(20))


def test_unknown_models_and_unloaded_versions_are_not_found(repo: ModelRepository) -> None:
    m = _manager(repo, _Loader())
    with pytest.raises(NotFoundError, match="no model is loaded yet"):
        m.route("", "", 0)
    m.activate("m", "1")
    with pytest.raises(NotFoundError, match="'nope' is not served"):
        m.route("nope", "", 0)
    with pytest.raises(NotFoundError, match="version '3' is not loaded"):
        m.route("m", "3", 0)
    with pytest.raises(NotFoundError):
        m.status("nope")
