"""The A/B harness's closed loop through a real scoring server (port 0), a real Redis online store
and the simulated world, plus the statistical calibration of its tables without a server.

Stand-in models (``serving.testing``, documented there and here) keep the module fast (≈ 1 min on 2
cores): ``toy`` is the serving tests' small model (random weights, reads the history the server
pulls from the online store); ``taste`` is a stand-in that scores by the world's own static taste
``w_u · v_i + 0.3 z_pop_i`` (its embedding tables are copied from the world's arrays), i.e. a model
that learned the world's ground truth well. ``taste`` v1 is that model, v2 the same architecture
with random tables (a model that learned nothing): the acceptance needs a model known to be better
on the ground truth, not a trained one.

Calibration tolerances are ``3 * sqrt(a (1 - a) / R)`` over ``R`` simulated experiments (as in
``tests/unit/abtest/test_stats.py``), so a failure is a ≥ 3σ event.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
import redis
import torch
import yaml
from torch import nn

from abtest.configs import ABTestConfig, ArmConfig, Metric
from abtest.harness import ABTestRun, build_tables, run_abtest, simulate_offline
from abtest.stats import analyze
from feature_pipeline import log_io
from feature_pipeline.batch import Batch
from feature_pipeline.configs import WorldConfig
from feature_pipeline.online_store import OnlineStoreReader
from feature_pipeline.spec import FeatureSpec
from feature_pipeline.world import World
from recsys.outputs import ModelOutput
from seedrec.cli import main as seedrec_main
from seedrec.errors import DataError
from seedrec.redis_server import EmbeddedRedis
from serving.client import AdminClient, RankingClient, ServingRpcError
from serving.configs import ServerConfig, StoreConfig
from serving.export import write_package
from serving.server import BackgroundServer
from serving.testing import toy_factory, write_toy_package, write_toy_samples

pytestmark = pytest.mark.integration
TOKEN = "ab-token"
ALPHA = 0.05
WORLD = WorldConfig(users=200, items=120, days=1, domains=2, categories=10, clusters=4, candidates=30, seed=5)


def _tol(rate: float, runs: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


# ---- the stand-in "taste" model --------------------------------------------------------------------
class TasteModel(nn.Module):
    """logit = ``u_row · i_row + b_item`` for both heads (click, purchase); tables hold the world's
    ``w_u``, ``v_i`` and ``0.3 z_pop_i`` (v1) or random values (v2). No input validation."""

    def __init__(self, spec: FeatureSpec, *, dim: int) -> None:
        super().__init__()
        self.keys = spec.sparse_keys
        self.n_heads = len(spec.label_names)
        rows = {t.name: t.num_embeddings for t in spec.tables}
        self.user = nn.Embedding(rows["user"], dim)
        self.item = nn.Embedding(rows["item"], dim)
        self.bias = nn.Embedding(rows["item"], 1)

    def forward(self, batch: Batch) -> ModelOutput:
        B = batch.batch_size
        sp = batch.sparse.values().view(len(self.keys), B)  # (F, B)
        u = self.user(sp[self.keys.index("user_id")])  # (B, D)
        i = sp[self.keys.index("item_id")]  # (B,)
        logit = (u * self.item(i)).sum(-1, keepdim=True) + self.bias(i)  # (B, 1)
        return ModelOutput(logits=logit.expand(B, self.n_heads))  # (B, H)


def _factory(kind: str, config: Mapping[str, Any], spec: FeatureSpec) -> nn.Module:
    return TasteModel(spec, dim=int(config["dim"])) if kind == "taste" else toy_factory(kind, config, spec)


def _write_taste(repo: Path, samples: Path, world: World, *, version: str, learned: bool) -> Path:
    a = world.arrays
    spec = FeatureSpec.load(samples)
    dim = a.user_latent.shape[1]
    model = TasteModel(spec, dim=dim)
    if learned:  # toy vocabularies map raw id r to row r + 1 (row 0 = OOV)
        lp = np.log(a.item_popularity)
        with torch.no_grad():
            model.user.weight[1:] = torch.from_numpy(a.user_latent)
            model.item.weight[1:] = torch.from_numpy(a.item_latent)
            model.bias.weight[1:, 0] = torch.from_numpy(0.3 * (lp - lp.mean()) / lp.std()).float()
    else:
        torch.manual_seed(int(version))
    return write_package(repo / "taste" / version, name="taste", version=version, kind="taste", model_config={"dim": dim},
                         model=model, samples=samples)


# ---- fixtures ---------------------------------------------------------------------------------------
@dataclass
class Stack:
    world: World
    world_dir: Path
    redis: EmbeddedRedis
    server: BackgroundServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("abtest")
    world = World.generate(WORLD)
    world.save(root / "world")
    samples = write_toy_samples(root / "samples", users=WORLD.users, items=WORLD.items, categories=WORLD.categories)
    outbox = root / "outbox"
    packages = [write_toy_package(outbox, samples, name="toy", version="1", seed=1),
                _write_taste(outbox, samples, world, version="1", learned=True),
                _write_taste(outbox, samples, world, version="2", learned=False)]
    with EmbeddedRedis() as rs:
        cfg = ServerConfig(repository=str(root / "repo"), admin_token=TOKEN, grace_s=0.5, score_threads=2,
                           store=StoreConfig(redis_url=rs.url, deadline_ms=2000))  # a loaded 2-core box: no store timeouts
        with BackgroundServer(cfg, factory=_factory) as srv:
            with AdminClient(srv.address, token=TOKEN) as ac:
                for pkg in packages:
                    ac.push(pkg, activate=pkg.name == "1")
            yield Stack(world=world, world_dir=root / "world", redis=rs, server=srv)


def _config(stack: Stack, model: str, versions: tuple[str, str], **kw: Any) -> ABTestConfig:
    base: dict[str, Any] = dict(
        name=f"{model}-test", users=WORLD.users, days=2, pre_days=1, domains=("feed", "search"), candidates=30,
        slate_size=6, server=stack.server.address, concurrency=4, deadline_s=10.0, world_dir=str(stack.world_dir),
        salt="test-salt", seed=1)
    base.update(kw)
    arms = (ArmConfig(name="control", model=model, version=versions[0], share=0.5),
            ArmConfig(name="treatment", model=model, version=versions[1], share=0.5))
    return ABTestConfig(arms=arms, **base)


def _run(stack: Stack, cfg: ABTestConfig, out: Path, **kw: Any) -> ABTestRun:
    redis.Redis.from_url(stack.redis.url).flushdb()  # every run starts from the same (empty) store
    kw.setdefault("plots", False)
    return run_abtest(cfg, out, world=stack.world, redis_url=stack.redis.url, admin_token=TOKEN, progress=False, **kw)


# ---- (a) A/A through the server, and calibration without it -------------------------------------------
def test_aa_through_the_server_is_consistent(stack: Stack, tmp_path: Path) -> None:
    cfg = _config(stack, "toy", ("1", "1"))
    first = _run(stack, cfg, tmp_path / "a1")
    again = _run(stack, cfg, tmp_path / "a2")
    other = _run(stack, replace(cfg, seed=2, salt="other-salt"), tmp_path / "a3")
    pd.testing.assert_frame_equal(first.tables.users, again.tables.users)  # same seed, same store: same run
    pd.testing.assert_frame_equal(first.tables.daily, again.tables.daily)
    for run in (first, other):
        st = run.stats
        assert st.requests > 300 and st.served == st.requests and not st.failed  # healthy: no failed request
        assert st.counterfactual_calls == 0  # both arms serve v1: the oracle needs no extra call
        assert st.history_sources["online_store"] > 0.9 * st.served  # histories come from the store
        a = run.analysis
        assert not bool(a.srm.mismatch)
        assert all(r.true_lift == 0.0 for r in a.results)
        assert not a.result(cfg.primary_metric, "treatment").significant
        users = run.tables.users
        assert set(users["arm"]) == {"control", "treatment"} and users["user_id"].is_unique
    assert not first.tables.users.equals(other.tables.users)


def test_aa_calibration_of_the_harness_tables() -> None:
    """Many server-free A/A runs through the harness's own loop and table builder reject at ≈ α."""
    world = World.generate(replace(WORLD, users=400, items=100))
    runs, pvalues, srm_p = 300, {Metric.CLICKS_PER_USER: [], Metric.CTR: []}, []
    for r in range(runs):
        cfg = ABTestConfig(arms=(ArmConfig(name="a", model="m", share=0.5), ArmConfig(name="b", model="m", share=0.5)),
                           users=400, days=1, pre_days=1, domains=("feed", "search"), seed=100 + r, salt=f"cal-{r}",
                           metrics=(Metric.CLICKS_PER_USER, Metric.CTR))
        tables, _ = simulate_offline(cfg, world)
        a = analyze(tables.users, cfg)
        for m in pvalues:
            pvalues[m].append(a.result(m, "b").pvalue_adjusted)
        srm_p.append(float(a.srm.pvalue))
    for m, ps in pvalues.items():
        rate = float((np.asarray(ps) < ALPHA).mean())
        assert abs(rate - ALPHA) <= _tol(ALPHA, runs), (m, rate)
    assert float((np.asarray(srm_p) < ALPHA).mean()) <= ALPHA + _tol(ALPHA, runs)  # assignment by hash is fair


