"""Ray Train (real local Ray, 2 CPU workers, gloo) running the generic Trainer with TorchRec DMP and
Ray Data input: bad configs fail before Ray starts; 2 workers shard LMN's tables across both ranks
and match a 1-process run; a worker SIGKILLed mid-run is replaced and the run resumes from its last
checkpoint to the same step count and metrics.

One synthetic world, one Ray and one uninterrupted 2-worker run are shared by the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.train.run_config import RunConfig, run_config_from_dict

pytestmark = pytest.mark.integration

WORKERS, BATCH, STEPS, EVERY = 2, 64, 26, 5
MODEL: dict[str, Any] = {
    "kind": "lmn", "embedding": {"dim": 8}, "n_sub": 16, "k": 4, "d_key": 8, "d_value": 8,
    "attention_hidden": [8], "tower_hidden": [16],
}


def _run(samples: Path, out: Path, *, batch_size: int = BATCH, **train: Any) -> RunConfig:
    base: dict[str, Any] = {
        "max_steps": STEPS, "lr": 0.01, "embedding_lr": 0.3, "warmup_steps": 2, "log_every": 13,
        "checkpoint_every": EVERY, "final_splits": ["test"], "out_dir": str(out), "progress_bar": False,
        "tensorboard": False, "dist_timeout_s": 60, "seed": 0,
    }
    return run_config_from_dict({
        "task": {"kind": "ranking", "data_dir": str(samples), "batch_size": batch_size, "heads": {"click": 1.0}},
        "model": MODEL,
        "train": {**base, **train},
    })


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth

    root = tmp_path_factory.mktemp("ray")
    # Few items, many impressions each: 26 steps learn a stable signal (1-process AUC sd ≈ 0.005 over
    # seeds), so the 1-vs-2-worker and interrupted-vs-straight comparisons are not at the mercy of noise.
    synth(WorldConfig(users=200, items=30, days=4, domains=2, categories=5, clusters=3, impressions_per_user_day=15.0),
          root / "logs", progress=False)
    build_samples(root / "logs", root / "samples", BuildConfig(seq_len=4, min_freq=1, row_group_size=256, progress=False))
    return root / "samples"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One private Ray for the module (the launcher reuses an initialised Ray and leaves it up)."""
    import ray

    from recsys.train.ray_launch import start_local_ray

    start_local_ray(num_cpus=WORKERS + 1)  # + 1 logical CPU for Ray Data's read tasks
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def straight(samples: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 2-worker run: its metrics.json."""
    from recsys.train.ray_launch import launch

    out = tmp_path_factory.mktemp("straight") / "run"
    metrics = launch(_run(samples, out), workers=WORKERS)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["metrics"] == pytest.approx(metrics)
    return {"out": out, **summary}


# ---- (c) bad configuration: one clear error, before Ray starts ---------------------------------------
# These run first (file order), before any test asks for the module's Ray.
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"train": {"sharding_types": ["diagonal"]}}, "ConfigError", "unknown sharding type 'diagonal'"),
        ({"train": {"sharding": {"lmn_memory": "table_column_wise"}}}, "ConfigError",
         "'table_column_wise' is not supported for table 'lmn_memory'"),
        ({"task": {"data_dir": "/nonexistent/samples"}}, "DataError", "no such folder"),
        ({"workers": (os.cpu_count() or 1) + 1}, "RayCapacityError", "CPUs, but this machine has"),
    ],
)
def test_bad_config_fails_before_ray_starts(samples: Path, tmp_path: Path, change: dict[str, Any], error: str,
                                            match: str) -> None:
    import ray

    from recsys.train.ray_launch import launch

    run = _run(samples, tmp_path / "run")
    d = run.to_dict()
    for section in ("task", "train"):
        d[section].update(change.get(section, {}))
    with pytest.raises(Exception, match=match) as info:
        launch(run_config_from_dict(d), workers=change.get("workers", WORKERS))
    assert type(info.value).__name__ == error
    assert not ray.is_initialized()  # refused on the driver: no Ray, no workers, no gloo timeout


def test_cli_prints_one_line(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seedrec.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({k: v for k, v in _run(samples, tmp_path / "x").to_dict().items()}))
    code = main(["train", "--config", str(cfg), "--data", str(samples), "--out", str(tmp_path / "run"),
                 "--workers", "2", "train.sharding_types=[diagonal]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "diagonal" in err[0]


# ---- (a) 2 workers: tables sharded over both ranks, AUC close to 1 process ----------------------------
def test_two_workers_shard_tables_and_match_one_process(samples: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    from recsys.train.cli import eval_main, run_training

    out: Path = straight["out"]
    assert straight["world_size"] == WORKERS and straight["steps"] == STEPS
    assert straight["samples"] == STEPS * WORKERS * BATCH
    assert json.loads((out / "config.json").read_text())["task"]["batch_source"] == "ray_data"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["world_size"] == WORKERS
    tables = {k.rsplit(".", 1)[-1]: v for k, v in plan["tables"].items()}
    assert tables["lmn_memory"]["sharding_type"] == "row_wise" and tables["lmn_memory"]["ranks"] == [0, 1]
    holders = [set(v["ranks"]) for v in tables.values()]
    assert set().union(*holders) == {0, 1}
    assert any(h == {0} for h in holders) and any(h == {1} for h in holders)  # some tables live on one rank only
    latest = out / "checkpoints" / f"step_{STEPS:08d}"
    assert sorted(p.name for p in latest.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    # `seedrec eval` in 1 process on the 2-rank checkpoint reproduces the run's final metrics: the
    # dense replicas stayed in sync (DDP all-reduce) and DCP reshards the tables. Only BatchNorm's
    # running statistics are rank-local (DMP's DDP does not broadcast buffers), hence not exact.
    assert eval_main(["--run", str(out), "--split", "test"]) == 0
    again = json.loads((out / "eval_test.json").read_text())["metrics"]
    assert again["test/click/auc"] == pytest.approx(straight["metrics"]["test/click/auc"], abs=2e-3)
    assert again["test/click/logloss"] == pytest.approx(straight["metrics"]["test/click/logloss"], abs=2e-3)

    # 1 process, same data, seed and global batch (2 × 64 rows per step), local SampleLoader.
    single = run_training(_run(samples, tmp_path / "single", batch_size=WORKERS * BATCH, checkpoint_every=0,
                               save_final=False))
    ray_m = straight["metrics"]
    assert 0.5 < ray_m["test/click/auc"] < 1.0
    assert abs(ray_m["test/click/auc"] - single["test/click/auc"]) < 0.03
    assert abs(ray_m["test/click/logloss"] - single["test/click/logloss"]) < 0.02


# ---- (b) a lost worker: restart from the last checkpoint, nothing lost ---------------------------------
def test_lost_worker_resumes_from_last_checkpoint(samples: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    from recsys.train.ray_launch import FaultInjection, RayLaunchConfig, launch

    out = tmp_path / "run"
    kill_at = 18  # rank 1 dies during step 18; the last checkpoint is step 15
    metrics = launch(_run(samples, out), workers=WORKERS, config=RayLaunchConfig(max_failures=1),
                     fault=FaultInjection(rank=1, step=kill_at))
    fault = json.loads((out / ".ray_fault_injected").read_text())
    assert fault["rank"] == 1 and fault["step"] == kill_at
    summary = json.loads((out / "metrics.json").read_text())
    last_ckpt = (kill_at - 1) // EVERY * EVERY
    assert summary["resumed_from"].endswith(f"step_{last_ckpt:08d}")
    assert kill_at - 1 - last_ckpt < EVERY  # steps recomputed after the restart: fewer than one interval
    assert summary["steps"] == STEPS and summary["samples"] == STEPS * WORKERS * BATCH  # none lost or counted twice
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))][-1] == f"step_{STEPS:08d}"
    # Ray knows the final checkpoint (reported from rank 0, registered in place).
    snapshot = json.loads((out / "checkpoint_manager_snapshot.json").read_text())
    assert snapshot["latest_checkpoint_result"]["checkpoint_dir_name"] == f"checkpoints/step_{STEPS:08d}"
    ref = straight["metrics"]
    assert abs(metrics["test/click/auc"] - ref["test/click/auc"]) < 0.03
    assert abs(metrics["test/click/logloss"] - ref["test/click/logloss"]) < 0.01
