"""Benchmark: Ray Train scaling of the generic Trainer (1 vs 2 workers) and the Ray Data input path
against reading the same parquet with pyarrow directly.

Two measurements on one synthetic sample set, one private local Ray:

    training   ``recsys.train.ray_launch.launch`` of the same LMN run with 1 and with 2 Ray Train
               workers (gloo on CPU, DMP, Ray Data input, B rows per worker per step: weak scaling).
               Throughput is steady-state: samples and step time between the first and the last
               checkpoint (``trainer_state.json``), so worker start-up, planning and Ray Data's
               pipeline start (several seconds on 2 cores) are left out. ratio = 2 workers / 1.
    input      rows/s of the train split as ``pa.Table`` batches, one consumer (the driver):
               ``ray.data.read_parquet(...).iter_batches(batch_format="pyarrow")`` (cold: the first
               pass, with task start-up; warm: a second pass) against
               ``pyarrow.parquet.ParquetFile.iter_batches``, batches of 4096 rows, on the train rows
               repeated to 1M rows (200k with --quick) in 8 files; and the same two with the one
               transform (``FeatureTransform.to_batch``), i.e. the Ray Data path vs a local pyarrow
               loader as the training workers see them. ratio = Ray Data (warm, raw) / pyarrow (raw).

Run: ``seedrec bench ray_scaling [--quick]``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import BenchResult

__all__ = ["run"]

logger = logging.getLogger(__name__)

_MODEL: dict[str, Any] = {
    "kind": "lmn", "embedding": {"dim": 16}, "n_sub": 64, "k": 8, "d_key": 16, "d_value": 16,
    "attention_hidden": [32], "tower_hidden": [64, 32],
}


def _samples(root: Path, *, users: int, items: int, days: int) -> Path:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth

    synth(WorldConfig(users=users, items=items, days=days, domains=2, seed=0), root / "logs", progress=False)
    build_samples(root / "logs", root / "samples", BuildConfig(seq_len=20, min_freq=1, progress=False))
    return root / "samples"


def _steady_throughput(run_dir: Path) -> dict[str, float]:
    """Samples/s between the first and the last checkpoint of a run (start-up excluded)."""
    from recsys.train.checkpoint import CheckpointManager, read_trainer_state

    found = CheckpointManager(run_dir).checkpoints()
    first, last = read_trainer_state(found[0]), read_trainer_state(found[-1])
    samples = last["samples"] - first["samples"]
    seconds = last["train_time_s"] - first["train_time_s"]
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {
        "samples_per_s": samples / max(seconds, 1e-9),
        "steps_measured": float(last["step"] - first["step"]),
        "session_samples_per_s": float(summary["samples_per_s"]),  # the Trainer's own figure, start-up included
        "wall_time_s": float(summary["wall_time_s"]),
        "test_auc": float(summary["metrics"].get("test/click/auc", float("nan"))),
    }


def _train(samples: Path, out: Path, *, workers: int, steps: int, batch: int) -> dict[str, float]:
    from recsys.train.ray_launch import launch
    from recsys.train.run_config import run_config_from_dict

    every = max(steps // 6, 1)
    run = run_config_from_dict({
        "task": {"kind": "ranking", "data_dir": str(samples), "batch_size": batch, "heads": {"click": 1.0, "purchase": 0.5}},
        "model": _MODEL,
        "train": {"max_steps": steps, "lr": 0.003, "embedding_lr": 0.05, "warmup_steps": 5, "log_every": every,
                  "checkpoint_every": every, "keep_checkpoints": 20, "final_splits": ["test"], "out_dir": str(out),
                  "progress_bar": False, "tensorboard": False, "dist_timeout_s": 120, "seed": 0},
    })
    launch(run, workers=workers)
    return _steady_throughput(out)


def _big_split(samples: Path, out: Path, *, rows: int, files: int) -> Path:
    """A copy of ``samples`` whose train split is its train rows repeated to about ``rows`` rows in
    ``files`` parquet files (the input measurement needs volume, not a valid world)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.train.ray_data import split_dir, split_files

    src = split_files(samples, "train")
    table = pa.concat_tables([pq.read_table(f) for f in src])
    shutil.copytree(samples, out, ignore=shutil.ignore_patterns("*.parquet"))
    train = split_dir(out, "train")
    per_file = max(rows // files, 1)
    reps = -(-per_file // table.num_rows)
    chunk = pa.concat_tables([table] * reps).slice(0, per_file)
    for i in range(files):
        pq.write_table(chunk, train / f"part-{i:03d}.parquet", row_group_size=16_384)
    return out


def _input_rates(samples: Path, *, batch: int) -> dict[str, float]:
    import pyarrow.parquet as pq

    from feature_pipeline.transform import FeatureTransform
    from recsys.train.ray_data import read_split, split_files, split_rows

    transform = FeatureTransform.from_spec_dir(samples)
    files = split_files(samples, "train", transform=transform)
    columns = [c for c in transform.columns if c in set(pq.ParquetFile(files[0]).schema_arrow.names)]

    def pyarrow_pass(convert: bool) -> float:
        t0, rows = time.perf_counter(), 0
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=columns):
                rows += rb.num_rows
                if convert:
                    transform.to_batch(rb)
        return rows / (time.perf_counter() - t0)

    ds = read_split(samples, "train", transform=transform)

    def ray_pass(convert: bool) -> tuple[float, float, float]:
        """(rows/s overall, seconds to the first batch, rows/s after the first batch)."""
        t0, rows, first, t1 = time.perf_counter(), 0, 0, 0.0
        for t in ds.iter_batches(batch_size=batch, batch_format="pyarrow"):
            if not rows:
                t1, first = time.perf_counter(), t.num_rows
            rows += t.num_rows
            if convert:
                transform.to_batch(t)
        t2 = time.perf_counter()
        return rows / (t2 - t0), t1 - t0, (rows - first) / max(t2 - t1, 1e-9)

    cold, cold_start, _ = ray_pass(False)
    warm, warm_start, streaming = ray_pass(False)
    converted, _, _ = ray_pass(True)
    return {
        "ray_data_cold_rows_per_s": cold,
        "ray_data_cold_first_batch_s": cold_start,
        "ray_data_rows_per_s": warm,
        "ray_data_first_batch_s": warm_start,
        "ray_data_streaming_rows_per_s": streaming,
        "pyarrow_rows_per_s": pyarrow_pass(False),
        "ray_data_to_batch_rows_per_s": converted,
        "pyarrow_to_batch_rows_per_s": pyarrow_pass(True),
        "input_rows": float(split_rows(files)),
    }


def run(*, quick: bool = False) -> BenchResult:
    """Measures 1 vs 2 Ray Train workers and Ray Data vs pyarrow input on this machine.

    Args:
        quick: a small world and few steps (about two minutes on 2 cores) instead of the default.
    """
    import ray

    from recsys.train.ray_launch import start_local_ray

    users, items, days = (400, 200, 3) if quick else (2000, 500, 4)
    steps, batch = (36, 256) if quick else (100, 512)
    input_rows = 200_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as tmp:
        root = Path(tmp)
        samples = _samples(root, users=users, items=items, days=days)
        start_local_ray(num_cpus=3)  # 2 workers + 1 logical CPU for Ray Data's read tasks
        try:
            inputs = _input_rates(_big_split(samples, root / "big", rows=input_rows, files=8), batch=4096)
            one = _train(samples, root / "w1", workers=1, steps=steps, batch=batch)
            two = _train(samples, root / "w2", workers=2, steps=steps, batch=batch)
        finally:
            ray.shutdown()
    cpus = os.cpu_count() or 1
    scaling = two["samples_per_s"] / max(one["samples_per_s"], 1e-9)
    input_ratio = inputs["ray_data_rows_per_s"] / max(inputs["pyarrow_rows_per_s"], 1e-9)
    notes = (
        f"{cpus} CPU cores, shared with other jobs; each Ray worker reserves 1 CPU and runs torch with 1 thread, "
        f"Ray Data's read tasks get 1 more logical CPU. 2 workers / 1 = {scaling:.2f}x samples/s (ideal 2x "
        f"for weak scaling): on {cpus} cores the 2 workers, the Ray Data tasks and the gloo all-to-alls of "
        "the sharded tables compete for the same cores, so the gain is bounded by the cores, not by Ray. "
        f"Ray Data delivers {input_ratio:.2f}x the rows/s of a plain pyarrow loop over {inputs['input_rows']:,.0f} rows "
        f"in one consumer: its first batch comes after {inputs['ray_data_first_batch_s']:.1f} s warm "
        f"({inputs['ray_data_cold_first_batch_s']:.1f} s cold: task processes start), then it streams at "
        f"{inputs['ray_data_streaming_rows_per_s']:,.0f} rows/s; in training the first step of every epoch waits for that start-up (the "
        "steady-state samples/s above leave it out). Both paths are far above what a training step consumes here, "
        "and the transform to a Batch (to_batch) costs more than either read. On GPUs (one per worker, nccl) "
        "the step gets ~10-100x faster and the per-worker to_batch on the CPU becomes the limit: give the "
        "workers more CPUs (cpus_per_worker) and move the transform into Ray Data map_batches on "
        "separate CPU nodes so it scales apart from the GPUs."
    )
    return BenchResult(
        name="ray_scaling",
        params={"users": users, "items": items, "days": days, "steps": steps, "batch_per_worker": batch,
                "model": _MODEL, "quick": quick, "cpus": cpus},
        results={
            "samples_per_s_2_workers": two["samples_per_s"],
            "samples_per_s_1_worker": one["samples_per_s"],
            "scaling_2_vs_1": scaling,
            "session_samples_per_s_2_workers": two["session_samples_per_s"],
            "session_samples_per_s_1_worker": one["session_samples_per_s"],
            "wall_time_s_2_workers": two["wall_time_s"],
            "wall_time_s_1_worker": one["wall_time_s"],
            "test_auc_2_workers": two["test_auc"],
            "test_auc_1_worker": one["test_auc"],
            "ray_data_rows_per_s": inputs["ray_data_rows_per_s"],
            "ray_data_first_batch_s": inputs["ray_data_first_batch_s"],
            "ray_data_streaming_rows_per_s": inputs["ray_data_streaming_rows_per_s"],
            "ray_data_cold_rows_per_s": inputs["ray_data_cold_rows_per_s"],
            "ray_data_cold_first_batch_s": inputs["ray_data_cold_first_batch_s"],
            "ray_data_to_batch_rows_per_s": inputs["ray_data_to_batch_rows_per_s"],
            "input_rows": inputs["input_rows"],
        },
        peer={
            "samples_per_s_2_workers": one["samples_per_s"],
            "ray_data_rows_per_s": inputs["pyarrow_rows_per_s"],
            "ray_data_streaming_rows_per_s": inputs["pyarrow_rows_per_s"],
            "ray_data_to_batch_rows_per_s": inputs["pyarrow_to_batch_rows_per_s"],
        },
        ratio=input_ratio,
        notes=notes,
    )
