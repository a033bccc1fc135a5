"""Tests of the generic Trainer (recsys/train/trainer.py) with its checkpoints and DMP wrapping.

Most tests use a tiny TorchRec model defined here (an EmbeddingBagCollection over the sparse
features, an EmbeddingCollection over the history, an MLP) and an in-memory task; one test runs the
real RankingTask + LMN through ``train_main`` / ``eval_main`` on a tiny synthetic sample set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    KeyedJaggedTensor,
)

from feature_pipeline.batch import Batch
from recsys.metrics import EvalAccumulator
from recsys.outputs import ModelOutput
from recsys.train.checkpoint import CheckpointManager, read_trainer_state
from recsys.train.configs import LRSchedule, TrainConfig
from recsys.train.distributed import all_reduce_min_int
from recsys.train.task import StepOutput, Task
from recsys.train.trainer import Trainer, lr_factor
from seedrec.errors import ConfigError, DataError

USERS, ITEMS, T, D = 50, 100, 4, 8


class ToyModel(nn.Module):
    """EBC (user, item; pooled) + EC (history items; un-pooled, mean in dense code) + MLP → 1 logit."""

    def __init__(self, device: torch.device, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name="t_user", embedding_dim=D, num_embeddings=USERS, feature_names=["user_id"]),
                EmbeddingBagConfig(name="t_item", embedding_dim=D, num_embeddings=ITEMS, feature_names=["item_id"]),
            ],
            device=device,
        )
        self.ec = EmbeddingCollection(
            tables=[EmbeddingConfig(name="t_hist", embedding_dim=D, num_embeddings=ITEMS, feature_names=["hist_item_id"])],
            device=device,
        )
        self.mlp = nn.Sequential(nn.Linear(3 * D, 16, device=device), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1, device=device))

    def forward(self, batch: Batch) -> ModelOutput:
        B = batch.batch_size
        pooled = self.ebc(batch.sparse).values()  # (B, 2D)
        hist = self.ec(batch.sequence)["hist_item_id"]
        lengths = hist.lengths()
        rows = torch.repeat_interleave(torch.arange(B, device=lengths.device), lengths)
        mean = torch.zeros(B, D, device=pooled.device).index_add_(0, rows, hist.values())
        mean = mean / lengths.clamp(min=1).unsqueeze(1).to(mean.dtype)  # (B, D)
        return ModelOutput(logits=self.mlp(torch.cat([pooled, mean], dim=1)))  # (B, 1)


def make_batch(g: torch.Generator, B: int) -> Batch:
    user = torch.randint(0, USERS, (B,), generator=g)
    item = torch.randint(0, ITEMS, (B,), generator=g)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    hist = torch.randint(0, ITEMS, (int(lengths.sum()),), generator=g)
    label = ((item < ITEMS // 2) ^ (torch.rand(B, generator=g) < 0.1)).float()  # learnable from the item row
    return Batch(
        sparse=KeyedJaggedTensor.from_lengths_sync(
            keys=["user_id", "item_id"], values=torch.stack([user, item]).reshape(-1), lengths=torch.ones(2 * B, dtype=torch.long)
        ),
        sequence=KeyedJaggedTensor.from_lengths_sync(keys=["hist_item_id"], values=hist, lengths=lengths),
        dense=torch.zeros(B, 0),
        labels=label.unsqueeze(1),
        domain=item % 2,
        user=user,
    )


class ToyTask:
    """An in-memory ranking-like task over :class:`ToyModel`."""

    def __init__(self, *, n_batches: int = 8, batch_size: int = 32, dropout: float = 0.0, sharding: dict[str, Any] | None = None) -> None:
        g = torch.Generator().manual_seed(123)
        self.data = {
            "train": [make_batch(g, batch_size) for _ in range(n_batches)],
            "valid": [make_batch(g, batch_size) for _ in range(3)],
        }
        self.dropout = dropout
        self._sharding = sharding or {}

    def splits(self) -> list[str]:
        return sorted(self.data)

    def sharding_constraints(self) -> dict[str, Any]:
        return self._sharding

    def build_model(self, *, device: torch.device) -> nn.Module:
        return ToyModel(device, dropout=self.dropout)

    def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> list[Batch]:
        data = self.data[split]
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist() if split == "train" else range(len(data))
        return [data[i] for i in order][rank::world_size]

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        out = model(batch)
        loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels)
        return StepOutput(loss=loss, logs={"bce": loss.detach()}, num_samples=batch.batch_size)

    def evaluate(self, model: nn.Module, split: str, *, rank: int, world_size: int) -> dict[str, float]:
        data = self.batches(split, rank=rank, world_size=world_size, epoch=0)
        acc = EvalAccumulator(["click"], domain_names=["even", "odd"])
        for batch in data[: all_reduce_min_int(len(data))]:
            acc.update(labels=batch.labels, probs=torch.sigmoid(model(batch).logits), users=batch.user, domains=batch.domain)
        acc.gather()
        return acc.compute(prefix=split)


def config(tmp: Path | None, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(max_steps=8, lr=0.01, embedding_lr=0.1, warmup_steps=2, log_every=2, final_splits=("valid",),
                                progress_bar=False, out_dir=str(tmp) if tmp else None)
    return TrainConfig(**{**base, **kw})


def final_state(run: Path) -> dict[str, torch.Tensor]:
    """Model + optimizer tensors of a 1-rank run's latest checkpoint, without a process group."""
    latest = CheckpointManager(run).latest()
    assert latest is not None
    out = run / "final.pt"
    dcp_to_torch_save(str(latest), str(out))
    sd = torch.load(out, weights_only=False)

    def flat(prefix: str, d: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(f"{prefix}{k}.", v)
            elif isinstance(v, torch.Tensor):
                yield f"{prefix}{k}", v

    return dict(flat("", sd))


def test_task_protocol() -> None:
    assert isinstance(ToyTask(), Task)


def test_loss_falls_and_run_folder_is_written(tmp_path: Path) -> None:
    task = ToyTask(n_batches=10)
    cfg = config(tmp_path, max_steps=30, epochs=None, eval_every=10, log_every=5, schedule="constant")
    metrics = Trainer(task, config=cfg).fit()
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["steps"] == 30 and summary["epochs"] == 3
    assert summary["samples"] == 30 * 32 and summary["samples_per_s"] > 0
    assert summary["metrics"] == metrics and metrics["valid/click/auc"] > 0.75  # learnable from the item row
    assert [h["step"] for h in summary["history"]] == [10.0, 20.0]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["max_steps"] == 30
    assert any((tmp_path / "tb").iterdir())
    state = read_trainer_state(CheckpointManager(tmp_path).latest())  # type: ignore[arg-type]  # exists
    assert state["step"] == 30 and state["config"]["train"]["lr"] == 0.01
    assert CheckpointManager(tmp_path).latest().name == "step_00000030"  # type: ignore[union-attr]


def test_loss_decreases(tmp_path: Path) -> None:
    task = ToyTask(n_batches=4)
    before = Trainer(task, config=config(None, max_steps=1, lr=1e-9, embedding_lr=1e-9, warmup_steps=0)).fit()
    after = Trainer(task, config=config(None, max_steps=24, warmup_steps=0)).fit()
    assert after["valid/click/logloss"] < before["valid/click/logloss"] - 0.05


def test_max_steps_and_epochs_limits(tmp_path: Path) -> None:
    task = ToyTask(n_batches=4)
    Trainer(task, config=config(tmp_path / "a", max_steps=3)).fit()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["steps"] == 3
    Trainer(task, config=config(tmp_path / "b", max_steps=None, epochs=2, warmup_steps=0)).fit()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["steps"] == 8


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """2N steps straight == N steps, stop, resume, N steps: same step count, metrics, weights, optimizer state."""
    task = ToyTask(n_batches=5, dropout=0.2)  # dropout: the RNG state must be restored too
    kw = dict(max_steps=12, eval_every=4, checkpoint_every=4, keep_checkpoints=2)
    straight = Trainer(task, config=config(tmp_path / "straight", **kw)).fit()
    assert Trainer(task, config=config(tmp_path / "resumed", **kw)).fit(stop_at=7) == {}  # mid-epoch stop
    assert CheckpointManager(tmp_path / "resumed").latest().name == "step_00000007"  # type: ignore[union-attr]
    resumed = Trainer(task, config=config(tmp_path / "resumed", **kw, resume="require")).fit()
    assert resumed == pytest.approx(straight, abs=1e-6)
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert sorted(a) == sorted(b) and any(k.startswith("optim.fused.") for k in a) and any(k.startswith("optim.dense.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    s = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert s["steps"] == 12 and s["samples"] == 12 * 32 and s["resumed_from"].endswith("step_00000007")
    assert len(CheckpointManager(tmp_path / "resumed").checkpoints()) == 2  # keep_checkpoints


def test_resume_with_stateless_fused_optimizer(tmp_path: Path) -> None:
    """Fused SGD keeps no state; resuming must still restore the tables and dense AdamW."""
    kw = dict(max_steps=8, embedding_optimizer="sgd")
    straight = Trainer(ToyTask(n_batches=5), config=config(tmp_path / "a", **kw)).fit()
    Trainer(ToyTask(n_batches=5), config=config(tmp_path / "b", **kw)).fit(stop_at=3)
    assert Trainer(ToyTask(n_batches=5), config=config(tmp_path / "b", **kw)).fit() == pytest.approx(straight, abs=1e-6)


def test_resume_require_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no complete checkpoint"):
        Trainer(ToyTask(), config=config(tmp_path, resume="require")).fit()


def test_evaluate_checkpoint_equals_final_metrics(tmp_path: Path) -> None:
    task = ToyTask(n_batches=4)
    final = Trainer(task, config=config(tmp_path)).fit()
    again = Trainer(task, config=config(tmp_path)).evaluate(["valid"])
    assert again == pytest.approx(final, abs=1e-7)
    with pytest.raises(DataError, match="no checkpoint"):
        Trainer(task, config=config(tmp_path / "empty")).evaluate(["valid"])


def test_unknown_split_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split 'test'.*\\['train', 'valid'\\]"):
        Trainer(ToyTask(), config=config(tmp_path, final_splits=("test",))).fit()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sharding_types": ("diagonal",)}, "unknown sharding type 'diagonal'; valid types: .*row_wise"),
        ({"sharding": {"t_user": "row_wise"}}, "'row_wise' is not supported for table 't_user' .*valid for it: data_parallel, table_wise"),
        ({"sharding": {"nope": "table_wise"}}, "no embedding table 'nope'; tables: \\['t_hist', 't_item', 't_user'\\]"),
        ({"sharding_types": ("table_column_wise",)}, "leaves no valid type for table 't_hist'"),
        ({"embedding_optimizer": "adam"}, "'adam' has no FBGEMM CPU kernel"),
    ],
)
def test_bad_sharding_or_optimizer_is_a_config_error(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    trainer = Trainer(ToyTask(), config=config(None, device="cpu", **kw))
    with pytest.raises(ConfigError, match=match):
        trainer.check()  # what a launcher runs before spawning workers: no process group
    with pytest.raises(ConfigError, match=match):
        trainer.fit()  # every rank validates before the collective plan


def test_plain_model_without_torchrec(tmp_path: Path) -> None:
    class Linear:
        def build_model(self, *, device: torch.device) -> nn.Module:
            return nn.Linear(3, 1, device=device)

        def batches(self, split: str, *, rank: int, world_size: int, epoch: int) -> Iterator[torch.Tensor]:
            g = torch.Generator().manual_seed(epoch)
            return (torch.randn(16, 3, generator=g) for _ in range(5))  # unsized

        def step(self, model: nn.Module, batch: torch.Tensor) -> StepOutput:
            loss = (model(batch).squeeze(1) - batch @ torch.tensor([1.0, -2.0, 0.5])).pow(2).mean()
            return StepOutput(loss=loss, num_samples=16)

        def evaluate(self, model: nn.Module, split: str, *, rank: int, world_size: int) -> dict[str, float]:
            return {f"{split}/w0": float(model.weight[0, 0])}

    kw = dict(max_steps=60, lr=0.05, warmup_steps=0, schedule="constant")
    m = Trainer(Linear(), config=config(tmp_path / "a", **kw)).fit()
    assert m["valid/w0"] == pytest.approx(1.0, abs=0.2)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["steps"] == 60
    Trainer(Linear(), config=config(tmp_path / "b", **kw)).fit(stop_at=23)  # unsized epochs of 5 batches
    assert Trainer(Linear(), config=config(tmp_path / "b", **kw)).fit() == pytest.approx(m, abs=1e-6)


def test_lr_schedule() -> None:
    f = [lr_factor(s, warmup_steps=4, total_steps=12, schedule=LRSchedule.COSINE, min_lr_ratio=0.1) for s in range(12)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[3:], f[4:])) and f[-1] == pytest.approx(0.1)
    assert lr_factor(50, warmup_steps=0, total_steps=10, schedule=LRSchedule.CONSTANT, min_lr_ratio=0) == 1.0
    assert math.isclose(lr_factor(100, warmup_steps=0, total_steps=10, schedule=LRSchedule.COSINE, min_lr_ratio=0), 0.0)


# ---- the real ranking task, through the CLI functions ---------------------------------------------
RUN_YAML = """
task: {kind: ranking, batch_size: 64, heads: {click: 1.0, purchase: 0.5}}
model: {kind: lmn, embedding: {dim: 4}, n_sub: 8, k: 2, d_key: 4, d_value: 4, attention_hidden: [8], tower_hidden: [8]}
train: {max_steps: 6, lr: 0.003, embedding_lr: 0.05, warmup_steps: 2, log_every: 3, checkpoint_every: 3, seed: 0,
        progress_bar: false, tensorboard: false}
"""


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from feature_pipeline.build_config import BuildConfig
    from feature_pipeline.configs import WorldConfig
    from feature_pipeline.samples import build_samples
    from feature_pipeline.world import synth

    root = tmp_path_factory.mktemp("ranking")
    synth(WorldConfig(users=60, items=40, days=4, domains=2, categories=5, clusters=2, impressions_per_user_day=4.0),
          root / "logs", progress=False)
    build_samples(root / "logs", root / "samples", BuildConfig(seq_len=4, min_freq=1, row_group_size=256, progress=False))
    return root / "samples"


def test_train_and_eval_main_with_lmn(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recsys.train.cli import eval_main, train_main

    cfg = tmp_path / "lmn.yaml"
    cfg.write_text(RUN_YAML)
    run = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--data", str(samples), "--out", str(run), "train.final_splits=[test]"]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["steps"] == 6 and summary["config"]["model"]["kind"] == "lmn"
    m = summary["metrics"]
    for key in ("test/click/auc", "test/click/gauc", "test/click/logloss", "test/purchase/auc", "test/click/auc/feed"):
        assert key in m and (math.isnan(m[key]) or 0.0 <= m[key] <= 10.0)
    assert [p.name for p in CheckpointManager(run).checkpoints()] == ["step_00000003", "step_00000006"]
    capsys.readouterr()
    assert eval_main(["--run", str(run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(m, nan_ok=True)
    assert json.loads((run / "eval_test.json").read_text())["metrics"] == pytest.approx(m, nan_ok=True)
    with pytest.raises(DataError, match="not a run folder"):
        eval_main(["--run", str(tmp_path / "nothing")])
    with pytest.raises(ConfigError, match="`task.heads` names \\['like'\\]"):
        train_main(["--config", str(cfg), "--data", str(samples), "--out", str(run), "task.heads={like: 1}"])
