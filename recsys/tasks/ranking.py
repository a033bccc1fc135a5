"""Ranking: the recsys models (DIN, ADS, LMN) on the samples of ``seedrec data build``.

Loss over the label heads H (``click``, ``purchase``, ...) with configurable head weights w_h::

    L = Σ_h w_h · BCE(logit_h, y_h)  +  Σ_a aux_a          aux_a: the model's ``aux_losses``
                                                           (already weighted, e.g. LMN's λ·L_mem)

Evaluation gathers (labels, probabilities, users, domains) from every rank and reports, per head,
``{split}/{head}/auc``, ``/gauc``, ``/logloss`` and ``/auc/{domain}`` (see :mod:`recsys.metrics`).

Example:
    >>> cfg = RankingTaskConfig(data_dir="runs/samples", batch_size=256, heads={"click": 1.0, "purchase": 0.5})
    >>> cfg.eval_batch_size
    256
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys.metrics import EvalAccumulator
from recsys.train.distributed import all_reduce_min_int
from recsys.train.task import StepOutput
from seedrec.errors import ConfigError

if TYPE_CHECKING:
    from feature_pipeline.batch import Batch
    from feature_pipeline.loader import SampleLoader
    from recsys.configs import ModelConfig
    from recsys.train.run_config import RunConfig

__all__ = ["RankingTaskConfig", "RankingTask", "ranking_task_factory"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RankingTaskConfig:
    """The ``task:`` section of a ranking run.

    Attributes:
        kind: the task-registry tag.
        data_dir: the samples folder (``seedrec train --data DIR`` sets it).
        batch_size: training rows per rank per step.
        eval_batch_size: evaluation rows per rank per batch (default: ``batch_size``).
        heads: label head → loss weight; empty = every label of the spec with weight 1. A weight of
            0 keeps a head in the metrics without training it.
        shuffle: shuffle the training split (per epoch, deterministic from the train seed).
        shuffle_buffer: rows per shuffle window of the loader.
        drop_last: drop a short final training batch.
        batch_source: where training batches come from: ``local`` (``SampleLoader``, rank / world-size
            sharding) or ``ray_data`` (this Ray Train worker's ``streaming_split`` shard, set by
            ``recsys.train.ray_launch``; see :mod:`recsys.train.ray_data`). Evaluation always reads locally.
    """

    kind: Literal["ranking"] = "ranking"
    data_dir: str | None = None
    batch_size: int = 512
    eval_batch_size: int | None = None
    heads: Mapping[str, float] = field(default_factory=dict)
    shuffle: bool = True
    shuffle_buffer: int = 65_536
    drop_last: bool = True
    batch_source: Literal["local", "ray_data"] = "local"

    def __post_init__(self) -> None:
        if self.batch_source not in ("local", "ray_data"):
            raise ConfigError(f"`task.batch_source` = {self.batch_source!r}; valid values: local, ray_data")
        if self.kind != "ranking":
            raise ConfigError(f"`kind` = {self.kind!r}; RankingTaskConfig has kind 'ranking'")
        if self.eval_batch_size is None:
            object.__setattr__(self, "eval_batch_size", self.batch_size)
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`task.{name}` = {value!r}; must be an int ≥ 1")
        heads = {str(k): float(v) for k, v in dict(self.heads).items()}
        bad = {k: v for k, v in heads.items() if not v >= 0.0}
        if bad:
            raise ConfigError(f"`task.heads` = {heads}: weights must be ≥ 0 (bad: {bad})")
        if heads and not any(v > 0 for v in heads.values()):
            raise ConfigError(f"`task.heads` = {heads}: at least one head needs a weight > 0")
        object.__setattr__(self, "heads", heads)


def _model_device(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


class RankingTask:
    """A :class:`~recsys.train.task.Task` for CTR / CVR ranking over a sample folder.

    Args:
        config: the task section.
        model_config: the model section (``recsys.configs``), built by ``recsys.models.registry``.
        seed: the shuffle seed (the run's ``train.seed``).

    Raises:
        ConfigError: no ``data_dir``, or a head that is not a label of the feature spec.
        SchemaError: the samples folder has no valid ``feature_spec.json``.
    """

    def __init__(self, config: RankingTaskConfig, model_config: ModelConfig, *, seed: int = 0) -> None:
        from feature_pipeline.transform import FeatureTransform

        if not config.data_dir:
            raise ConfigError("`task.data_dir` is unset; pass `--data DIR` (the output of `seedrec data build`)")
        self.config = config
        self.model_config = model_config
        self.seed = seed
        self.data_dir = Path(config.data_dir)
        self.transform = FeatureTransform.from_spec_dir(self.data_dir)  # loaded once, shared by loaders
        self.spec = self.transform.spec
        labels = self.spec.label_names
        if not labels:
            raise ConfigError(f"{self.data_dir}: the feature spec has no label features to rank")
        heads = dict(config.heads) or {name: 1.0 for name in labels}
        unknown = [h for h in heads if h not in labels]
        if unknown:
            raise ConfigError(f"`task.heads` names {unknown}, not labels of {self.data_dir}; labels: {labels}")
        self.head_names = list(heads)
        self._head_index = torch.tensor([labels.index(h) for h in self.head_names], dtype=torch.long)
        self._head_weight = torch.tensor([heads[h] for h in self.head_names], dtype=torch.float32)

    # ---- Task protocol ------------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The splits of the samples folder."""
        return list(self.spec.splits)

    def config_dict(self) -> dict[str, Any]:
        return {"task": asdict(self.config), "model": asdict(self.model_config)}  # type: ignore[call-overload]  # a dataclass

    def build_model(self, *, device: torch.device) -> nn.Module:
        from recsys.models.registry import build_model

        return build_model(self.model_config, self.spec, device=device)

    def loader(self, split: str, *, rank: int, world_size: int, epoch: int = 0) -> SampleLoader:
        """The :class:`SampleLoader` of ``split`` for this rank (training settings for ``train``)."""
        from feature_pipeline.loader import SampleLoader

        train = split == "train"
        loader = SampleLoader(
            self.data_dir,
            split,
            batch_size=self.config.batch_size if train else int(self.config.eval_batch_size or self.config.batch_size),
            shuffle=self.config.shuffle and train,
            seed=self.seed,
            drop_last=self.config.drop_last and train,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=self.config.shuffle_buffer,
            transform=self.transform,
        )
        loader.set_epoch(epoch)
        return loader

    def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> Iterable[Batch]:
        if split == "train" and self.config.batch_source == "ray_data":
            from recsys.train.ray_data import ray_train_batches

            c = self.config
            return ray_train_batches(self.data_dir, transform=self.transform, batch_size=c.batch_size,
                                     drop_last=c.drop_last, rank=rank, world_size=world_size, epoch=epoch,
                                     seed=self.seed, shuffle=c.shuffle, shuffle_buffer=c.shuffle_buffer)
        return self.loader(split, rank=rank, world_size=world_size, epoch=epoch)

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        out = model(batch)
        idx = self._head_index.to(out.logits.device)
        logits = out.logits.index_select(1, idx)  # (B, H)
        labels = batch.labels.index_select(1, idx.to(batch.labels.device)).to(logits.dtype)  # (B, H)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)  # (H,)
        loss = (bce * self._head_weight.to(bce.device)).sum()
        logs = {f"bce/{h}": bce[i].detach() for i, h in enumerate(self.head_names)}
        for name, aux in out.aux_losses.items():
            loss = loss + aux
            logs[f"aux/{name}"] = aux.detach()
        for name, value in out.extras.items():
            if value.numel() == 1:
                logs[f"extra/{name}"] = value.detach().float().reshape(())
        return StepOutput(loss=loss, logs=logs, num_samples=batch.batch_size)

    def evaluate(self, model: nn.Module, split: str, *, rank: int, world_size: int) -> dict[str, float]:
        loader = self.loader(split, rank=rank, world_size=world_size)
        # Sharded embeddings make every forward a collective: all ranks run the same batch count.
        n = all_reduce_min_int(len(loader))
        device = _model_device(model)
        acc = EvalAccumulator(self.head_names, domain_names=self.spec.domains)
        idx = self._head_index
        for batch in itertools.islice(loader, n):
            batch = batch.to(device)
            out = model(batch)
            probs = torch.sigmoid(out.logits.float()).index_select(1, idx.to(out.logits.device))  # (B, H)
            acc.update(
                labels=batch.labels.index_select(1, idx.to(batch.labels.device)),
                probs=probs,
                users=batch.user,
                domains=batch.domain,
            )
        acc.gather()
        return acc.compute(prefix=split)


def ranking_task_factory(run: RunConfig) -> RankingTask:
    """Builds a :class:`RankingTask` from a run config's ``task`` and ``model`` sections."""
    from recsys.configs import model_config_from_dict
    from recsys.train.run_config import dataclass_from_mapping

    task_cfg = dataclass_from_mapping(RankingTaskConfig, run.task, section="task")
    if "kind" not in run.model:
        raise ConfigError("`model.kind` is missing; give one of din, ads, lmn")
    try:
        model_cfg = model_config_from_dict(dict(run.model))
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from None
    return RankingTask(task_cfg, model_cfg, seed=run.train.seed)
