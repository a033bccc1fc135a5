"""``feature_spec.json``: the names, kinds and tables of every feature in a sample set.

Written by ``seedrec data build`` next to the sample splits, read by the loader, the models' embedding
layer and (inside a model package) the scoring server. Paths in it are relative to its folder.

Example:
    >>> spec = FeatureSpec(
    ...     seq_len=4,
    ...     tables=(TableSpec(name="item", num_embeddings=11, embedding_dim=8, vocab="vocab/item.json"),),
    ...     features=(
    ...         FeatureSpec.Feature(name="item_id", kind=FeatureKind.SPARSE, table="item"),
    ...         FeatureSpec.Feature(name="hist_item_id", kind=FeatureKind.SEQUENCE, table="item"),
    ...         FeatureSpec.Feature(name="click", kind=FeatureKind.LABEL),
    ...     ),
    ...     domains=("feed", "search"),
    ... )
    >>> [f.name for f in spec.of_kind(FeatureKind.SPARSE)]
    ['item_id']
    >>> FeatureSpec.from_json(spec.to_json()) == spec
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum, unique
from pathlib import Path
from typing import Any

from seedrec.errors import ConfigError, SchemaError

__all__ = ["FeatureKind", "TableSpec", "Feature", "FeatureSpec", "SPEC_FILE"]

SPEC_FILE = "feature_spec.json"


@unique
class FeatureKind(str, Enum):
    SPARSE = "sparse"  # one id per sample (user_id, item_id, category_id, ...): pooled embedding
    SEQUENCE = "sequence"  # a list of ids per sample, most recent last (hist_*): un-pooled
    DENSE = "dense"  # one float per sample (price, hour, ...)
    LABEL = "label"  # a 0/1 target (click, purchase)
    DOMAIN = "domain"  # the sample's domain (scenario): an id that selects per-domain behaviour


@dataclass(frozen=True, kw_only=True)
class TableSpec:
    """One embedding table; row 0 is the OOV row, rows 1.. follow the vocabulary (or the hash)."""

    name: str
    num_embeddings: int
    embedding_dim: int
    vocab: str | None = None  # relative path of the vocabulary JSON; None for hashed tables
    hashed: bool = False

    def __post_init__(self) -> None:
        if self.num_embeddings < 2:
            raise ConfigError(f"table `{self.name}`: `num_embeddings` = {self.num_embeddings}; needs ≥ 2 (the OOV row and one id)")
        if self.embedding_dim < 1:
            raise ConfigError(f"table `{self.name}`: `embedding_dim` = {self.embedding_dim}; must be ≥ 1")
        if self.hashed == (self.vocab is not None):
            raise ConfigError(f"table `{self.name}`: give either `vocab` or `hashed=True`, not {'both' if self.hashed else 'neither'}")


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One feature: the sample column it reads and, for id features, the table it looks up."""

    name: str
    kind: FeatureKind
    table: str | None = None
    column: str | None = None  # the sample column; defaults to `name`

    @property
    def source(self) -> str:
        return self.column or self.name

    def __post_init__(self) -> None:
        needs_table = self.kind in (FeatureKind.SPARSE, FeatureKind.SEQUENCE, FeatureKind.DOMAIN)
        if needs_table and not self.table:
            raise ConfigError(f"feature `{self.name}` of kind {self.kind.value} needs a `table`")
        if not needs_table and self.table:
            raise ConfigError(f"feature `{self.name}` of kind {self.kind.value} cannot have a `table` ({self.table!r})")


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Every feature of a sample set, the tables they use, the sequence length and the domains."""

    Feature = Feature  # so `FeatureSpec.Feature(...)` reads naturally

    seq_len: int
    tables: tuple[TableSpec, ...]
    features: tuple[Feature, ...]
    domains: tuple[str, ...] = ()
    splits: dict[str, str] = field(default_factory=dict)  # split name -> relative folder
    stats: dict[str, Any] = field(default_factory=dict)  # row counts, label rates, time ranges

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ConfigError(f"`seq_len` = {self.seq_len}; must be ≥ 1")
        tables = {t.name for t in self.tables}
        if len(tables) != len(self.tables):
            raise ConfigError("`tables` has duplicate names")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ConfigError(f"`features` has duplicate names: {sorted({n for n in names if names.count(n) > 1})}")
        for f in self.features:
            if f.table and f.table not in tables:
                raise ConfigError(f"feature `{f.name}` uses table {f.table!r}, which is not in `tables` {sorted(tables)}")
        if len([f for f in self.features if f.kind is FeatureKind.DOMAIN]) > 1:
            raise ConfigError("at most one feature may have kind `domain`")

    # ---- queries -------------------------------------------------------------------------
    def of_kind(self, kind: FeatureKind) -> list[Feature]:
        return [f for f in self.features if f.kind is kind]

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r}; tables: {[t.name for t in self.tables]}")

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r}; features: {[f.name for f in self.features]}")

    @property
    def sparse_keys(self) -> list[str]:
        """KJT keys of :attr:`Batch.sparse` in order: the sparse features, then the domain feature."""
        return [f.name for f in self.features if f.kind in (FeatureKind.SPARSE, FeatureKind.DOMAIN)]

    @property
    def sequence_keys(self) -> list[str]:
        return [f.name for f in self.of_kind(FeatureKind.SEQUENCE)]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.of_kind(FeatureKind.DENSE)]

    @property
    def label_names(self) -> list[str]:
        return [f.name for f in self.of_kind(FeatureKind.LABEL)]

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        for f in d["features"]:
            f["kind"] = f["kind"].value
        return json.dumps(d, indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, origin: str = "feature_spec.json") -> FeatureSpec:
        try:
            d = json.loads(text)
            return cls(
                seq_len=int(d["seq_len"]),
                tables=tuple(TableSpec(**t) for t in d["tables"]),
                features=tuple(Feature(**{**f, "kind": FeatureKind(f["kind"])}) for f in d["features"]),
                domains=tuple(d.get("domains", ())),
                splits=dict(d.get("splits", {})),
                stats=dict(d.get("stats", {})),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            if isinstance(e, ConfigError):
                raise SchemaError(f"{origin}: {e}") from None
            raise SchemaError(f"{origin}: not a valid feature spec ({type(e).__name__}: {e})") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> FeatureSpec:
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.exists():
            raise SchemaError(f"{path}: missing; run `seedrec data build` to create samples and their feature spec")
        return cls.from_json(path.read_text(), origin=str(path))
