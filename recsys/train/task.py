"""The ``Task`` protocol: everything the generic :class:`~recsys.train.trainer.Trainer` needs to know
about a problem, and nothing about how it is trained.

A task owns its data, its model and its loss; the Trainer owns the process group, the device, the
sharding (TorchRec DMP or DDP), the optimizers, the schedule, checkpoints and logging. Ranking
(:mod:`recsys.tasks.ranking`) and the research LM / DiT tasks implement the same protocol.

Example:
    >>> import torch
    >>> class Regression:
    ...     def build_model(self, *, device: torch.device) -> torch.nn.Module:
    ...         return torch.nn.Linear(2, 1, device=device)
    ...     def batches(self, split, *, rank, world_size, epoch):
    ...         g = torch.Generator().manual_seed(epoch)
    ...         return [torch.randn(4, 2, generator=g) for _ in range(3)]
    ...     def step(self, model, batch):
    ...         loss = model(batch).pow(2).mean()
    ...         return StepOutput(loss=loss, logs={"mse": loss.detach()}, num_samples=batch.shape[0])
    ...     def evaluate(self, model, split, *, rank, world_size):
    ...         return {f"{split}/mse": 0.0}
    >>> isinstance(Regression(), Task)
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["StepOutput", "Task", "task_sharding_constraints", "task_splits"]


@dataclass
class StepOutput:
    """What one training step of a task returns.

    Attributes:
        loss: the scalar to differentiate (already includes any auxiliary losses).
        logs: named scalar tensors to average over ranks and log (detached; no ``.item()`` here so
            the step does not synchronise the device).
        num_samples: samples in this rank's batch (for throughput).

    Example:
        >>> out = StepOutput(loss=torch.tensor(0.5), logs={"bce": torch.tensor(0.5)}, num_samples=32)
        >>> out.num_samples
        32
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    num_samples: int = 0


@runtime_checkable
class Task(Protocol):
    """A trainable problem. Implementations need not subclass this; they only need the methods.

    Optional extras the Trainer looks for with ``getattr``:

    * ``sharding_constraints() -> dict[str, ParameterConstraints]``: per-table TorchRec planner
      constraints (the run config's ``train.sharding`` overrides them).
    * ``config_dict() -> dict``: the task's configuration, written into ``config.json``.
    * ``splits() -> list[str]``: the splits ``batches`` / ``evaluate`` accept; the Trainer checks
      its ``eval_split`` and ``final_splits`` against it before training.
    """

    def build_model(self, *, device: torch.device) -> nn.Module:
        """Builds the model on ``device`` (``meta`` when the Trainer will let TorchRec materialise it).

        Modules that own parameters directly must implement ``reset_parameters()`` so a model built on
        ``meta`` can be initialised after sharding (the PyTorch meta-device convention).
        """
        ...

    def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> Iterable[Any]:
        """This rank's batches of ``split`` for ``epoch``, in a deterministic order (sized if possible).

        The same (split, rank, world_size, epoch) must give the same sequence: resuming skips the
        batches already consumed in the epoch.
        """
        ...

    def step(self, model: nn.Module, batch: Any) -> StepOutput:
        """Runs the forward pass on a batch already moved to the model's device and returns the loss."""
        ...

    def evaluate(self, model: nn.Module, split: str, *, rank: int, world_size: int) -> dict[str, float]:
        """Metrics of ``split``, identical on every rank (gather predictions across ranks).

        Called on all ranks together, in ``eval`` mode and under ``torch.no_grad()``; keys are
        ``"{split}/..."``.
        """
        ...


def task_sharding_constraints(task: object) -> Mapping[str, Any]:
    """The task's optional ``sharding_constraints()``, or an empty mapping."""
    fn = getattr(task, "sharding_constraints", None)
    return dict(fn() or {}) if callable(fn) else {}


def task_splits(task: object) -> list[str] | None:
    """The task's optional ``splits()``, or ``None`` when it does not say."""
    fn = getattr(task, "splits", None)
    return list(fn()) if callable(fn) else None