# ---- (b) SRM -------------------------------------------------------------------------------------------
def test_srm_fires_when_traffic_is_skewed(stack: Stack, tmp_path: Path) -> None:
    with AdminClient(stack.server.address, token=TOKEN) as ac:  # the server splits 50/50 ...
        ac.set_experiment("toy", [("control", "1", 0.5), ("treatment", "1", 0.5)], salt="test-salt")
    skewed = _config(stack, "toy", ("1", "1"), days=1, pre_days=0, cuped=False)
    skewed = replace(skewed, arms=(replace(skewed.arms[0], share=0.7), replace(skewed.arms[1], share=0.3)))
    try:  # ... while the analysis expects 70/30
        run = _run(stack, skewed, tmp_path, configure_server=False, oracle=False)
    finally:
        with AdminClient(stack.server.address, token=TOKEN) as ac:
            ac.set_experiment("toy", [], salt="test-salt")
    assert bool(run.analysis.srm.mismatch) and float(run.analysis.srm.pvalue) < 1e-3
    md = run.files.markdown.read_text()
    assert "Do not use these results" in md and "UNRELIABLE" in md
    fair = replace(skewed, arms=tuple(replace(a, share=0.5) for a in skewed.arms))
    assert not bool(analyze(run.tables.users, fair).srm.mismatch)  # the same users against the true split


