"""The one generic Trainer: any :class:`~recsys.train.task.Task`, 1 process or N, CPU or CUDA.

Commands::

    # 1 process: a private single-rank gloo group (nccl + cuda:0 when a GPU is present)
    seedrec train --config configs/train/lmn.yaml --data samples/ --out runs/lmn train.max_steps=300

    # N processes under Ray Train (each worker runs Trainer.fit in the group Ray created)
    seedrec train --config configs/train/lmn.yaml --data samples/ --out runs/lmn --workers 4

    # or under torchrun (the RANK / WORLD_SIZE / MASTER_ADDR environment is picked up)
    torchrun --nproc_per_node 2 -m seedrec.cli train --config ... --data ... --out ...

The loop, top to bottom: join or create the process group; seed; build the model (on ``meta`` and
shard it with TorchRec DMP when it has embedding tables, else DDP / plain); resume from the run's
latest checkpoint when there is one; then for each step set the learning rates (linear warm-up, then
cosine or constant), ``Task.step``, backward (embedding rows are updated inside backward by the fused
optimizer), clip and step the dense AdamW; log, evaluate and checkpoint on their schedules; finally
evaluate the final splits and write ``metrics.json``. Only rank 0 logs and writes files.

Run folder::

    RUN/config.json       the resolved configuration
    RUN/plan.json         the TorchRec sharding plan: type, kernel and ranks of every table (DMP only)
    RUN/metrics.json      final metrics, steps, samples/s, times, eval history, config
    RUN/tb/               TensorBoard scalars
    RUN/checkpoints/      see recsys.train.checkpoint
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from recsys.train.checkpoint import (
    CheckpointManager,
    TrainProgress,
    load_checkpoint,
    load_model_weights,
    read_trainer_state,
)
from recsys.train.configs import LRSchedule, ResumeMode, TrainConfig
from recsys.train.distributed import (
    DistContext,
    WrappedModel,
    all_reduce_min_int,
    all_reduce_sum,
    barrier,
    check_embedding_optimizer,
    has_embedding_modules,
    init_distributed,
    sharding_constraints,
    shutdown_distributed,
    wrap_model,
)
from recsys.train.task import StepOutput, Task, task_sharding_constraints, task_splits
from seedrec.errors import ConfigError, DataError

__all__ = ["Trainer", "lr_factor", "seed_everything"]

logger = logging.getLogger(__name__)

_END = object()


def _set_cpu_threads(cfg: TrainConfig, device: torch.device) -> None:
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or 1)


def seed_everything(seed: int) -> None:
    """Seeds python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: LRSchedule, min_lr_ratio: float) -> float:
    """The learning-rate multiplier for 0-based ``step``.

    Linear warm-up reaches 1.0 at step ``warmup_steps - 1``; cosine then decays to ``min_lr_ratio`` at
    the last step, constant stays at 1.0.

    Example:
        >>> [round(lr_factor(s, warmup_steps=2, total_steps=4, schedule=LRSchedule.COSINE, min_lr_ratio=0.0), 2)
        ...  for s in range(4)]
        [0.5, 1.0, 0.5, 0.0]
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule is LRSchedule.CONSTANT:
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    frac = min(max(step - warmup_steps + 1, 0) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    to = getattr(batch, "to", None)
    return to(device) if callable(to) else batch


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def _sized_len(data: Iterable[Any]) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]  # probing whether the iterable is sized
    except TypeError:
        return None


def _plan_summary(plan: Any, world_size: int) -> dict[str, Any]:
    """``{"world_size": W, "tables": {"<module>.<table>": {"sharding_type", "compute_kernel", "ranks"}}}``."""
    tables = {
        f"{path}.{name}": {"sharding_type": ps.sharding_type, "compute_kernel": ps.compute_kernel,
                           "ranks": sorted(set(ps.ranks or []))}
        for path, module_plan in plan.plan.items()
        for name, ps in module_plan.items()
    }
    return {"world_size": world_size, "tables": tables}


class Trainer:
    """Trains a :class:`Task` under :class:`TrainConfig`; see the module docstring for the loop.

    Args:
        task: the problem (data, model, loss, evaluation).
        config: how to train.
        run_config: the full resolved run configuration, written into ``config.json`` and every
            checkpoint (``seedrec eval`` rebuilds the task from it); default: the train config plus
            the task's ``config_dict()`` when it has one.

    Example:
        >>> import tempfile
        >>> from recsys.train.task import StepOutput
        >>> class Tiny:
        ...     def build_model(self, *, device):
        ...         torch.manual_seed(0)
        ...         return torch.nn.Linear(2, 1, device=device)
        ...     def batches(self, split, *, rank, world_size, epoch):
        ...         g = torch.Generator().manual_seed(epoch)
        ...         return [torch.randn(8, 2, generator=g) for _ in range(4)]
        ...     def step(self, model, batch):
        ...         loss = (model(batch) - batch.sum(1, keepdim=True)).pow(2).mean()
        ...         return StepOutput(loss=loss, logs={"mse": loss.detach()}, num_samples=8)
        ...     def evaluate(self, model, split, *, rank, world_size):
        ...         return {f"{split}/weight_sum": float(model.weight.sum())}
        >>> cfg = TrainConfig(max_steps=6, lr=0.1, final_splits=("valid",), progress_bar=False,
        ...                   out_dir=tempfile.mkdtemp())
        >>> sorted(Trainer(Tiny(), config=cfg).fit())
        ['valid/weight_sum']
    """

    def __init__(self, task: Task, *, config: TrainConfig, run_config: Mapping[str, Any] | None = None) -> None:
        self.task = task
        self.config = config
        self._run_config = dict(run_config) if run_config is not None else None
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self._lr_factor: float | None = None  # the multiplier last pushed into the optimizers

    # ---- configuration written to disk ------------------------------------------------------
    def config_payload(self) -> dict[str, Any]:
        """What goes into ``config.json`` and ``trainer_state.json``."""
        if self._run_config is not None:
            return self._run_config
        payload: dict[str, Any] = {"train": asdict(self.config)}
        task_cfg = getattr(self.task, "config_dict", None)
        if callable(task_cfg):
            payload["task"] = task_cfg()
        return payload

    def _required_splits(self) -> list[str]:
        cfg = self.config
        return ["train", *cfg.final_splits, *([cfg.eval_split] if cfg.eval_every else [])]

    def check(self) -> None:
        """Validates splits, sharding and the embedding optimizer without a process group or data.

        :meth:`fit` checks the same on every rank; a launcher calls this first so a config error
        surfaces once instead of in every worker.

        Raises:
            ConfigError: an unknown split, sharding type or table, or an optimizer the device lacks.
        """
        cfg = self.config
        self._check_splits(self._required_splits())
        model = self.task.build_model(device=torch.device("meta"))
        if has_embedding_modules(model):
            device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
            check_embedding_optimizer(cfg.embedding_optimizer, device)
            sharding_constraints(model, compute_device=device, sharding_types=cfg.sharding_types,
                                 per_table=cfg.sharding, task_constraints=task_sharding_constraints(self.task))

    def _check_splits(self, wanted: Sequence[str]) -> None:
        known = task_splits(self.task)
        if known is None:
            return
        for split in wanted:
            if split not in known:
                raise ConfigError(f"split {split!r} (`eval_split` / `final_splits`) is not one of the task's splits: {known}")

    # ---- set-up ------------------------------------------------------------------------------
    def _wrap(self, ctx: DistContext) -> WrappedModel:
        cfg = self.config
        return wrap_model(
            lambda device: self.task.build_model(device=device),
            ctx=ctx,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
            embedding_optimizer=cfg.embedding_optimizer,
            embedding_lr=cfg.embedding_lr,
            sharding_types=cfg.sharding_types,
            per_table=cfg.sharding,
            task_constraints=task_sharding_constraints(self.task),
        )

    def _set_lr(self, wrapped: WrappedModel, factor: float) -> None:
        if factor == self._lr_factor:
            return
        self._lr_factor = factor
        for group in wrapped.dense_optimizer.param_groups:
            group["lr"] = self.config.lr * factor
        if wrapped.fused_optimizer is not None:
            for group in wrapped.fused_optimizer.param_groups:
                group["lr"] = self.config.embedding_lr * factor
            wrapped.fused_optimizer.step()  # a fused step only pushes the new lr into the kernels

    def _evaluate(self, wrapped: WrappedModel, ctx: DistContext, split: str) -> dict[str, float]:
        wrapped.model.eval()
        try:
            with torch.no_grad():
                metrics = self.task.evaluate(wrapped.model, split, rank=ctx.rank, world_size=ctx.world_size)
        finally:
            wrapped.model.train()
        return {k: float(v) for k, v in metrics.items()}

    def _log(
        self,
        values: dict[str, float],
        *,
        step: int,
        total: int,
        lr: float,
        samples_per_s: float,
        main: bool,
        bar: Any,
        writer: Any,
    ) -> None:
        values = {**values, "lr": lr, "samples_per_s": samples_per_s}
        if not math.isfinite(values["loss"]):
            raise DataError(f"the training loss is {values['loss']} at step {step}; lower `train.lr` or check the data")
        if not main:
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info("step %s/%s %s", step, total, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(f"train/{k}", v, step)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, *, stop_at: int | None = None) -> dict[str, float]:
        """Trains to ``max_steps`` / ``epochs``, evaluates the final splits and writes the run folder.

        Args:
            stop_at: stop after this global step as if preempted (a checkpoint is saved there and no
                final evaluation runs); for resume tests and time-sliced jobs.

        Returns:
            The final metrics (``{split}/...`` of every final split); empty when stopped early.

        Raises:
            ConfigError: invalid settings for this model or device.
            DataError: no training batches, or a checkpoint that does not match the model.
        """
        cfg = self.config
        wall0 = time.perf_counter()
        self._check_splits(self._required_splits())
        ctx = init_distributed(device=cfg.device, timeout_s=cfg.dist_timeout_s)
        _set_cpu_threads(cfg, ctx.device)
        writer: Any = None
        try:
            seed_everything(cfg.seed)
            wrapped = self._wrap(ctx)
            self._lr_factor = None
            seed_everything(cfg.seed + 7919 * ctx.rank)  # distinct per-rank streams (dropout, ...)
            manager = CheckpointManager(self.out_dir, keep=cfg.keep_checkpoints) if self.out_dir else None
            progress, resumed_from = self._maybe_resume(manager, wrapped)
            if ctx.is_main and self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / "config.json").write_text(json.dumps(self.config_payload(), indent=2, default=str))
                if wrapped.plan is not None:  # where each table's shards live (launchers and tests read it)
                    (self.out_dir / "plan.json").write_text(json.dumps(_plan_summary(wrapped.plan, ctx.world_size), indent=2))
                if cfg.tensorboard:
                    from torch.utils.tensorboard import SummaryWriter

                    writer = SummaryWriter(log_dir=str(self.out_dir / "tb"))
            return self._run(ctx, wrapped, manager, progress, resumed_from, writer, wall0, stop_at)
        finally:
            if writer is not None:
                writer.close()
            shutdown_distributed(ctx)

    def _maybe_resume(self, manager: CheckpointManager | None, wrapped: WrappedModel) -> tuple[TrainProgress, str | None]:
        mode = self.config.resume
        latest = manager.latest() if manager is not None and mode is not ResumeMode.NEVER else None
        if latest is None:
            if mode is ResumeMode.REQUIRE:
                raise DataError(f"`resume` = 'require' but {self.out_dir} has no complete checkpoint to resume from")
            return TrainProgress(), None
        saved_world = read_trainer_state(latest).get("world_size")
        if saved_world is not None and saved_world != _world_size():
            logger.warning(
                "%s was written by %s ranks, resuming on %s: weights and optimizer states are resharded, "
                "but the data order of the current epoch differs from an uninterrupted run",
                latest, saved_world, _world_size(),
            )
        progress = load_checkpoint(latest, model=wrapped.model, optimizers=wrapped.optimizers)
        logger.info("resumed from %s at step %s (epoch %s, batch %s)", latest, progress.step, progress.epoch, progress.batch_in_epoch)
        return progress, str(latest)

    def _epoch_data(self, ctx: DistContext, epoch: int) -> tuple[Iterable[Any], int | None]:
        data = self.task.batches("train", rank=ctx.rank, world_size=ctx.world_size, epoch=epoch)
        n = _sized_len(data)
        if n is not None:
            # Sharded embeddings run collectives in every forward: all ranks must take the same
            # number of steps, so an epoch ends with the shortest rank.
            n = all_reduce_min_int(n)
            if n == 0:
                raise DataError(f"no training batches on some rank in epoch {epoch} (world size {ctx.world_size}); "
                                "use more data or a smaller `task.batch_size`")
        return data, n

    def _total_steps(self, n_per_epoch: int | None) -> int:
        cfg = self.config
        limits = [cfg.max_steps] if cfg.max_steps is not None else []
        if cfg.epochs is not None:
            if n_per_epoch is None:
                if not limits:
                    raise DataError("`epochs` needs a sized `Task.batches` (len()); give `max_steps` instead")
            else:
                limits.append(cfg.epochs * n_per_epoch)
        return min(limits)

    def _run(
        self,
        ctx: DistContext,
        wrapped: WrappedModel,
        manager: CheckpointManager | None,
        progress: TrainProgress,
        resumed_from: str | None,
        writer: Any,
        wall0: float,
        stop_at: int | None,
    ) -> dict[str, float]:
        cfg = self.config
        main = ctx.is_main
        data, n_epoch = self._epoch_data(ctx, progress.epoch)
        total = self._total_steps(n_epoch)
        model = wrapped.model
        model.train()
        dense_params = wrapped.dense_parameters()
        history: list[dict[str, float]] = []
        log_sums: dict[str, torch.Tensor] = {}
        log_count = 0
        local_samples = 0
        session_samples = 0
        session_time = 0.0
        last_saved = progress.step if resumed_from else -1
        done = progress.step >= total or (cfg.epochs is not None and progress.epoch >= cfg.epochs)
        stopped = not done and stop_at is not None and progress.step >= stop_at
        done = done or stopped
        bar = tqdm(total=total, initial=progress.step, desc="train", dynamic_ncols=True,
                   disable=not (main and cfg.progress_bar))

        def flush() -> dict[str, float]:
            nonlocal log_sums, log_count, local_samples, session_samples
            keys = sorted(log_sums)
            parts = [(log_sums[k] / max(log_count, 1)).detach().double().cpu() for k in keys]
            vec = all_reduce_sum(torch.stack([*parts, torch.tensor(float(local_samples), dtype=torch.float64)]))
            out = {k: float(v) / ctx.world_size for k, v in zip(keys, vec[:-1].tolist())}
            gained = int(round(float(vec[-1])))
            progress.samples += gained
            session_samples += gained
            log_sums, log_count, local_samples = {}, 0, 0
            return out

        def save() -> None:
            nonlocal last_saved
            if manager is None or last_saved == progress.step:
                return
            if log_count:
                flush()  # count the samples into the saved progress (values are logged on schedule)
            manager.save(progress.step, model=model, optimizers=wrapped.optimizers, progress=progress,
                         config=self.config_payload())
            last_saved = progress.step

        def roll_over() -> None:
            nonlocal data, done
            progress.epoch += 1
            progress.batch_in_epoch = 0
            data = None
            if cfg.epochs is not None and progress.epoch >= cfg.epochs:
                done = True

        while not done:
            if data is None:
                data, n_epoch = self._epoch_data(ctx, progress.epoch)
            it: Iterator[Any] = iter(data)
            if progress.batch_in_epoch:  # resume: skip what this epoch already consumed
                it = itertools.islice(it, progress.batch_in_epoch, None)
            while not done and data is not None:
                if n_epoch is not None and progress.batch_in_epoch >= n_epoch:
                    roll_over()
                    break
                t0 = time.perf_counter()  # a step's time includes loading its batch, not eval or saving
                batch = next(it, _END)
                if n_epoch is None:  # unsized: stop together when any rank runs out
                    if not all_reduce_min_int(int(batch is not _END)):
                        roll_over()
                        break
                elif batch is _END:
                    raise DataError(
                        f"`Task.batches` ended after {progress.batch_in_epoch} batches but len() said {n_epoch}"
                    )
                factor = lr_factor(progress.step, warmup_steps=cfg.warmup_steps, total_steps=total,
                                   schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio)
                self._set_lr(wrapped, factor)
                out: StepOutput = self.task.step(model, _to_device(batch, ctx.device))
                out.loss.backward()
                logs = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.logs.items()}}
                if cfg.grad_clip > 0 and dense_params:
                    logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(dense_params, cfg.grad_clip).detach()
                wrapped.dense_optimizer.step()
                wrapped.dense_optimizer.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - t0
                session_time += elapsed
                progress.train_time_s += elapsed
                for k, v in logs.items():
                    v = v.float().reshape(())
                    log_sums[k] = log_sums[k] + v if k in log_sums else v
                log_count += 1
                local_samples += out.num_samples
                progress.step += 1
                progress.batch_in_epoch += 1
                bar.update(1)
                if n_epoch is not None and progress.batch_in_epoch >= n_epoch:
                    roll_over()  # before any checkpoint, so it records the next epoch's start
                step = progress.step
                if step % cfg.log_every == 0:
                    self._log(flush(), step=step, total=total, lr=cfg.lr * factor,
                              samples_per_s=session_samples / max(session_time, 1e-9), main=main, bar=bar, writer=writer)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    metrics = self._evaluate(wrapped, ctx, cfg.eval_split)
                    history.append({"step": float(step), **metrics})
                    if main:
                        logger.info("step %s eval %s", step, metrics)
                        if writer is not None:
                            for k, v in metrics.items():
                                writer.add_scalar(k, v, step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save()
                if step >= total:
                    done = True
                elif stop_at is not None and step >= stop_at:
                    done = stopped = True
        bar.close()
        if log_count:
            flush()
        if stopped:
            save()
            logger.info("stopped at step %s as asked; resume continues from here", progress.step)
            return {}
        final: dict[str, float] = {}
        for split in cfg.final_splits:
            final.update(self._evaluate(wrapped, ctx, split))
        if cfg.save_final:
            save()
        if main and writer is not None:
            for k, v in final.items():
                writer.add_scalar(k, v, progress.step)
        if main and self.out_dir is not None:
            summary = {
                "metrics": final,
                "steps": progress.step,
                "epochs": progress.epoch,
                "samples": progress.samples,
                "samples_per_s": session_samples / max(session_time, 1e-9),
                "train_time_s": progress.train_time_s,
                "wall_time_s": time.perf_counter() - wall0,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "resumed_from": resumed_from,
                "history": history,
                "config": self.config_payload(),
            }
            (self.out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
            logger.info("final metrics %s", final)
        barrier()
        return final

    # ---- evaluation of a saved run ---------------------------------------------------------------
    def evaluate(self, splits: Sequence[str], *, checkpoint: str | Path | None = None) -> dict[str, float]:
        """Evaluates a checkpoint (default: the latest of ``config.out_dir``) on ``splits``.

        Raises:
            DataError: there is no checkpoint to evaluate.
        """
        cfg = self.config
        self._check_splits(splits)
        ctx = init_distributed(device=cfg.device, timeout_s=cfg.dist_timeout_s)
        _set_cpu_threads(cfg, ctx.device)
        try:
            seed_everything(cfg.seed)
            wrapped = self._wrap(ctx)
            path = Path(checkpoint) if checkpoint else (
                CheckpointManager(self.out_dir).latest() if self.out_dir else None
            )
            if path is None:
                raise DataError(f"{self.out_dir}: no checkpoint to evaluate; train first (`seedrec train`)")
            progress = load_model_weights(path, model=wrapped.model)
            logger.info("evaluating %s (step %s)", path, progress.step)
            metrics: dict[str, float] = {}
            for split in splits:
                metrics.update(self._evaluate(wrapped, ctx, split))
            return metrics
        finally:
            shutdown_distributed(ctx)
