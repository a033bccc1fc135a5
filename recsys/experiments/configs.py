"""Configs of the offline experiments (DIN vs ADS vs LMN): frozen dataclasses only, no I/O.

:class:`ExperimentConfig` says which data sets to build, which model configs to train over how many
seeds, and which sweeps to run (LMN memory size, ADS chunk count); :mod:`recsys.experiments.runner`
executes it and :mod:`recsys.experiments.compare` writes the report.

Example:
    >>> cfg = ExperimentConfig(seeds=1, datasets=("synthetic",), memory_sizes=(16, 64))
    >>> cfg.datasets, cfg.synthetic.users
    (('synthetic',), 3000)
    >>> ExperimentConfig(datasets=("criteo",))
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: `datasets` = ('criteo',) names unknown data sets; choose from ('synthetic', 'movielens')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seedrec.errors import ConfigError

__all__ = ["DATASETS", "MODELS", "SyntheticDataConfig", "MovieLensDataConfig", "ExperimentConfig"]

DATASETS: tuple[str, ...] = ("synthetic", "movielens")
"""The data sets the runner can build: the planted-signal world and MovieLens-100k."""
MODELS: tuple[str, ...] = ("din", "ads", "lmn")
"""The compared models; ``din`` is the RelaImpr baseline."""


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{name}` = {value!r}; must be an int ≥ 1")


@dataclass(frozen=True, kw_only=True)
class SyntheticDataConfig:
    """The synthetic world (``feature_pipeline.world``) and how its logs become samples.

    Attributes:
        users: U. 3000 users × 600 items × 6 days gives ≈ 240k train / 60k test rows, histories of
            ≈ 17 events at test time, and long-term categories (periods 3–8 days) that resurface at
            least once inside the logged window.
        items: I.
        days: logged days; the last ``test_days`` are test, the ``valid_days`` before them valid.
        seed: the world's seed (training seeds are separate).
        seq_len: T, history events per sample.
        valid_days: days in ``valid``.
        test_days: days in ``test``.
    """

    users: int = 3000
    items: int = 600
    days: int = 6
    seed: int = 0
    seq_len: int = 20
    valid_days: int = 1
    test_days: int = 1

    def __post_init__(self) -> None:
        _positive(self, "users", "items", "days", "seq_len", "test_days")
        if self.valid_days < 0:
            raise ConfigError(f"`valid_days` = {self.valid_days}; must be ≥ 0")
        if self.days <= self.valid_days + self.test_days:
            raise ConfigError(
                f"`days` = {self.days} leaves no training day after `valid_days` = {self.valid_days} and "
                f"`test_days` = {self.test_days}; add days"
            )


@dataclass(frozen=True, kw_only=True)
class MovieLensDataConfig:
    """MovieLens-100k (``feature_pipeline.movielens``) split by time, as spec §4.2 suggests.

    Attributes:
        seq_len: T.
        valid_days: 20 rating days (≈ 4% of ratings) before the test days.
        test_days: the last 30 of the 213 rating days hold ≈ 17% of the ratings (spec §4.2: the last
            10–20%).
    """

    seq_len: int = 20
    valid_days: int = 20
    test_days: int = 30

    def __post_init__(self) -> None:
        _positive(self, "seq_len", "test_days")
        if self.valid_days < 0:
            raise ConfigError(f"`valid_days` = {self.valid_days}; must be ≥ 0")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """What :func:`recsys.experiments.runner.run_experiments` runs.

    Attributes:
        datasets: data sets of the main comparison, from :data:`DATASETS`.
        models: models of the main comparison, from :data:`MODELS` (``din`` is the baseline).
        seeds: training seeds 0..seeds−1 per (data set, model).
        config_dir: the run configs: ``{config_dir}/{model}.yaml`` for the synthetic world and
            ``{config_dir}/movielens/{model}.yaml`` for MovieLens.
        work_dir: where data sets and run folders go (``runs/`` is git-ignored).
        synthetic: the world.
        movielens: the MovieLens split.
        memory_sizes: LMN sweep, √n values (n = n_sub² slots); ``k`` is capped at n_sub.
        memory_dataset: the data set of the LMN sweep (1 seed, seed 0).
        chunk_counts: ADS sweep, ``num_chunks`` values; ``None`` = one query per position (G = T).
        chunk_dataset: the data set of the ADS sweep (1 seed, seed 0).
        threads: ``torch.set_num_threads`` for every run (1 was fastest on a loaded 2-core box).
        max_steps: cap every run at this many steps (quick runs and tests); ``None`` = the configs'
            epochs.
        overrides: extra dotted ``key=value`` overrides applied to every run.
    """

    datasets: tuple[str, ...] = DATASETS
    models: tuple[str, ...] = MODELS
    seeds: int = 3
    config_dir: str = "configs"
    work_dir: str = "runs/experiments"
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    movielens: MovieLensDataConfig = field(default_factory=MovieLensDataConfig)
    memory_sizes: tuple[int, ...] = (16, 64, 256, 1024)
    memory_dataset: str = "movielens"
    chunk_counts: tuple[int | None, ...] = (1, 2, 4, None)
    chunk_dataset: str = "movielens"
    threads: int = 1
    max_steps: int | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("datasets", "models", "memory_sizes", "chunk_counts", "overrides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown or not self.datasets:
            raise ConfigError(f"`datasets` = {self.datasets} names unknown data sets; choose from {DATASETS}")
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models:
            raise ConfigError(f"`models` = {self.models} names unknown models; choose from {MODELS}")
        if "din" not in self.models:
            raise ConfigError(f"`models` = {self.models} lacks `din`, the RelaImpr baseline; add it")
        _positive(self, "seeds", "threads")
        if self.max_steps is not None:
            _positive(self, "max_steps")
        for name in ("memory_dataset", "chunk_dataset"):
            if getattr(self, name) not in DATASETS:
                raise ConfigError(f"`{name}` = {getattr(self, name)!r}; choose from {DATASETS}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.memory_sizes):
            raise ConfigError(f"`memory_sizes` = {self.memory_sizes}; give √n values ≥ 1, e.g. (16, 64, 256, 1024)")
        if any(c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1) for c in self.chunk_counts):
            raise ConfigError(f"`chunk_counts` = {self.chunk_counts}; give ints ≥ 1 or None (one query per position)")
