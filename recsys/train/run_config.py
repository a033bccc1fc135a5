"""Run configuration: a YAML file plus dotted ``key=value`` overrides → a :class:`RunConfig`, and the
registry of task kinds that turns it into a :class:`~recsys.train.task.Task`.

A run file has three sections::

    task:  {kind: ranking, batch_size: 512, heads: {click: 1.0, purchase: 0.5}}
    model: {kind: lmn, embedding: {dim: 16}, n_sub: 64, k: 8}
    train: {max_steps: 300, lr: 0.003, embedding_lr: 0.05, warmup_steps: 20, eval_every: 100,
            checkpoint_every: 100, seed: 0}

Overrides address any key by its dotted path and are parsed as YAML values, so
``train.lr=0.01 model.k=16 task.heads={click: 1.0} train.final_splits=[test]`` all work. ``train``
keys are checked against :class:`~recsys.train.configs.TrainConfig`; ``task`` and ``model`` by the
task kind's factory. An unknown key raises :class:`~seedrec.errors.ConfigError` naming the key and
the valid keys.

Task kinds: ``ranking`` is built in; research code calls ``register_task("lm", factory)`` where
``factory(run: RunConfig) -> Task``. A ``kind`` of the form ``"package.module:function"`` imports
that factory directly.

Example:
    >>> run = run_config_from_dict(
    ...     {"task": {"kind": "ranking"}, "model": {"kind": "din"}, "train": {"max_steps": 10}},
    ...     ["train.lr=0.01", "task.batch_size=64"])
    >>> run.train.lr, run.task["batch_size"]
    (0.01, 64)
    >>> run_config_from_dict({"task": {"kind": "ranking"}, "train": {"max_steps": 1, "lrr": 1}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: unknown key `train.lrr`; valid keys of `train`: betas, checkpoint_every, ...
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from recsys.train.configs import TrainConfig
from recsys.train.task import Task
from seedrec.errors import ConfigError

__all__ = [
    "RunConfig",
    "TaskFactory",
    "SECTIONS",
    "load_run_config",
    "run_config_from_dict",
    "apply_overrides",
    "parse_override",
    "dataclass_from_mapping",
    "register_task",
    "task_kinds",
    "build_task",
]

logger = logging.getLogger(__name__)

SECTIONS = ("task", "model", "train")

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A resolved run: the task and model sections as mappings (their kind's factory validates them)
    and the validated :class:`TrainConfig`.

    Attributes:
        task: the ``task`` section; ``kind`` names the task factory.
        model: the ``model`` section (free-form for the task; ranking reads ``recsys.configs``).
        train: how to train.
    """

    task: Mapping[str, Any]
    model: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig

    @property
    def kind(self) -> str:
        return str(self.task["kind"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :func:`run_config_from_dict` reads back (``config.json``)."""
        train = dataclasses.asdict(self.train)
        for k, v in train.items():
            if hasattr(v, "value"):  # enums → their string values
                train[k] = v.value
            elif isinstance(v, tuple):
                train[k] = list(v)
        return {"task": copy.deepcopy(dict(self.task)), "model": copy.deepcopy(dict(self.model)), "train": train}


# ---- YAML ---------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506  # a SafeLoader subclass


# ---- overrides ----------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` → ``(["train", "lr"], 0.01)``; the value is parsed as YAML.

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not `key=value` (e.g. `train.lr=0.01`)")
    path = key.split(".")
    if any(not p for p in path):
        raise ConfigError(f"override key {key!r} has an empty component")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override `{key}`: value {raw!r} is not valid YAML ({str(e).splitlines()[0]})") from None
    return path, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with every ``key=value`` override applied in order.

    Raises:
        ConfigError: an unknown section or a path through a non-mapping value.
    """
    out = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in SECTIONS:
            raise ConfigError(f"unknown key `{'.'.join(path)}`; valid top-level keys: {', '.join(SECTIONS)}")
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override `{'.'.join(path)}`: `{'.'.join(path[: i + 1])}` is {nxt!r}, not a mapping")
            node = nxt
        node[path[-1]] = value
    return out


# ---- dataclasses from mappings ----------------------------------------------------------------
def dataclass_from_mapping(cls: type[_T], data: Mapping[str, Any] | None, *, section: str) -> _T:
    """``cls(**data)`` with unknown keys refused by name (lists become tuples for tuple fields).

    Args:
        cls: a dataclass.
        data: its fields; ``None`` means all defaults.
        section: the dotted prefix for messages (``"train"``).

    Raises:
        ConfigError: an unknown key (naming the valid ones), a missing required field, or whatever the
            dataclass's own validation raises.
    """
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown key `{section}.{key}`; valid keys of `{section}`: {', '.join(sorted(fields))}")
    for key, value in data.items():
        if isinstance(value, list) and "tuple" in str(fields[key].type):
            data[key] = tuple(value)
    try:
        return cls(**data)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"`{section}`: {e}") from None


# ---- loading ------------------------------------------------------------------------------------
def run_config_from_dict(data: Mapping[str, Any], overrides: Iterable[str] = ()) -> RunConfig:
    """Validates a run dict (as from YAML or ``config.json``) after applying ``overrides``.

    Raises:
        ConfigError: a missing or unknown section, a missing ``task.kind``, or an invalid ``train`` key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a run config must be a mapping with sections {', '.join(SECTIONS)}; got {type(data).__name__}")
    d = apply_overrides(data, overrides)
    for key in d:
        if key not in SECTIONS:
            raise ConfigError(f"unknown key `{key}`; valid top-level keys: {', '.join(SECTIONS)}")
    for key in SECTIONS:
        if d.get(key) is None:
            d[key] = {}
        if not isinstance(d[key], Mapping):
            raise ConfigError(f"`{key}` must be a mapping, not {d[key]!r}")
    if "kind" not in d["task"]:
        raise ConfigError(f"`task.kind` is missing; known task kinds: {', '.join(task_kinds())}")
    train = dataclass_from_mapping(TrainConfig, d["train"], section="train")
    return RunConfig(task=d["task"], model=d["model"], train=train)


def load_run_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Reads a YAML (or JSON) run file and applies ``overrides``.

    Raises:
        ConfigError: the file is missing or not valid YAML, or the config is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = _yaml(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        data = {}
    try:
        return run_config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


# ---- task registry ------------------------------------------------------------------------------
TaskFactory = Callable[[RunConfig], Task]
"""``factory(run) -> Task``: validates ``run.task`` / ``run.model`` and builds the task."""

_FACTORIES: dict[str, TaskFactory] = {}
# Modules imported on first lookup; each registers its kinds when imported.
_PLUGIN_MODULES = ("recsys.tasks", "research.tasks")


def register_task(kind: str, factory: TaskFactory, *, replace: bool = False) -> None:
    """Registers a task kind.

    Args:
        kind: the ``task.kind`` value, e.g. ``"lm"``.
        factory: ``RunConfig -> Task``.
        replace: allow replacing an existing registration (module reloads, tests).

    Raises:
        ConfigError: ``kind`` is already registered to another factory and ``replace`` is false.
    """
    if not kind or ":" in kind:
        raise ConfigError(f"task kind {kind!r}: must be a non-empty name without ':'")
    old = _FACTORIES.get(kind)
    if old is not None and old is not factory and not replace:
        raise ConfigError(f"task kind {kind!r} is already registered ({old!r}); pass replace=True to override")
    _FACTORIES[kind] = factory


def _load_plugins() -> None:
    for name in _PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise  # a real import error inside the package, not its absence
            logger.debug("task plugin module %s not installed", name)


def task_kinds() -> list[str]:
    """Every registered task kind (built-in and plugin modules included)."""
    _load_plugins()
    return sorted(_FACTORIES)


def _factory(kind: str) -> TaskFactory:
    if ":" in kind:  # "package.module:function"
        module, _, attr = kind.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"`task.kind` = {kind!r}: cannot import the factory ({e})") from None
        return fn  # type: ignore[no-any-return]  # a user-named callable
    if kind not in _FACTORIES:
        _load_plugins()
    if kind not in _FACTORIES:
        raise ConfigError(f"`task.kind` = {kind!r} is not registered; known task kinds: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[kind]


def build_task(run: RunConfig) -> Task:
    """The task ``run.task.kind`` names, built by its registered factory.

    Raises:
        ConfigError: an unknown kind, or whatever the factory refuses.
    """
    return _factory(run.kind)(run)