# ---- (c) a better model wins, and the estimate agrees with the truth -----------------------------------
def test_better_model_lift_is_detected_and_matches_the_ground_truth(stack: Stack, tmp_path: Path) -> None:
    cfg = _config(stack, "taste", ("2", "1"))  # control: random tables; treatment: the world's taste
    run = _run(stack, cfg, tmp_path, plots=True)
    assert not run.stats.failed and run.stats.counterfactual_calls == run.stats.served and not run.stats.counterfactual_failed
    assert run.oracle is not None and run.oracle[Metric.CLICKS_PER_USER]["treatment"] > 0.2
    for m in (Metric.CLICKS_PER_USER, Metric.CTR):
        r = run.analysis.result(m, "treatment")
        h = r.headline
        assert r.significant and float(h.lift) > 0
        assert r.true_lift == pytest.approx(run.oracle[m]["treatment"])
        assert float(h.lift_lo) <= r.true_lift <= float(h.lift_hi), (m, float(h.lift_lo), r.true_lift, float(h.lift_hi))
    js = run.files.json.read_text()
    assert '"true_lift"' in js and '"failed_total": 0' in js
    assert {p.name for p in run.files.plots} >= {"lift_forest.png", "daily.png"}
    assert "True lift" in run.files.markdown.read_text()


