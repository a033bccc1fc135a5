"""Tests of the Ray launcher's driver-side validation and of the Ray Data batch path, without Ray
(recsys/train/ray_launch.py, recsys/train/ray_data.py). Real Ray runs are in
tests/integration/test_ray_train.py."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys.tasks.ranking import RankingTaskConfig
from recsys.train import ray_launch
from recsys.train.ray_data import ShardBatches, ray_train_batches, split_files, split_rows
from recsys.train.ray_launch import (
    FaultInjection,
    LaunchErrorType,
    RayCapacityError,
    RayLaunchConfig,
    check_capacity,
    prepare_run,
    resolve_use_gpu,
)
from recsys.train.run_config import RunConfig, run_config_from_dict
from seedrec.errors import ConfigError, DataError, SeedrecError, ServiceUnavailableError

MODEL: dict[str, Any] = {"kind": "lmn", "embedding": {"dim": 4}, "n_sub": 8, "k": 2, "d_key": 4, "d_value": 4,
                         "attention_hidden": [8], "tower_hidden": [8]}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth

    root = tmp_path_factory.mktemp("ray_unit")
    synth(WorldConfig(users=60, items=40, days=4, domains=2, categories=5, clusters=2, impressions_per_user_day=4.0),
          root / "logs", progress=False)
    build_samples(root / "logs", root / "samples", BuildConfig(seq_len=4, min_freq=1, row_group_size=128, progress=False))
    return root / "samples"


def make_run(samples: Path | str, out: Path | None, **train: Any) -> RunConfig:
    return run_config_from_dict({
        "task": {"kind": "ranking", "data_dir": str(samples), "batch_size": 32},
        "model": MODEL,
        "train": {"max_steps": 4, "out_dir": str(out) if out else None, **train},
    })


# ---- configs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"workers": 0}, "`workers` = 0; must be an int ≥ 1"),
        ({"workers": True}, "`workers` = True"),
        ({"cpus_per_worker": 0}, "`cpus_per_worker` = 0; must be > 0"),
        ({"data_cpus": -1}, "`data_cpus` = -1; must be ≥ 0"),
        ({"max_failures": -2}, "`max_failures` = -2; must be an int ≥ -1"),
        ({"timeout_s": 0}, "`timeout_s` = 0; must be > 0 seconds"),
        ({"address": " "}, "`address` is empty"),
    ],
)
def test_launch_config_rejects(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RayLaunchConfig(**kw)


def test_fault_injection_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="need rank ≥ 0 and step ≥ 1"):
        FaultInjection(rank=0, step=0)


def test_ranking_batch_source_is_validated() -> None:
    assert RankingTaskConfig(data_dir="x").batch_source == "local"
    with pytest.raises(ConfigError, match="`task.batch_source` = 'spark'; valid values: local, ray_data"):
        RankingTaskConfig(data_dir="x", batch_source="spark")  # type: ignore[arg-type]  # the wrong value on purpose


# ---- GPU choice and capacity ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("use_gpu", "device", "gpus", "want"),
    [
        (None, None, 0, False),
        (None, None, 4, True),
        (None, "cpu", 4, False),
        (None, "cuda", 0, True),  # then the capacity check refuses it with a clear message
        (True, None, 0, True),
        (False, None, 4, False),
    ],
)
def test_resolve_use_gpu(use_gpu: bool | None, device: str | None, gpus: float, want: bool) -> None:
    assert resolve_use_gpu(RayLaunchConfig(use_gpu=use_gpu), device=device, available_gpus=gpus) is want


def test_resolve_use_gpu_contradictions() -> None:
    with pytest.raises(ConfigError, match="`use_gpu` = True but `train.device` = 'cpu'"):
        resolve_use_gpu(RayLaunchConfig(use_gpu=True), device="cpu", available_gpus=1)
    with pytest.raises(ConfigError, match="`use_gpu` = False but `train.device` = 'cuda'"):
        resolve_use_gpu(RayLaunchConfig(use_gpu=False), device="cuda", available_gpus=1)


def test_capacity() -> None:
    check_capacity(2, cpus_per_worker=1, use_gpu=False, resources={"CPU": 2.0}, where="here")
    check_capacity(4, cpus_per_worker=0.5, use_gpu=True, resources={"CPU": 2.0, "GPU": 4.0}, where="here")
    with pytest.raises(RayCapacityError, match=r"3 workers × 1 CPU = 3 CPUs, but here has 2: \(1\) use `--workers 2`") as e:
        check_capacity(3, cpus_per_worker=1, use_gpu=False, resources={"CPU": 2.0}, where="here")
    assert e.value.error_type is LaunchErrorType.INSUFFICIENT_CPUS and isinstance(e.value, ConfigError)
    assert "\n" not in str(e.value)  # the CLI prints it as one line
    with pytest.raises(RayCapacityError, match="2 workers need one GPU each, but the cluster has 1") as e:
        check_capacity(2, cpus_per_worker=1, use_gpu=True, resources={"CPU": 8.0, "GPU": 1.0}, where="the cluster")
    assert e.value.error_type is LaunchErrorType.INSUFFICIENT_GPUS


# ---- driver-side validation (no Ray) ----------------------------------------------------------------------
def test_prepare_run_switches_ranking_to_ray_data(samples: Path, tmp_path: Path) -> None:
    run = make_run(samples, tmp_path / "run")
    prepared = prepare_run(run, RayLaunchConfig())
    assert prepared.task["batch_source"] == "ray_data" and "batch_source" not in run.task  # the caller's run is untouched
    assert prepared.train == dataclasses.replace(run.train, progress_bar=False)  # no tqdm through Ray's log forwarding
    assert "batch_source" not in prepare_run(run, RayLaunchConfig(ray_data=False)).task


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"out": None}, ConfigError, "`train.out_dir` is unset"),
        ({"data": "/nonexistent/samples"}, DataError, "`task.data_dir` = /nonexistent/samples: no such folder"),
        ({"sharding_types": ["diagonal"]}, ConfigError, "unknown sharding type 'diagonal'"),
        ({"sharding": {"nope": "row_wise"}}, ConfigError, "no embedding table 'nope'"),
        ({"embedding_optimizer": "adam", "device": "cpu"}, ConfigError, "'adam' has no FBGEMM CPU kernel"),
        ({"final_splits": ["holdout"]}, ConfigError, "split 'holdout'"),
    ],
)
def test_prepare_run_refuses_bad_configs(samples: Path, tmp_path: Path, change: dict[str, Any], error: type[Exception],
                                         match: str) -> None:
    change = dict(change)
    out = change.pop("out", tmp_path / "run")
    data = change.pop("data", samples)
    with pytest.raises(error, match=match):
        prepare_run(make_run(data, out, **change), RayLaunchConfig())


def test_prepare_run_refuses_an_epoch_without_a_batch(samples: Path, tmp_path: Path) -> None:
    d = make_run(samples, tmp_path / "run").to_dict()
    d["task"]["batch_size"] = 10**6
    with pytest.raises(DataError, match=r"training rows per worker make no batch of 1000000 with 4 workers"):
        prepare_run(run_config_from_dict(d), RayLaunchConfig(workers=4))


def test_launch_refuses_before_starting_ray(samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_launch, "_local_resources", lambda: {"CPU": 2.0, "GPU": 0.0})
    with pytest.raises(RayCapacityError, match="5 workers × 1 CPU = 5 CPUs, but this machine has 2"):
        ray_launch.launch(make_run(samples, tmp_path / "run"), workers=5)
    with pytest.raises(ConfigError, match="unknown sharding type"):
        ray_launch.launch(make_run(samples, tmp_path / "run", sharding_types=["diagonal"]), workers=2)
    assert not ray.is_initialized()


def test_unreachable_address_fails_fast() -> None:
    from recsys.train.distributed import free_port

    port = free_port()  # nobody listens there
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ServiceUnavailableError, match=f"no Ray cluster answers at {address}"):
            ray_launch._check_reachable(address, timeout_s=2.0)
    ray_launch._check_reachable("auto")  # left to Ray


def test_cli_passes_address_to_the_launcher(samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.train.cli import train_main

    seen: dict[str, Any] = {}

    def fake_launch(run: RunConfig, *, workers: int, address: str | None = None) -> dict[str, float]:
        seen.update(workers=workers, address=address, out=run.train.out_dir)
        return {}

    monkeypatch.setattr(ray_launch, "launch", fake_launch)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(make_run(samples, None).to_dict()))
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "r"), "--address", "ray://head:10001"]) == 0
    assert seen == {"workers": 1, "address": "ray://head:10001", "out": str(tmp_path / "r")}  # --address implies Ray
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "r"), "--workers", "3"]) == 0
    assert seen["workers"] == 3 and seen["address"] is None


# ---- worker-side helpers ---------------------------------------------------------------------------------
def test_fatal_error_is_replayed_for_the_same_launch_only(tmp_path: Path) -> None:
    ray_launch._record_fatal(tmp_path, "launch-1", DataError("the training loss is nan at step 3"))
    again = ray_launch._recorded_fatal(tmp_path, "launch-1")
    assert type(again) is DataError and str(again) == "the training loss is nan at step 3"
    assert ray_launch._recorded_fatal(tmp_path, "launch-2") is None
    err = ray_launch._fatal_or_failure(tmp_path, "launch-2", RuntimeError("Worker group failed\nActorDiedError: gone"), 2)
    assert isinstance(err, ray_launch.RayTrainingError) and isinstance(err, SeedrecError)
    assert "failed after 2 restart(s): Worker group failed … ActorDiedError: gone" in str(err)


def test_fault_injecting_task_delegates(tmp_path: Path) -> None:
    class Inner:
        def splits(self) -> list[str]:
            return ["train"]

        def step(self, model: Any, batch: Any) -> str:
            return f"step {batch}"

    task = ray_launch._FaultInjectingTask(Inner(), fault=FaultInjection(rank=1, step=2), rank=0, out_dir=tmp_path)
    assert task.splits() == ["train"] and [task.step(None, i) for i in range(3)] == ["step 0", "step 1", "step 2"]
    assert not (tmp_path / ".ray_fault_injected").exists()  # rank 0 is not the victim


# ---- Ray Data batches: the same Batch as the local loader -------------------------------------------------
class FakeShard:
    """A ``DataIterator`` stand-in: the rows of one table, batched as ``iter_batches`` does."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.calls: list[dict[str, Any]] = []

    def iter_batches(self, **kw: Any) -> Any:
        self.calls.append(kw)
        B, n = kw["batch_size"], self.table.num_rows
        stop = n - n % B if kw["drop_last"] else n
        for i in range(0, stop, B):
            yield self.table.slice(i, min(B, stop - i))


