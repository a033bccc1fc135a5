"""Configuration of the generic Trainer: enums and frozen dataclasses only (no behaviour, no I/O).

Example:
    >>> cfg = TrainConfig(max_steps=100, lr=3e-3, warmup_steps=10)
    >>> cfg.schedule
    <LRSchedule.COSINE: 'cosine'>
    >>> TrainConfig(max_steps=0)
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: `max_steps` = 0; must be ≥ 1 (or leave it unset and give `epochs`)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, unique
from typing import Any

from seedrec.errors import ConfigError

__all__ = ["LRSchedule", "EmbeddingOptimizer", "ResumeMode", "TrainConfig"]


@unique
class LRSchedule(str, Enum):  # noqa: UP042  (STYLE §3 asks for str, Enum; StrEnum changes str())
    """Learning-rate shape after the linear warm-up."""

    COSINE = "cosine"  # cosine decay from the peak to `min_lr_ratio` * peak at the last step
    CONSTANT = "constant"


@unique
class EmbeddingOptimizer(str, Enum):  # noqa: UP042  (as LRSchedule)
    """The fused (in-backward) optimizer of TorchRec embedding tables (FBGEMM kernels)."""

    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAM = "adam"  # CUDA only: FBGEMM's CPU kernels support sgd / adagrad / rowwise_adagrad


@unique
class ResumeMode(str, Enum):  # noqa: UP042  (as LRSchedule)
    """What to do with checkpoints already in the run folder."""

    AUTO = "auto"  # continue from the latest one when there is one, else start fresh
    REQUIRE = "require"  # continue from the latest one; fail when there is none
    NEVER = "never"  # start fresh (existing checkpoints are kept but not read)


def _enum(cls: type[Enum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]  # str-valued enums
        raise ConfigError(f"`{name}` = {value!r}; valid values: {valid}") from None


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: steps, optimizers, schedule, evaluation, checkpoints, sharding and output.

    Attributes:
        max_steps: optimizer steps to run in total; with ``epochs`` too, the first limit reached wins.
        epochs: passes over the training split (needs a sized ``Task.batches``).
        lr: peak learning rate of the dense AdamW optimizer.
        weight_decay: AdamW weight decay of the dense parameters.
        betas: AdamW betas.
        embedding_optimizer: the fused optimizer of TorchRec embedding tables.
        embedding_lr: its peak learning rate (follows the same warm-up and schedule).
        warmup_steps: linear warm-up from 0 to the peak over this many steps.
        schedule: the shape after warm-up.
        min_lr_ratio: the cosine floor as a fraction of the peak.
        grad_clip: clip the dense gradients to this global L2 norm; 0 disables clipping.
        log_every: log averaged step logs every this many steps.
        eval_every: evaluate ``eval_split`` every this many steps; 0 only evaluates at the end.
        eval_split: the split evaluated during training.
        final_splits: the splits evaluated at the end and written into ``metrics.json``.
        checkpoint_every: save a checkpoint every this many steps; 0 only saves the final one.
        keep_checkpoints: keep this many latest checkpoints.
        save_final: save a checkpoint at the end (``seedrec eval`` and export read it).
        resume: what to do with checkpoints already in ``out_dir``.
        seed: seeds python, numpy and torch; ranks derive their own streams from it.
        out_dir: the run folder (checkpoints, ``tb/``, ``metrics.json``, ``config.json``); ``None``
            writes nothing.
        device: ``"cpu"`` or ``"cuda"``; ``None`` picks CUDA when available.
        sharding_types: restrict every table to these TorchRec sharding types (``None``: the
            Trainer's defaults for the device, which leave out ``data_parallel``).
        sharding: per-table sharding type, e.g. ``{"lmn_memory": "row_wise"}``; wins over the rest.
        progress_bar: show a tqdm bar on rank 0.
        tensorboard: write TensorBoard scalars into ``out_dir/tb``.
        dist_timeout_s: timeout of collective operations (a rank that fails shows up as this).
        num_threads: torch intra-op threads per process on CPU. None = 1: recsys steps are many
            small ops, and on the 2-core machine 1 thread trained DIN 3–6× faster than 2
            (docs/results/recsys.md); raise it for wide dense towers.
    """

    max_steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    embedding_optimizer: EmbeddingOptimizer = EmbeddingOptimizer.ROWWISE_ADAGRAD
    embedding_lr: float = 0.05
    warmup_steps: int = 0
    schedule: LRSchedule = LRSchedule.COSINE
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 0
    eval_split: str = "valid"
    final_splits: tuple[str, ...] = ("valid", "test")
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    save_final: bool = True
    resume: ResumeMode = ResumeMode.AUTO
    seed: int = 0
    out_dir: str | None = None
    device: str | None = None
    sharding_types: tuple[str, ...] | None = None
    sharding: Mapping[str, str] = field(default_factory=dict)
    progress_bar: bool = True
    tensorboard: bool = True
    dist_timeout_s: float = 300.0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        # Normalise YAML-shaped values (strings, lists) into the declared types.
        object.__setattr__(self, "schedule", _enum(LRSchedule, self.schedule, "schedule"))
        object.__setattr__(
            self, "embedding_optimizer", _enum(EmbeddingOptimizer, self.embedding_optimizer, "embedding_optimizer")
        )
        object.__setattr__(self, "resume", _enum(ResumeMode, self.resume, "resume"))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "final_splits", tuple(self.final_splits))
        object.__setattr__(self, "sharding", dict(self.sharding))
        if self.sharding_types is not None:
            object.__setattr__(self, "sharding_types", tuple(self.sharding_types))

        for name in ("lr", "embedding_lr", "weight_decay", "min_lr_ratio", "grad_clip", "dist_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"`{name}` = {value!r}; must be a number")
        for name in ("max_steps", "epochs", "warmup_steps", "log_every", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"`{name}` = {value!r}; must be an integer")
        if self.max_steps is None and self.epochs is None:
            raise ConfigError("give `max_steps` or `epochs` (or both; the first limit reached wins)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"`max_steps` = {self.max_steps}; must be ≥ 1 (or leave it unset and give `epochs`)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"`epochs` = {self.epochs}; must be ≥ 1 (or leave it unset and give `max_steps`)")
        for name in ("lr", "embedding_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` = {getattr(self, name)}; must be > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"`weight_decay` = {self.weight_decay}; must be ≥ 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"`betas` = {self.betas}; must be two numbers in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"`min_lr_ratio` = {self.min_lr_ratio}; must be in [0, 1]")
        if self.grad_clip < 0:
            raise ConfigError(f"`grad_clip` = {self.grad_clip}; must be ≥ 0 (0 disables clipping)")
        for name in ("warmup_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`{name}` = {getattr(self, name)}; must be ≥ 0")
        if self.log_every < 1:
            raise ConfigError(f"`log_every` = {self.log_every}; must be ≥ 1")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"`keep_checkpoints` = {self.keep_checkpoints}; must be ≥ 1")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ConfigError(f"`warmup_steps` = {self.warmup_steps} exceeds `max_steps` = {self.max_steps}")
        if self.device is not None and self.device not in ("cpu", "cuda"):
            raise ConfigError(f"`device` = {self.device!r}; valid values: cpu, cuda (or unset for automatic)")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"`num_threads` = {self.num_threads}; must be ≥ 1 (or null for the default, 1)")
        if self.dist_timeout_s <= 0:
            raise ConfigError(f"`dist_timeout_s` = {self.dist_timeout_s}; must be > 0")
        if not self.eval_split:
            raise ConfigError("`eval_split` is empty; name a split such as 'valid'")
