"""End to end with the real pieces: synthetic world → samples → Trainer (LMN) → export → memory
service → scoring server → push → Score, checked against the offline model on the same samples.

One trained run is shared by every test of the module (≈ 15 s for the whole module on 2 cores).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from feature_pipeline.build_config import BuildConfig
from feature_pipeline.configs import WorldConfig
from feature_pipeline.samples import build_samples
from feature_pipeline.spec import FeatureSpec
from feature_pipeline.transform import FeatureTransform
from feature_pipeline.world import synth
from memory_service.cli import load_main
from memory_service.configs import MemoryServiceConfig
from memory_service.server import BackgroundServer as MemoryServer
from recsys.configs import model_config_from_dict
from recsys.models.registry import build_model
from recsys.train.checkpoint import CheckpointManager, load_model_weights
from recsys.train.cli import run_training
from recsys.train.run_config import run_config_from_dict
from seedrec.cli import main as seedrec_main
from seedrec.redis_server import EmbeddedRedis
from serving.client import AdminClient, RankingClient
from serving.configs import MemoryConfig, ServerConfig
from serving.server import BackgroundServer

pytestmark = pytest.mark.integration
TOKEN, MEM_TOKEN = "adm", "mem"
MODEL = {"kind": "lmn", "n_sub": 8, "k": 4, "d_key": 8, "d_value": 8, "attention_hidden": [8], "tower_hidden": [8]}


@dataclass
class World:
    root: Path
    samples: Path
    run: Path
    repo: Path
    checkpoints: dict[str, Path]  # version -> the checkpoint it was exported from


def _train(samples: Path, run: Path, steps: int) -> Path:
    cfg = run_config_from_dict({
        "task": {"kind": "ranking", "data_dir": str(samples), "batch_size": 64},
        "model": MODEL,
        "train": {"max_steps": steps, "out_dir": str(run), "progress_bar": False, "tensorboard": False,
                  "final_splits": ["test"], "log_every": 1000, "seed": 0},
    })
    run_training(cfg)
    latest = CheckpointManager(run).latest()
    assert latest is not None
    return latest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e")
    synth(WorldConfig(users=60, items=80, days=3, domains=2, categories=5, clusters=2, seed=1), root / "logs", progress=False)
    build_samples(root / "logs", root / "samples",
                  BuildConfig(seq_len=6, valid_days=1, test_days=1, min_freq=1, embedding_dim=8, progress=False))
    w = World(root=root, samples=root / "samples", run=root / "run", repo=root / "outbox", checkpoints={})
    w.checkpoints["1"] = _train(w.samples, w.run, 4)
    assert seedrec_main(["export", "--checkpoint", str(w.run), "--out", str(w.repo), "--name", "lmn"]) == 0  # -> lmn/1
    w.checkpoints["2"] = _train(w.samples, w.run, 8)  # resumes the run: 4 more steps
    assert seedrec_main(["export", "--checkpoint", str(w.run), "--out", str(w.repo), "--name", "lmn"]) == 0  # -> lmn/2
    return w


@dataclass
class Stack:
    redis: EmbeddedRedis
    memory: MemoryServer
    server: BackgroundServer


@pytest.fixture(scope="module")
def stack(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with EmbeddedRedis() as redis_server:
        memory = MemoryServer(MemoryServiceConfig(redis_url=redis_server.url, token=MEM_TOKEN, grace_s=0.5)).start()
        for v in ("1", "2"):
            assert load_main(["--package", str(world.repo / "lmn" / v), "--server", memory.address, "--token", MEM_TOKEN]) == 0
        cfg = ServerConfig(repository=str(tmp_path_factory.mktemp("served")), admin_token=TOKEN, grace_s=1.0,
                           memory=MemoryConfig(address=memory.address, deadline_ms=300, breaker_failures=2, breaker_reset_s=0.2,
                                               cache_rows=0))  # every read a ReadWeighted call (the cache is tested with the stand-in)
        server = BackgroundServer(cfg).start()  # starts empty: the model arrives by push
        try:
            yield Stack(redis=redis_server, memory=memory, server=server)
        finally:
            server.stop()
            memory.stop()


def _test_request(world: World, index: int = 0) -> pa.Table:
    """The sample rows of one impression request of the test split."""
    table = pq.read_table(sorted((world.samples / "test").glob("*.parquet"))[0])
    rid = table.column("request_id")[index * 10].as_py()
    return table.filter(pc.equal(table.column("request_id"), rid))


def _request_kwargs(rows: pa.Table) -> dict[str, Any]:
    r = rows.slice(0, 1).to_pylist()[0]
    history = [{"item_id": i, "category_id": c, "domain": d, "action": a, "ts_ms": int(ts.timestamp() * 1000)}
               for i, c, d, a, ts in zip(r["hist_item_id"], r["hist_category_id"], r["hist_domain"], r["hist_action"], r["hist_ts"])]
    return dict(user_id=r["user_id"], domain=r["domain"], item_ids=rows.column("item_id").to_numpy(),
                features={k: r[k] for k in ("hour", "device", "age_bucket", "gender", "activity")},
                candidate_features={"category_id": rows.column("category_id").to_numpy(),
                                    "price": rows.column("price").to_numpy().astype(np.float64)},
                history=history)


def _offline_scores(world: World, version: str, rows: pa.Table) -> np.ndarray:
    """The trained model, straight from its DCP checkpoint (no export, no serving code), on the sample rows."""
    transform = FeatureTransform.from_spec_dir(world.samples)
    model = build_model(model_config_from_dict(MODEL), FeatureSpec.load(world.samples), device="cpu")
    load_model_weights(world.checkpoints[version], model=model)
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(transform.to_batch(rows)).logits).numpy()


def test_served_scores_equal_the_offline_model(world: World, stack: Stack) -> None:
    manifest = json.loads((world.repo / "lmn" / "1" / "manifest.json").read_text())
    assert manifest["kind"] == "lmn" and manifest["memory"]["rows"] == 64 and "test/click/auc" in manifest["metrics"]
    with AdminClient(stack.server.address, token=TOKEN) as ac:
        assert ac.health("seedrec.v1.RankingService") == "NOT_SERVING"  # started empty
        assert ac.push(world.repo / "lmn" / "1", activate=True).activated
        assert ac.health("seedrec.v1.RankingService") == "SERVING"
    for index in (0, 1, 2):
        rows = _test_request(world, index)
        with RankingClient(stack.server.address) as rc:
            got = rc.score(**_request_kwargs(rows))
        assert (got.model, got.version, got.memory_fallback, got.history_source) == ("lmn", "1", False, "request")
        want = _offline_scores(world, "1", rows)
        for j, head in enumerate(("click", "purchase")):
            np.testing.assert_allclose(got.heads[head], want[:, j], atol=1e-5, rtol=0)


def test_score_command_prints_json(world: World, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert seedrec_main(["score", "--server", stack.server.address, "--user", "3", "--domain", "1", "--items", "1,2,3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == [1, 2, 3] and len(out["scores"]["click"]) == 3 and out["model"] == "lmn"


def test_lmn_survives_a_memory_service_outage(world: World, stack: Stack) -> None:
    rows = _test_request(world, 3)
    kw = _request_kwargs(rows)
    with RankingClient(stack.server.address) as rc:
        up = rc.score(**kw)
        assert not up.memory_fallback
        port = stack.memory.port
        stack.memory.stop()
        down = [rc.score(**kw) for _ in range(5)]
        assert all(d.memory_fallback for d in down)  # flagged, never an error
        np.testing.assert_allclose(down[-1].heads["click"], up.heads["click"], atol=1e-5)  # the packaged table: exact
        stack.memory = MemoryServer(MemoryServiceConfig(redis_url=stack.redis.url, token=MEM_TOKEN, port=port, grace_s=0.5)).start()
        deadline = time.monotonic() + 15
        while rc.score(**kw).memory_fallback:
            assert time.monotonic() < deadline, "scoring did not go back to the memory service"
            time.sleep(0.05)


def test_push_v2_under_traffic_then_rollback(world: World, stack: Stack) -> None:
    kw = _request_kwargs(_test_request(world, 4))
    versions: list[str] = []
    calls: list[tuple[float, float, str]] = []  # (sent, answered, version)
    errors: list[Exception] = []
    stop = threading.Event()

    def traffic() -> None:
        with RankingClient(stack.server.address, timeout_s=10) as rc:
            while not stop.is_set():
                try:
                    sent = time.monotonic()
                    versions.append(rc.score(**kw).version)
                    calls.append((sent, time.monotonic(), versions[-1]))
                except Exception as e:  # noqa: BLE001  recorded: any error fails the test
                    errors.append(e)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        while len(versions) < 5 and not errors:
            time.sleep(0.01)
        with AdminClient(stack.server.address, token=TOKEN) as ac:
            ac.push(world.repo / "lmn" / "2", activate=True)
            t_swap = time.monotonic()
            n_swap = len(versions)
            rows = _test_request(world, 5)
            with RankingClient(stack.server.address) as rc:  # v2 answers what its own checkpoint says
                got = rc.score(**_request_kwargs(rows))
            assert got.version == "2" and not got.memory_fallback
            np.testing.assert_allclose(got.heads["click"], _offline_scores(world, "2", rows)[:, 0], atol=1e-5, rtol=0)
            while len(versions) < n_swap + 10 and not errors:
                time.sleep(0.01)
            t_rollback = time.monotonic()
            assert ac.rollback("lmn").active_version == "1"
            t_back = time.monotonic()
            n_back = len(versions)
            while len(versions) < n_back + 5 and not errors:
                time.sleep(0.01)
    finally:
        stop.set()
        t.join(timeout=30)
    assert errors == [] and set(versions) == {"1", "2"}
    assert {v for s, r, v in calls if s > t_swap and r < t_rollback} == {"2"}
    assert {v for s, r, v in calls if s > t_back} == {"1"}
