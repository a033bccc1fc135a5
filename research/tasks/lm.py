"""The language-modelling task (``task.kind: lm``) of the shared :class:`~recsys.train.trainer.Trainer`.

Spec: ``shared/specs/llm-blocks.md`` §2-§6. A run file::

    task:  {kind: lm, data: {corpus: shakespeare, tokenizer: byte, block_size: 128}, batch_size: 32}
    model: {preset: hybridnorm, n_layer: 6}          # any LMConfig field; `preset` names PRESETS
    train: {max_steps: 2000, lr: 0.003, warmup_steps: 100, final_splits: [valid]}

    seedrec train --config research/configs/lm_hybridnorm.yaml --out runs/hybridnorm

``model.vocab_size`` and ``model.block_size`` default to the tokenizer's vocabulary and the data's
``block_size``. ``--data DIR`` (``task.data_dir``) trains on the ``*.txt`` files of DIR instead.

Splits: ``train`` and ``valid`` (no ``test``: set ``train.final_splits: [valid]``). Evaluation
reports ``{split}/loss`` (next-token cross-entropy, nats/token, on fixed windows spread over the
split), ``{split}/unigram_loss`` (the cross-entropy of the add-one unigram model fitted on the
train split: a model that learnt anything beats it) and ``{split}/bpb`` (bits per byte).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from recsys.train.run_config import RunConfig
from recsys.train.task import StepOutput
from research.configs import LMConfig, LMTaskConfig
from research.data.text import TextCorpus, build_corpus, sample_windows
from research.models.lm import LM, PRESETS
from seedrec.errors import ConfigError, DataError

__all__ = ["LMTask", "lm_task_from_run", "resolve_model_config"]

Batch = tuple[torch.Tensor, torch.Tensor]


class _WindowBatches(Sequence[Batch]):
    """A sized, deterministic sequence of random-window batches (drawn lazily)."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, block_size: int) -> None:
        self.tokens, self.starts, self.block_size = tokens, starts, block_size  # starts: (S, B)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]  # integer indexing only
        return sample_windows(self.tokens, self.starts[i], self.block_size)

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            yield self[i]


