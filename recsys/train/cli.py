"""``seedrec train`` and ``seedrec eval``: parse, build the configs and the task, call the Trainer.

``seedrec.cli`` dispatches ``train`` / ``eval`` here with the remaining arguments; errors of the
:class:`~seedrec.errors.SeedrecError` hierarchy propagate (the top-level CLI prints them as one line).

Commands::

    seedrec train --config configs/train/lmn.yaml --data samples/ --out runs/lmn [key=value ...]
    seedrec train --config ... --data ... --out ... --workers 2        # N processes
    seedrec train --config ... --data ... --out ... --workers 8 --address auto   # an existing Ray cluster
    seedrec train --config ... --data ... --out runs/lmn --resume      # must continue a checkpoint
    seedrec eval --run runs/lmn --split test [--data samples/]         # latest checkpoint's metrics

``--workers N > 1`` (or any ``--address``) uses ``recsys.train.ray_launch.launch(run, workers=N,
address=...)`` when that module exists (Ray Train) and otherwise spawns N local processes (gloo on
loopback), each running the same :class:`~recsys.train.trainer.Trainer`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.train.configs import ResumeMode
from recsys.train.distributed import run_local_workers
from recsys.train.run_config import RunConfig, build_task, load_run_config, run_config_from_dict
from recsys.train.trainer import Trainer
from seedrec.errors import ConfigError, DataError

__all__ = ["train_main", "eval_main", "run_training", "launch_training"]

logger = logging.getLogger(__name__)


def run_training(run: RunConfig, *, stop_at: int | None = None) -> dict[str, float]:
    """Builds the task of ``run`` and trains it in this process (inside any existing process group)."""
    task = build_task(run)
    return Trainer(task, config=run.train, run_config=run.to_dict()).fit(stop_at=stop_at)


def _train_worker(run_dict: dict[str, Any]) -> None:
    run_training(run_config_from_dict(run_dict))


def launch_training(run: RunConfig, *, workers: int, address: str | None = None) -> dict[str, float]:
    """Trains ``run`` on ``workers`` processes (Ray Train when available, else local spawn).

    Args:
        run: the run.
        workers: processes (ranks).
        address: a running Ray cluster (``auto``, ``ray://host:10001``, ...); implies Ray Train.

    Returns:
        The final metrics, read back from ``metrics.json``.
    """
    if workers == 1 and address is None:
        return run_training(run)
    try:
        ray_launch = importlib.import_module("recsys.train.ray_launch")
    except ModuleNotFoundError:
        ray_launch = None
    if ray_launch is not None and hasattr(ray_launch, "launch"):
        return dict(ray_launch.launch(run, workers=workers, address=address))
    if address is not None:
        raise ConfigError("`--address` needs Ray Train (recsys.train.ray_launch), which is not installed")
    if not run.train.out_dir:
        raise ConfigError("`train.out_dir` is unset; N-process training reports through RUN/metrics.json")
    Trainer(build_task(run), config=run.train).check()  # config errors as one line, not N tracebacks
    run_local_workers(_train_worker, (run.to_dict(),), workers=workers)
    metrics_file = Path(run.train.out_dir) / "metrics.json"
    return dict(json.loads(metrics_file.read_text())["metrics"]) if metrics_file.exists() else {}


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seedrec train", description="Train a task (ranking or research).")
    p.add_argument("--config", required=True, type=Path, help="the YAML run file (task / model / train)")
    p.add_argument("--data", type=Path, default=None, help="the samples folder (sets task.data_dir)")
    p.add_argument("--out", required=True, type=Path, help="the run folder (sets train.out_dir)")
    p.add_argument("--workers", type=int, default=1, help="processes; > 1 runs under Ray Train or local spawn")
    p.add_argument("--address", default=None,
                   help="a running Ray cluster to train on (e.g. auto, ray://head:10001); default: a local Ray")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_const", const=ResumeMode.REQUIRE.value, dest="resume",
                   help="continue the run's latest checkpoint (fail if there is none)")
    g.add_argument("--fresh", action="store_const", const=ResumeMode.NEVER.value, dest="resume",
                   help="ignore existing checkpoints (default: continue them when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=0.01 model.k=16")
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    """``seedrec train --config FILE --data DIR --out RUN [--workers N] [--address RAY] [--resume|--fresh] [key=value ...]``.

    Returns:
        0 on success.

    Raises:
        SeedrecError: a bad config, data or checkpoint (printed as one line by ``seedrec.cli``).
    """
    args = _train_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.workers < 1:
        raise ConfigError(f"`--workers` = {args.workers}; must be ≥ 1")
    run = load_run_config(args.config, args.overrides)
    task = dict(run.task)
    if args.data is not None:
        task["data_dir"] = str(args.data)
    changes: dict[str, Any] = {"out_dir": str(args.out)}
    if args.resume is not None:
        changes["resume"] = args.resume
    if args.no_progress:
        changes["progress_bar"] = False
    run = RunConfig(task=task, model=run.model, train=dataclasses.replace(run.train, **changes))
    metrics = launch_training(run, workers=args.workers, address=args.address)
    logger.info("run %s done: %s", args.out, metrics)
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seedrec eval", description="Metrics of a trained run on a split.")
    p.add_argument("--run", required=True, type=Path, help="the run folder written by `seedrec train`")
    p.add_argument("--split", action="append", default=None, help="a split to evaluate (repeatable; default test)")
    p.add_argument("--data", type=Path, default=None, help="the samples folder (default: the run's task.data_dir)")
    p.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint folder (default: the latest)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. task.eval_batch_size=4096")
    return p


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``seedrec eval --run RUN [--split test ...] [--data DIR] [--checkpoint DIR]``.

    Loads the run's ``config.json``, restores the latest (or given) checkpoint's model, evaluates the
    splits, prints the metrics as JSON and writes ``RUN/eval_<split>.json``.

    Returns:
        0 on success.

    Raises:
        SeedrecError: not a run folder, no checkpoint, or bad data (printed as one line).
    """
    args = _eval_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    config_file = args.run / "config.json"
    if not config_file.exists():
        raise DataError(f"{args.run}: not a run folder (no config.json); train it with `seedrec train` first")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{config_file}: not valid JSON ({e})") from None
    run = run_config_from_dict(saved, args.overrides)
    task = dict(run.task)
    if args.data is not None:
        task["data_dir"] = str(args.data)
    train = dataclasses.replace(run.train, out_dir=str(args.run), progress_bar=False, resume=ResumeMode.NEVER)
    run = RunConfig(task=task, model=run.model, train=train)
    splits = args.split or ["test"]
    metrics = Trainer(build_task(run), config=run.train, run_config=run.to_dict()).evaluate(
        splits, checkpoint=args.checkpoint
    )
    for split in splits:
        part = {k: v for k, v in metrics.items() if k.startswith(f"{split}/")}
        (args.run / f"eval_{split}.json").write_text(json.dumps({"split": split, "metrics": part}, indent=2))
    sys.stdout.write(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return 0