# ---- failures, deadlines, concurrency -------------------------------------------------------------------
class _FlakyClient:
    """Wraps the real client: fails every 7th Score call with UNAVAILABLE; records deadlines and calls in flight."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.inner = RankingClient(address, timeout_s=timeout_s)
        self.lock = threading.Lock()
        self.calls = self.in_flight = self.max_in_flight = 0
        self.timeouts: set[float | None] = set()

    def score_request(self, request: Any, *, timeout: float | None = None) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.timeouts.add(timeout)
        try:
            if n % 7 == 0:
                raise ServingRpcError("Score", grpc.StatusCode.UNAVAILABLE, "injected")
            return self.inner.score_request(request, timeout=timeout)
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        self.inner.close()


def test_failed_requests_are_counted_and_reported(stack: Stack, tmp_path: Path) -> None:
    cfg = _config(stack, "toy", ("1", "1"), days=1, pre_days=0, cuped=False, concurrency=3, deadline_s=7.5)
    clients: list[_FlakyClient] = []

    def factory(address: str, timeout_s: float) -> _FlakyClient:
        clients.append(_FlakyClient(address, timeout_s))
        return clients[-1]

    run = _run(stack, cfg, tmp_path, client_factory=factory)
    (client,) = clients
    st = run.stats
    assert st.failed == {"UNAVAILABLE": client.calls // 7} and st.served == st.requests - client.calls // 7
    assert client.timeouts == {7.5} and 1 <= client.max_in_flight <= 3  # deadline on every call; bounded pool
    assert int(run.tables.users["impressions"].sum()) == st.served * cfg.slate_size  # failed requests show nothing
    assert any("Score requests failed" in c for c in run.analysis.caveats)
    assert f"**{client.calls // 7} failed**" in run.files.markdown.read_text()


# ---- (d) events reach the online store and the logs ------------------------------------------------------
def test_events_go_to_the_online_store_and_to_valid_logs(stack: Stack, tmp_path: Path) -> None:
    cfg = _config(stack, "toy", ("1", "1"), days=1)
    run = _run(stack, cfg, tmp_path)
    logs = tmp_path / "logs"
    imp = log_io.read_table(logs, "impressions")  # validated against the log schema on read
    ev = log_io.read_table(logs, "events")
    assert log_io.validate_files(logs, "impressions") == 2  # one pre-period day + one experiment day
    assert log_io.read_table(logs, "users").num_rows == WORLD.users and log_io.read_table(logs, "items").num_rows == WORLD.items
    ab = imp.filter(pc.starts_with(imp.column("request_id"), "ab-"))
    users = run.tables.users
    assert ab.num_rows == run.stats.impressions_logged == int(users["impressions"].sum())
    assert int(pc.sum(ab.column("click")).as_py()) == int(users["clicks"].sum())
    n_click = int(pc.sum(imp.column("click")).as_py())
    n_buy = int(pc.sum(imp.column("purchase")).as_py())
    assert ev.num_rows == n_click + n_buy == run.stats.events_written
    assert "arm" not in imp.column_names  # the arm must not become a feature of the next model
    reader = OnlineStoreReader(redis.Redis.from_url(stack.redis.url))
    clicked = ev.filter(pc.equal(ev.column("action"), "click"))
    uid = int(clicked.column("user_id")[0].as_py())
    stored = reader.read([uid])[0]
    want = clicked.filter(pc.equal(clicked.column("user_id"), uid)).column("item_id").to_pylist()
    assert sorted(b.item_id for b in stored.history if b.action == "click") == sorted(want)
    assert stored.attributes["activity"] in ("low", "mid", "high")  # user attributes for the server


def test_cli_runs_a_test_from_a_yaml_config(stack: Stack, tmp_path: Path) -> None:
    cfg = tmp_path / "ab.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "cli", "arms": [{"name": "control", "model": "toy", "version": "1", "share": 0.5},
                                {"name": "treatment", "model": "toy", "version": "1", "share": 0.5}],
        "users": 80, "days": 1, "pre_days": 1, "domains": ["feed", "search"], "candidates": 20, "slate_size": 5,
        "world_dir": str(stack.world_dir), "server": "127.0.0.1:1"}))
    argv = ["abtest", "run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--server", stack.server.address,
            "--redis", stack.redis.url, "--no-plots", "--no-progress"]
    assert seedrec_main([*argv, "--token", TOKEN]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["run"]["failed_total"] == 0 and report["run"]["versions"] == {"control": "1", "treatment": "1"}
    assert (tmp_path / "out" / "report.md").read_text().startswith("# A/B test report: cli")
    assert seedrec_main([*argv, "--token", "wrong"]) == 2  # PERMISSION_DENIED, printed as one line


def test_build_tables_sums_per_user_day_and_domain(stack: Stack) -> None:
    cfg = _config(stack, "toy", ("1", "1"), users=60, days=2, pre_days=1)
    tables, truth = simulate_offline(cfg, stack.world, oracle=True)
    u, d, dom = tables.users, tables.daily, tables.by_domain
    for col in ("impressions", "clicks", "purchases", "revenue"):
        assert d.groupby("user_id")[col].sum().to_numpy() == pytest.approx(u[col].to_numpy())
        assert dom.groupby("user_id")[col].sum().to_numpy() == pytest.approx(u[col].to_numpy())
        assert dom["pre_" + col].sum() <= u["pre_" + col].sum() + 1e-9  # rows: domains used in the experiment
    assert truth is not None and all(v == {"treatment": 0.0} for v in truth.values())
    again, _ = simulate_offline(cfg, stack.world)
    pd.testing.assert_frame_equal(tables.users, again.users)
    with pytest.raises(DataError, match="no request was served"):
        build_tables(_empty(cfg, stack.world), arms=["control", "treatment"])


def _empty(cfg: ABTestConfig, world: World) -> Any:
    from abtest.harness import Exposures

    return Exposures.concat([], slate_size=cfg.slate_size, arms=2, oracle=False)
