"""Tests of recsys/train/run_config.py and recsys/train/configs.py: YAML + overrides, errors, task kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.train.configs import EmbeddingOptimizer, LRSchedule, ResumeMode, TrainConfig
from recsys.train.run_config import (
    RunConfig,
    apply_overrides,
    build_task,
    dataclass_from_mapping,
    load_run_config,
    parse_override,
    register_task,
    run_config_from_dict,
    task_kinds,
)
from seedrec.errors import ConfigError

YAML = """
task: {kind: ranking, batch_size: 512, heads: {click: 1.0, purchase: 0.5}}
model: {kind: lmn, embedding: {dim: 16}, n_sub: 16, k: 4}
train: {max_steps: 300, lr: 0.003, embedding_lr: 0.05, warmup_steps: 20, eval_every: 100, checkpoint_every: 100, seed: 0}
"""


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(YAML)
    return p


def test_yaml_and_overrides(run_file: Path) -> None:
    run = load_run_config(run_file, ["train.lr=0.01", "model.k=8", "task.heads={click: 2}", "train.final_splits=[test]",
                                     "train.schedule=constant", "train.sharding.lmn_memory=row_wise"])
    assert run.train.lr == 0.01 and run.train.max_steps == 300
    assert run.model["k"] == 8 and run.model["embedding"] == {"dim": 16}
    assert run.task["heads"] == {"click": 2}
    assert run.train.final_splits == ("test",)
    assert run.train.schedule is LRSchedule.CONSTANT
    assert run.train.sharding == {"lmn_memory": "row_wise"}
    assert run.kind == "ranking"


def test_to_dict_round_trips(run_file: Path) -> None:
    run = load_run_config(run_file, ["train.embedding_optimizer=sgd", "train.sharding_types=[table_wise, row_wise]"])
    d = run.to_dict()
    assert d["train"]["embedding_optimizer"] == "sgd"
    again = run_config_from_dict(d)
    assert again == run
    assert again.train.embedding_optimizer is EmbeddingOptimizer.SGD


def test_parse_override_values() -> None:
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("train.tensorboard=false") == (["train", "tensorboard"], False)
    assert parse_override("task.data_dir=/tmp/x") == (["task", "data_dir"], "/tmp/x")
    assert parse_override("train.epochs=") == (["train", "epochs"], None)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("train.lr=[1")


def test_unknown_train_key_names_key_and_valid_keys(run_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key `train.lrr`; valid keys of `train`: .*\blr\b"):
        load_run_config(run_file, ["train.lrr=0.1"])


def test_unknown_section(run_file: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key `trian.lr`; valid top-level keys: task, model, train"):
        load_run_config(run_file, ["trian.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown key `extra`"):
        run_config_from_dict({"task": {"kind": "ranking"}, "train": {"max_steps": 1}, "extra": 1})


def test_override_through_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="`train.lr` is 0.1, not a mapping"):
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr.x=1"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {kind: ranking\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)


def test_missing_task_kind() -> None:
    with pytest.raises(ConfigError, match="`task.kind` is missing; known task kinds: .*ranking"):
        run_config_from_dict({"train": {"max_steps": 1}})


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "give `max_steps` or `epochs`"),
        ({"max_steps": 0}, "`max_steps` = 0"),
        ({"max_steps": 5, "lr": 0}, "`lr` = 0"),
        ({"max_steps": 5, "warmup_steps": 6}, "`warmup_steps` = 6 exceeds `max_steps` = 5"),
        ({"max_steps": 5, "schedule": "linear"}, "`schedule` = 'linear'; valid values: cosine, constant"),
        ({"max_steps": 5, "embedding_optimizer": "lamb"}, "`embedding_optimizer` = 'lamb'"),
        ({"max_steps": 5, "resume": "maybe"}, "`resume` = 'maybe'"),
        ({"max_steps": 5, "device": "tpu"}, "`device` = 'tpu'"),
        ({"max_steps": 5, "log_every": 0}, "`log_every` = 0"),
        ({"max_steps": 5, "keep_checkpoints": 0}, "`keep_checkpoints` = 0"),
        ({"max_steps": 5, "grad_clip": -1}, "`grad_clip` = -1"),
        ({"max_steps": 5, "betas": (0.9, 1.5)}, "`betas`"),
        ({"max_steps": 5, "min_lr_ratio": 2}, "`min_lr_ratio` = 2"),
        ({"epochs": 0}, "`epochs` = 0"),
    ],
)
def test_train_config_errors(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**fields)  # type: ignore[arg-type]  # deliberately bad values


def test_train_config_normalises_strings() -> None:
    cfg = TrainConfig(epochs=2, resume="never", betas=[0.8, 0.9])  # type: ignore[arg-type]  # YAML-shaped
    assert cfg.resume is ResumeMode.NEVER and cfg.betas == (0.8, 0.9)


def test_dataclass_from_mapping_missing_required() -> None:
    with pytest.raises(ConfigError, match="`task`"):
        dataclass_from_mapping(RunConfig, {}, section="task")


def test_register_task_and_build(run_file: Path) -> None:
    calls: list[RunConfig] = []

    def factory(run: RunConfig) -> object:
        calls.append(run)
        return "a task"

    register_task("unit_test_kind", factory, replace=True)
    assert "unit_test_kind" in task_kinds() and "ranking" in task_kinds()
    run = load_run_config(run_file, ["task={kind: unit_test_kind}"])
    assert build_task(run) == "a task" and calls == [run]
    with pytest.raises(ConfigError, match="already registered"):
        register_task("unit_test_kind", lambda run: None)
    with pytest.raises(ConfigError, match="`task.kind` = 'nope' is not registered; known task kinds: .*ranking"):
        build_task(load_run_config(run_file, ["task.kind=nope"]))


def test_task_kind_as_import_path(run_file: Path) -> None:
    run = load_run_config(run_file, ["task.kind=builtins:repr"])
    assert build_task(run).startswith("RunConfig(")  # type: ignore[attr-defined]  # repr returns a str
    with pytest.raises(ConfigError, match="cannot import the factory"):
        build_task(load_run_config(run_file, ["task.kind=no_such_module:f"]))


def test_ranking_factory_refuses_unknown_task_and_model_keys(run_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key `task.batchsize`; valid keys of `task`: .*batch_size"):
        build_task(load_run_config(run_file, ["task.batchsize=3"]))
    with pytest.raises(ConfigError, match="model: unknown field"):
        build_task(load_run_config(run_file, ["model.n_subb=3", f"task.data_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="`task.data_dir` is unset"):
        build_task(load_run_config(run_file))


def test_exponent_floats_and_type_errors(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("task: {kind: ranking}\ntrain: {max_steps: 3, lr: 1e-3, embedding_lr: 5E-2}\n")
    run = load_run_config(p)
    assert run.train.lr == 1e-3 and run.train.embedding_lr == 5e-2
    with pytest.raises(ConfigError, match="`lr` = 'fast'; must be a number"):
        load_run_config(p, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="`max_steps` = 2.5; must be an integer"):
        load_run_config(p, ["train.max_steps=2.5"])