def test_shard_batches_match_the_local_transform(samples: Path) -> None:
    from feature_pipeline.loader import SampleLoader
    from feature_pipeline.transform import FeatureTransform

    transform = FeatureTransform.from_spec_dir(samples)
    files = split_files(samples, "train", transform=transform)
    rows = split_rows(files)
    assert rows == sum(pq.ParquetFile(f).metadata.num_rows for f in files) > 0
    table = pa.concat_tables([pq.read_table(f, columns=transform.columns) for f in files])
    shard = FakeShard(table)
    batches = ShardBatches(shard, transform=transform, batch_size=32, rows_per_rank=rows // 2, drop_last=True)
    local = SampleLoader(samples, "train", batch_size=32, world_size=2, rank=0, drop_last=True, transform=transform)
    assert len(batches) == len(local) == (rows // 2) // 32  # the same epoch length on every rank as locally
    got = list(batches)
    assert shard.calls[0]["batch_format"] == "pyarrow" and shard.calls[0]["local_shuffle_buffer_size"] is None
    want = transform.to_batch(table.slice(0, 32))
    assert got[0].batch_size == 32
    torch.testing.assert_close(got[0].labels, want.labels)
    torch.testing.assert_close(got[0].sparse.values(), want.sparse.values())
    torch.testing.assert_close(got[0].sequence.lengths(), want.sequence.lengths())
    keep = ShardBatches(shard, transform=transform, batch_size=32, rows_per_rank=33, drop_last=False)
    assert len(keep) == 2 == math.ceil(33 / 32)


def test_shard_batches_refuse_too_few_rows(samples: Path) -> None:
    from feature_pipeline.transform import FeatureTransform

    with pytest.raises(DataError, match="10 training rows per worker make no batch of 32"):
        ShardBatches(FakeShard(pa.table({})), transform=FeatureTransform.from_spec_dir(samples), batch_size=32,
                     rows_per_rank=10)


def test_ray_data_batches_outside_ray_train_is_a_config_error(samples: Path) -> None:
    from feature_pipeline.transform import FeatureTransform

    with pytest.raises(ConfigError, match="'ray_data' needs a Ray Train worker"):
        ray_train_batches(samples, transform=FeatureTransform.from_spec_dir(samples), batch_size=8, drop_last=True,
                          rank=0, world_size=1, epoch=0)


def test_split_files_errors(samples: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        split_files(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="split 'holdout' is not in"):
        split_files(samples, "holdout")
