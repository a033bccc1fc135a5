"""The scorer: the same transform as training, user side once, the memory hook, bad requests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file

from feature_pipeline.online_store import Behaviour, UserFeatures
from serving.configs import ScorerConfig
from serving.errors import InvalidRequestError, LoadError
from serving.memory import CircuitBreaker, LocalMemory, RemoteMemory, ZeroMemory
from serving.package import MEMORY_FILE, MODEL_FILE, read_manifest, write_manifest
from serving.scorer import HistorySource, LoadedModel, ScoreInputs
from serving.testing import ToyModel, toy_factory

C = 37
HISTORY = [Behaviour(ts_ms=1000 + i, item_id=(7 * i) % 200, category_id=i % 10, action=("click", "like")[i % 2],
                     domain=("feed", "search")[i % 3 == 0]) for i in range(11)]


def _inputs(**kw: Any) -> ScoreInputs:
    ids = np.arange(C, dtype=np.int64) * 5 % 230  # some ids beyond the vocabulary (OOV)
    base: dict[str, Any] = dict(
        user_id=3, domain="search", item_ids=ids, features={"device": "android", "hour": 21},
        candidate_features={"category_id": ids % 10, "price": np.linspace(1.0, 90.0, C)}, history=HISTORY,
    )
    base.update(kw)
    return ScoreInputs(**base)


def _full_table(inp: ScoreInputs, seq_len: int) -> pa.Table:
    """The C-row sample table a training loader would see for this request."""
    tail = list(inp.history or [])[-seq_len:]
    n = len(inp.item_ids)
    rep = lambda v: [v] * n  # noqa: E731
    return pa.table({
        "user_id": rep(inp.user_id), "item_id": inp.item_ids, "category_id": inp.candidate_features["category_id"],
        "device": rep(inp.features["device"]), "hour": pa.array(rep(inp.features["hour"]), pa.int64()),
        "domain": rep(inp.domain), "price": inp.candidate_features["price"],
        "hist_item_id": rep([b.item_id for b in tail]), "hist_category_id": rep([b.category_id for b in tail]),
        "hist_domain": rep([b.domain for b in tail]), "hist_action": rep([b.action for b in tail]),
    })


def _offline_scores(pkg: Path, table: pa.Table) -> np.ndarray:
    """The package's model, rebuilt without any serving code, on the full table."""
    loaded = LoadedModel.load(pkg, factory=toy_factory, config=ScorerConfig(warmup_requests=0))
    manifest = read_manifest(pkg)
    model = ToyModel(loaded.spec, memory=bool(manifest.model_config["memory"]), n_sub=8)
    state = load_file(str(pkg / MODEL_FILE))
    if manifest.memory is not None:
        state[manifest.memory.param] = load_file(str(pkg / MEMORY_FILE))["values"]
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(loaded.transform.to_batch(table)).logits).numpy()


@pytest.mark.parametrize("which", ["toy_package", "memory_package"])
def test_scores_equal_the_offline_model_on_the_broadcast_table(which: str, request: pytest.FixtureRequest) -> None:
    pkg = request.getfixturevalue(which)
    loaded = LoadedModel.load(pkg, factory=toy_factory)
    inp = _inputs()
    out = loaded.score(inp)
    assert out.scores.shape == (C, 2) and out.heads == ("click", "purchase")
    assert out.history_source is HistorySource.REQUEST and out.history_length == 8  # seq_len of the toy spec
    np.testing.assert_allclose(out.scores, _offline_scores(pkg, _full_table(inp, 8)), atol=1e-6, rtol=0)
    assert not out.memory_fallback


def test_large_requests_are_scored_in_chunks_with_the_same_result(toy_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = LoadedModel.load(toy_package, factory=toy_factory)
    whole = loaded.score(_inputs()).scores
    monkeypatch.setattr("serving.scorer._FORWARD_CHUNK", 10)
    np.testing.assert_allclose(loaded.score(_inputs()).scores, whole, atol=1e-6)


def test_domain_by_index(toy_package: Path) -> None:
    loaded = LoadedModel.load(toy_package, factory=toy_factory)
    np.testing.assert_array_equal(loaded.score(_inputs(domain="1")).scores, loaded.score(_inputs(domain="search")).scores)


class _Store:
    def __init__(self, user: UserFeatures | None, source: HistorySource) -> None:
        self.user, self.source, self.calls = user, source, 0

    def read(self, user_id: int, *, limit: int, deadline: float | None) -> tuple[UserFeatures | None, HistorySource]:
        self.calls += 1
        return self.user, self.source


def test_history_comes_from_the_store_when_the_request_has_none(toy_package: Path) -> None:
    loaded = LoadedModel.load(toy_package, factory=toy_factory)
    store = _Store(UserFeatures(user_id=3, history=tuple(HISTORY)), HistorySource.ONLINE_STORE)
    out = loaded.score(_inputs(history=None), store=store)  # type: ignore[arg-type]  # duck-typed store
    assert store.calls == 1 and out.history_source is HistorySource.ONLINE_STORE
    np.testing.assert_array_equal(out.scores, loaded.score(_inputs()).scores)
    down = loaded.score(_inputs(history=None), store=_Store(None, HistorySource.STORE_UNAVAILABLE))  # type: ignore[arg-type]
    assert down.history_source is HistorySource.STORE_UNAVAILABLE and down.history_length == 0
    np.testing.assert_array_equal(down.scores, loaded.score(_inputs(history=[])).scores)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(item_ids=np.zeros(0, np.int64), candidate_features={}), "candidates.item_ids"),
        (dict(domain="mall"), "domain"),
        (dict(candidate_features={"price": [1.0, float("nan")] + [1.0] * (C - 2)}), r"candidates.features\[price\]"),
        (dict(candidate_features={"price": [1.0]}), r"candidates.features\[price\]"),
        (dict(features={"device": 3}), r"features\[device\]"),
        (dict(features={"hour": "noon"}), r"features\[hour\]"),
    ],
)
def test_malformed_requests_name_the_field(toy_package: Path, change: dict[str, Any], field: str) -> None:
    loaded = LoadedModel.load(toy_package, factory=toy_factory)
    with pytest.raises(InvalidRequestError, match=f"`{field}`"):
        loaded.score(_inputs(**change))


