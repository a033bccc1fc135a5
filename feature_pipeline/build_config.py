"""Configuration of ``seedrec data build`` (the point-in-time sample builder).

Only the :class:`BuildConfig` dataclass lives here: no I/O, no behaviour. The builder itself is
:func:`feature_pipeline.samples.build_samples`.

Example:
    >>> cfg = BuildConfig(seq_len=10, test_days=2)
    >>> cfg.min_freq_of("item"), cfg.dim_of("item")
    (2, 16)
    >>> BuildConfig(seq_len=0)
    Traceback (most recent call last):
    ...
    seedrec.errors.ConfigError: `seq_len` = 0; must be ≥ 1 (the number of past events kept per sample)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from seedrec.errors import ConfigError

__all__ = ["BuildConfig"]


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """How logs become samples: history length, vocabulary floors, the time split, table sizes.

    Attributes:
        seq_len: T, the number of most recent events (strictly before the impression) kept per sample.
        min_freq: vocabulary frequency floor: an id seen fewer times in the train split maps to the
            OOV row 0. The ``domain`` table ignores it (domains are a closed set).
        table_min_freq: per-table overrides of ``min_freq`` (e.g. ``{"user": 1}``).
        valid_days: the number of days (``dt`` partitions) before the test days that form ``valid``.
        test_days: the number of last days that form ``test``; all earlier days form ``train``.
        embedding_dim: the embedding size of every table unless overridden.
        table_dims: per-table overrides of ``embedding_dim`` (e.g. ``{"item": 32}``).
        user_hash_buckets: 0 = a vocabulary for ``user_id``; N > 0 = hash user ids into N rows
            (plus the OOV row 0) instead, for populations too large or too fresh for a vocabulary.
        history_actions: the event actions that enter histories; ``None`` = all of them.
        row_group_size: rows per parquet row group of the sample files (the loader's shard unit).
        progress: show a tqdm progress bar over the day partitions.
    """

    seq_len: int = 20
    min_freq: int = 2
    table_min_freq: Mapping[str, int] = field(default_factory=dict)
    valid_days: int = 1
    test_days: int = 1
    embedding_dim: int = 16
    table_dims: Mapping[str, int] = field(default_factory=dict)
    user_hash_buckets: int = 0
    history_actions: tuple[str, ...] | None = None
    row_group_size: int = 65_536
    progress: bool = True

    def __post_init__(self) -> None:
        _at_least("seq_len", self.seq_len, 1, "the number of past events kept per sample")
        _at_least("min_freq", self.min_freq, 1, "use 1 to keep every id seen in train")
        for name, v in self.table_min_freq.items():
            _at_least(f"table_min_freq[{name!r}]", v, 1, "use 1 to keep every id seen in train")
        _at_least("valid_days", self.valid_days, 0, "use 0 for no validation split")
        _at_least("test_days", self.test_days, 0, "use 0 for no test split")
        _at_least("embedding_dim", self.embedding_dim, 1, "the width of every embedding table")
        for name, v in self.table_dims.items():
            _at_least(f"table_dims[{name!r}]", v, 1, "the width of that embedding table")
        _at_least("user_hash_buckets", self.user_hash_buckets, 0, "use 0 for a user vocabulary, N > 0 to hash into N rows")
        _at_least("row_group_size", self.row_group_size, 1, "e.g. 65536 rows per parquet row group")
        if self.history_actions is not None:
            if isinstance(self.history_actions, str) or not self.history_actions:
                raise ConfigError(
                    f"`history_actions` = {self.history_actions!r}; give a non-empty tuple of action names "
                    "such as ('click', 'purchase'), or None for all actions"
                )
            bad = [a for a in self.history_actions if not isinstance(a, str) or not a]
            if bad:
                raise ConfigError(f"`history_actions` holds {bad!r}; every entry must be a non-empty action name")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"`progress` = {self.progress!r}; must be True or False")

    def min_freq_of(self, table: str) -> int:
        """The frequency floor of vocabulary ``table``."""
        return int(self.table_min_freq.get(table, self.min_freq))

    def dim_of(self, table: str) -> int:
        """The embedding size of table ``table``."""
        return int(self.table_dims.get(table, self.embedding_dim))


def _at_least(name: str, value: object, low: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"`{name}` = {value!r}; must be ≥ {low} ({hint})")
