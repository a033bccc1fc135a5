"""The ``lm`` task under the shared Trainer: protocol, registry, run files, and a tiny LM of every
variant that beats the unigram model on the Shakespeare valid split after a few dozen steps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from recsys.train.cli import train_main
from recsys.train.configs import TrainConfig
from recsys.train.run_config import build_task, load_run_config, run_config_from_dict, task_kinds
from recsys.train.task import Task
from recsys.train.trainer import Trainer
from research.configs import LMTaskConfig, NormPlacement, TextDataConfig
from research.data.text import TextCorpus, build_corpus
from research.models.lm import PRESETS
from research.tasks.lm import LMTask, resolve_model_config
from seedrec.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[3] / "research" / "configs"
TINY_MODEL = {"d_model": 32, "n_layer": 2, "n_head": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus() -> TextCorpus:
    return build_corpus(TextDataConfig(block_size=32))


def _task(corpus: TextCorpus, model: dict[str, Any], **kw: Any) -> LMTask:
    cfg = LMTaskConfig(data=TextDataConfig(block_size=32), batch_size=16, steps_per_epoch=40, eval_batches=4,
                       eval_batch_size=16, **kw)
    return LMTask(cfg, model=model, corpus=corpus)


def test_task_implements_the_protocol(corpus: TextCorpus) -> None:
    task = _task(corpus, {"preset": "prenorm", **TINY_MODEL})
    assert isinstance(task, Task) and task.splits() == ["train", "valid"]
    a = task.batches("train", rank=0, world_size=1, epoch=0)
    b = task.batches("train", rank=0, world_size=1, epoch=0)
    assert len(a) == 40 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))  # deterministic
    assert not torch.equal(a[0][0], task.batches("train", rank=1, world_size=2, epoch=0)[0][0])  # per rank
    assert not torch.equal(a[0][0], task.batches("train", rank=0, world_size=1, epoch=1)[0][0])  # per epoch
    x, y = a[0]
    assert x.shape == (16, 32) and torch.equal(x[:, 1:], y[:, :-1])
    model = task.build_model(device=torch.device("cpu"))
    out = task.step(model, a[0])
    assert out.loss.requires_grad and out.num_samples == 16
    with torch.no_grad():
        metrics = task.evaluate(model.eval(), "valid", rank=0, world_size=1)
    assert set(metrics) == {"valid/loss", "valid/unigram_loss", "valid/bpb"}
    assert metrics["valid/unigram_loss"] == pytest.approx(corpus.unigram_loss("valid"))


def test_model_config_resolution(corpus: TextCorpus) -> None:
    task_cfg = LMTaskConfig(data=TextDataConfig(block_size=32))
    cfg = resolve_model_config({"preset": "hybridnorm", "n_layer": 3}, task_cfg, 256)
    assert cfg.norm is NormPlacement.HYBRID and cfg.n_layer == 3 and cfg.vocab_size == 256 and cfg.block_size == 32
    with pytest.raises(ConfigError, match="preset"):
        resolve_model_config({"preset": "gpt5"}, task_cfg, 256)
    with pytest.raises(ConfigError, match="model.widht"):
        resolve_model_config({"widht": 3}, task_cfg, 256)
    with pytest.raises(ConfigError, match="vocab_size"):
        resolve_model_config({"vocab_size": 512}, task_cfg, 256)
    with pytest.raises(ConfigError, match="block_size"):
        resolve_model_config({"block_size": 16}, task_cfg, 256)
    with pytest.raises(ConfigError, match="model.kind"):
        resolve_model_config({"kind": "din"}, task_cfg, 256)


def test_lm_kind_is_registered() -> None:
    assert "lm" in task_kinds()
    run = run_config_from_dict({
        "task": {"kind": "lm", "data": {"corpus": "pydoc", "block_size": 16}, "batch_size": 2},
        "model": {"preset": "oe", "d_model": 32, "n_head": 2, "n_layer": 1},
        "train": {"max_steps": 1},
    })
    task = build_task(run)
    assert isinstance(task, LMTask) and task.model_config.over_encoding


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("lm_*.yaml")), ids=lambda p: p.stem)
def test_run_files_resolve(path: Path) -> None:
    run = load_run_config(path, ["task.data.corpus=pydoc"])
    task = build_task(run)
    preset = run.model["preset"]
    assert task.model_config == resolve_model_config(dict(run.model), task.config, 256)
    assert task.model_config.norm is PRESETS[preset].norm and task.model_config.residual is PRESETS[preset].residual


def test_seedrec_train_runs_an_lm_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc = train_main([
        "--config", str(CONFIGS / "lm_hybridnorm.yaml"), "--out", str(out), "--no-progress",
        "train.max_steps=3", "train.warmup_steps=1", "train.eval_every=0", "train.log_every=1",
        "task.data.block_size=16", "task.batch_size=2", "task.eval_batches=1", "task.eval_batch_size=2",
        "model.d_model=32", "model.n_head=2", "model.n_layer=1",
    ])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and set(metrics["metrics"]) == {"valid/loss", "valid/unigram_loss", "valid/bpb"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_variant_beats_the_unigram_model_after_a_few_dozen_steps(corpus: TextCorpus, name: str) -> None:
    task = _task(corpus, {"preset": name, **TINY_MODEL})
    cfg = TrainConfig(max_steps=40, lr=1e-2, warmup_steps=5, min_lr_ratio=0.1, betas=(0.9, 0.95), grad_clip=1.0,
                      log_every=20, final_splits=("valid",), progress_bar=False, tensorboard=False, save_final=False,
                      device="cpu")
    metrics = Trainer(task, config=cfg).fit()
    assert metrics["valid/loss"] < metrics["valid/unigram_loss"], metrics