def test_too_many_candidates(toy_package: Path) -> None:
    loaded = LoadedModel.load(toy_package, factory=toy_factory, config=ScorerConfig(max_candidates=10))
    with pytest.raises(InvalidRequestError, match="at most 10"):
        loaded.score(_inputs())


class _FlakyClient:
    def __init__(self, values: torch.Tensor) -> None:
        self.local = LocalMemory(values)
        self.up, self.calls = True, 0

    def read_weighted(self, slots: np.ndarray, weights: np.ndarray, *, timeout: float) -> np.ndarray:
        self.calls += 1
        if not self.up:
            raise ConnectionError("memory service down")
        return self.local.read_weighted(torch.as_tensor(slots), torch.as_tensor(weights)).numpy()


def test_remote_memory_falls_back_flags_and_recovers(memory_package: Path) -> None:
    clients: list[_FlakyClient] = []
    breaker = CircuitBreaker(failures=2, reset_s=0.05)

    def remote(manifest: Any, values: torch.Tensor | None) -> RemoteMemory:
        assert values is not None
        clients.append(_FlakyClient(values))
        return RemoteMemory(clients[-1], fallback=LocalMemory(values), breaker=breaker, deadline_s=0.05)

    loaded = LoadedModel.load(memory_package, factory=toy_factory, memory=remote)
    client = clients[0]
    up = loaded.score(_inputs())
    assert not up.memory_fallback and client.calls > 0
    client.up = False
    outs = [loaded.score(_inputs()) for _ in range(5)]
    assert all(o.memory_fallback for o in outs)
    assert client.calls == 3 + 1 + 2  # warm-up (3) + the first request + 2 failures open the breaker; the rest skip it
    np.testing.assert_allclose(outs[-1].scores, up.scores, atol=1e-6)  # the packaged table: same scores
    client.up = True
    import time

    time.sleep(0.06)  # past reset_s: one trial call closes the breaker
    assert not loaded.score(_inputs()).memory_fallback


def test_zero_fallback_changes_the_scores(memory_package: Path) -> None:
    local = LoadedModel.load(memory_package, factory=toy_factory)
    zero = LoadedModel.load(memory_package, factory=toy_factory, memory=lambda m, v: ZeroMemory(8))
    assert not np.allclose(local.score(_inputs()).scores, zero.score(_inputs()).scores)


def _rewrite(pkg: Path, tmp: Path, mutate: Any) -> Path:
    out = Path(shutil.copytree(pkg, tmp / "pkg"))
    mutate(out)
    m = read_manifest(out)
    write_manifest(out, name=m.name, version=m.version, kind=m.kind, model_config=m.model_config,
                   feature_spec=m.feature_spec, metrics=m.metrics, memory=m.memory)
    return out


def test_a_state_dict_of_the_wrong_shape_fails_the_load(toy_package: Path, tmp_path: Path) -> None:
    def shrink(p: Path) -> None:
        state = load_file(str(p / MODEL_FILE))
        state["tables.item.weight"] = state["tables.item.weight"][:10]
        save_file(state, str(p / MODEL_FILE))

    with pytest.raises(LoadError, match="tables.item.weight"):
        LoadedModel.load(_rewrite(toy_package, tmp_path, shrink), factory=toy_factory)


def test_a_model_that_answers_nan_fails_the_warm_up(toy_package: Path, tmp_path: Path) -> None:
    def poison(p: Path) -> None:
        state = load_file(str(p / MODEL_FILE))
        state["mlp.2.bias"] = torch.full_like(state["mlp.2.bias"], float("nan"))
        save_file(state, str(p / MODEL_FILE))

    with pytest.raises(LoadError, match="warm-up"):
        LoadedModel.load(_rewrite(toy_package, tmp_path, poison), factory=toy_factory)


def test_an_unknown_kind_fails_the_load(toy_package: Path) -> None:
    def factory(kind: str, config: Any, spec: Any) -> torch.nn.Module:
        raise KeyError(kind)

    with pytest.raises(LoadError, match="cannot build a 'toy' model"):
        LoadedModel.load(toy_package, factory=factory)


def test_unique_rows_is_exact() -> None:
    from serving.scorer import unique_rows

    base = torch.randn(7, 5)
    x = base[torch.tensor([0, 3, 3, 6, 0, 1, 1, 1])]
    rows, inverse = unique_rows(x)
    assert rows.shape == (4, 5) and torch.equal(rows[inverse], x)
    nan = torch.tensor([[float("nan"), 1.0], [float("nan"), 1.0]])
    rows, inverse = unique_rows(nan)  # NaN never compares equal: falls back to no dedup
    assert rows.shape == (2, 2) and inverse.tolist() == [0, 1]