def resolve_model_config(model: dict[str, Any], task: LMTaskConfig, vocab_size: int) -> LMConfig:
    """The model config of a run: ``preset`` (optional) plus the given fields, with ``vocab_size``
    and ``block_size`` taken from the data when absent.

    Raises:
        ConfigError: an unknown preset or key, or a vocabulary / context that does not fit the data.
    """
    fields = dict(model)
    kind = fields.pop("kind", "lm")
    if kind != "lm":
        raise ConfigError(f"`model.kind` must be 'lm' (or absent) for the lm task, got {kind!r}")
    preset = fields.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"`model.preset` {preset!r} is unknown; known presets: {', '.join(sorted(PRESETS))}")
    known = {f.name for f in dataclasses.fields(LMConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {['model.' + k for k in unknown]}; valid keys of `model`: preset, {', '.join(sorted(known))}")
    fields.setdefault("vocab_size", vocab_size)
    fields.setdefault("block_size", task.data.block_size)
    cfg = replace(PRESETS[preset], **fields) if preset is not None else LMConfig(**fields)
    if cfg.vocab_size != vocab_size:
        raise ConfigError(
            f"`model.vocab_size` ({cfg.vocab_size}) differs from the tokenizer's vocabulary ({vocab_size}); "
            f"remove it or set it to {vocab_size}"
        )
    if cfg.block_size < task.data.block_size:
        raise ConfigError(
            f"`model.block_size` ({cfg.block_size}) is shorter than `task.data.block_size` ({task.data.block_size}); "
            f"remove it or raise it"
        )
    return cfg


class LMTask:
    """Next-token prediction on a text corpus with :class:`~research.models.lm.LM`.

    Args:
        config: corpus, tokenizer, batch sizes and seed.
        model: the model section of the run (see :func:`resolve_model_config`).
        data_dir: a folder of ``*.txt`` files replacing the configured corpus.
        corpus: an already built corpus (shared by experiment arms); else built from ``config``.

    Example:
        >>> task = LMTask(LMTaskConfig(data={"corpus": "pydoc", "block_size": 16}, batch_size=2),
        ...               model={"d_model": 32, "n_layer": 1, "n_head": 2})
        >>> model = task.build_model(device=torch.device("cpu"))
        >>> out = task.step(model, next(iter(task.batches("train", rank=0, world_size=1, epoch=0))))
        >>> out.loss.shape, out.num_samples
        (torch.Size([]), 2)
    """

    def __init__(
        self,
        config: LMTaskConfig,
        *,
        model: dict[str, Any] | None = None,
        data_dir: str | None = None,
        corpus: TextCorpus | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.corpus = corpus if corpus is not None else build_corpus(config.data, data_dir=data_dir)
        self.model_config = resolve_model_config(dict(model or {}), config, self.corpus.tokenizer.vocab_size)
        self._model_section = dict(model or {})

    # ---- the Task protocol ----------------------------------------------------------------------
    def build_model(self, *, device: torch.device) -> nn.Module:
        with torch.device(device):
            return LM(self.model_config)

    def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> Sequence[Batch]:
        """``steps_per_epoch`` batches of random windows; the same (split, rank, epoch) gives the same ones."""
        tokens = self.corpus.split(split)
        T, B = self.config.data.block_size, self.config.batch_size
        rng = np.random.default_rng([self.config.seed, epoch, rank, world_size, 0 if split == "train" else 1])
        starts = rng.integers(0, tokens.size - T - 1, size=(self.config.steps_per_epoch, B), endpoint=True)  # (S, B)
        return _WindowBatches(tokens, starts, T)

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        x, y = batch
        logits, loss = model(x, y)
        assert loss is not None  # targets were given
        logs: dict[str, torch.Tensor] = {}
        if self.model_config.over_decoding:
            logs["ce"] = F.cross_entropy(logits.detach().flatten(0, 1), y.flatten())
        return StepOutput(loss=loss, logs=logs, num_samples=int(x.shape[0]))

    def evaluate(self, model: nn.Module, split: str, *, rank: int, world_size: int) -> dict[str, float]:
        """Mean next-token loss over fixed windows evenly spread over ``split``, identical on every rank."""
        tokens = self.corpus.split(split)
        T = self.config.data.block_size
        n = self.config.eval_batches * self.config.eval_batch_size
        starts = np.linspace(0, tokens.size - T - 1, num=n).astype(np.int64)[rank::world_size]  # this rank's share
        device = next(model.parameters()).device
        total = torch.zeros(2, dtype=torch.float64, device=device)  # [Σ loss, tokens]
        for i in range(0, starts.size, self.config.eval_batch_size):
            x, y = sample_windows(tokens, starts[i : i + self.config.eval_batch_size], T)
            logits, _ = model(x.to(device))
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum")
            total += torch.stack([loss.double(), torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        if total[1] == 0:
            raise DataError(f"no evaluation windows on the {split} split; raise `task.eval_batches`")
        loss_value = float(total[0] / total[1])
        return {
            f"{split}/loss": loss_value,
            f"{split}/unigram_loss": self.corpus.unigram_loss(split),
            f"{split}/bpb": loss_value / math.log(2) / self.corpus.bytes_per_token(split),
        }

    # ---- optional extras the Trainer looks for --------------------------------------------------
    def splits(self) -> list[str]:
        return ["train", "valid"]

    def config_dict(self) -> dict[str, Any]:
        task = dataclasses.asdict(self.config)
        task["data"] = {k: (v.value if hasattr(v, "value") else v) for k, v in task["data"].items()}
        if self.data_dir is not None:
            task["data_dir"] = self.data_dir
        return {"task": task, "model": self._model_section}


def lm_task_from_run(run: RunConfig) -> LMTask:
    """The ``lm`` task factory: ``run.task`` → :class:`LMTaskConfig`, ``run.model`` → :class:`LMConfig`."""
    section = dict(run.task)
    data_dir = section.pop("data_dir", None)
    return LMTask(LMTaskConfig.from_dict(section), model=dict(run.model), data_dir=data_dir)
