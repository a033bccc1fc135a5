"""The one transform: raw-id sample columns → embedding rows → a :class:`~feature_pipeline.batch.Batch`.

The training loader and the scoring server both call :meth:`FeatureTransform.to_batch` on an Arrow
table holding the sample columns of ``feature_spec.json`` (raw ids, strings, list columns), so the
mapping from ids to rows cannot skew between training and serving.

Layout of this module::

    splitmix64           stable 64-bit hash used by hashed tables
    Vocabulary           values → rows (row 0 = OOV), frequency floor, JSON save/load
    HashedVocabulary     int ids → rows by hash, for tables with ``hashed=True``
    FeatureTransform     spec + vocabularies → ``to_batch(table) -> Batch``

Row conventions: row 0 of every table is the OOV row (unknown, below the frequency floor, or
null); a vocabulary's values take rows 1..V in the order of its JSON file (most frequent first).

Example, T = 2, a sequence column cut to its last T entries::

    hist_item_id   sample 0 | 7 8 9   → 8 9     lengths [2, 0]
                   sample 1 |         →          values  [row(8), row(9)]

    >>> v = Vocabulary.build(pa.array([5, 5, 7, 9, 9, 9]), min_freq=2, name="item")
    >>> v.values, v.lookup(np.array([9, 5, 7, 42])).tolist()
    ([9, 5], [1, 2, 0, 0])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec import KeyedJaggedTensor

from feature_pipeline.batch import Batch
from feature_pipeline.spec import Feature, FeatureKind, FeatureSpec
from seedrec.errors import DataError, SchemaError

__all__ = ["splitmix64", "Vocabulary", "HashedVocabulary", "FeatureTransform", "ArrayLike"]

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | pa.Array | pa.ChunkedArray | Sequence[Any]

_INT = "int64"
_STR = "string"


# ==== helpers ==================================================================================
def splitmix64(x: np.ndarray) -> np.ndarray:
    """Stable 64-bit mix of int64 ids (splitmix64 finaliser); the same on every machine and run.

    Args:
        x: ids of any integer dtype.

    Returns:
        uint64 hashes, same shape as ``x``.
    """
    z = np.asarray(x).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _to_arrow(x: ArrayLike) -> pa.Array:
    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks()
    elif not isinstance(x, pa.Array):
        x = pa.array(np.asarray(x)) if isinstance(x, np.ndarray) else pa.array(x)
    if pa.types.is_dictionary(x.type):
        x = x.cast(x.type.value_type)
    return x


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _int_array(x: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns (int64 values, null mask or None)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
        return x.astype(np.int64, copy=False), None
    arr = _to_arrow(x)
    if not (pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)):
        raise SchemaError(f"{what}: expected integer ids, got {arr.type}")
    mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    vals = arr.fill_null(0) if arr.null_count else arr
    if pa.types.is_null(vals.type):
        return np.zeros(len(arr), np.int64), np.ones(len(arr), bool)
    return vals.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), mask


# ==== vocabularies =============================================================================
class Vocabulary:
    """Raw values (int64 ids or strings) → embedding rows; row 0 is the OOV row.

    Args:
        values: the kept values in row order (row ``i + 1`` for ``values[i]``).
        counts: their train-split frequencies (same length), kept for inspection.
        min_freq: the floor they were built with.
        name: the table name, for messages.
        dtype: ``"int64"`` or ``"string"``; inferred from ``values`` when omitted.

    Example:
        >>> v = Vocabulary.build(pa.array(["a", "b", "b", None]), min_freq=1, name="device")
        >>> v.values, v.lookup(pa.array(["b", "a", "zzz", None])).tolist(), v.num_rows
        (['b', 'a'], [1, 2, 0, 0], 3)
    """

    def __init__(
        self,
        values: Sequence[int] | Sequence[str],
        *,
        counts: Sequence[int] | None = None,
        min_freq: int = 1,
        name: str = "",
        dtype: str | None = None,
    ) -> None:
        self.name = name
        self.min_freq = int(min_freq)
        if dtype is None:
            dtype = _STR if len(values) > 0 and isinstance(values[0], str) else _INT
        if dtype not in (_INT, _STR):
            raise SchemaError(f"vocabulary `{name}`: dtype {dtype!r}; expected {_INT!r} or {_STR!r}")
        self.dtype = dtype
        self.values: list[Any] = [str(v) for v in values] if dtype == _STR else [int(v) for v in values]
        self.counts: list[int] = [int(c) for c in counts] if counts is not None else [0] * len(self.values)
        if len(self.counts) != len(self.values):
            raise SchemaError(f"vocabulary `{name}`: {len(self.values)} values but {len(self.counts)} counts")
        if len(set(self.values)) != len(self.values):
            raise SchemaError(f"vocabulary `{name}` holds duplicate values")
        if dtype == _INT:
            keys = np.asarray(self.values, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            self._keys = keys[order]  # sorted, for searchsorted
            self._rows = (order + 1).astype(np.int64)
        else:
            self._value_set = pa.array(self.values, type=pa.string())

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Vocabulary(name={self.name!r}, dtype={self.dtype}, size={len(self)}, min_freq={self.min_freq})"

    @property
    def num_rows(self) -> int:
        """Embedding rows needed: the values plus the OOV row 0."""
        return len(self.values) + 1

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        values: ArrayLike,
        min_freq: int = 1,
        *,
        counts: ArrayLike | None = None,
        name: str = "",
    ) -> Vocabulary:
        """Counts ``values`` (nulls ignored) and keeps those seen at least ``min_freq`` times.

        Rows are ordered by frequency (most frequent first), ties by value, so the result does not
        depend on input order.

        Args:
            values: raw observations, or distinct values when ``counts`` is given.
            min_freq: the frequency floor (≥ 1).
            counts: pre-aggregated counts per entry of ``values`` (entries may repeat; they are summed).
            name: the table name.
        """
        arr = _to_arrow(values)
        cnt = pa.array(np.ones(len(arr), np.int64)) if counts is None else _to_arrow(counts).cast(pa.int64())
        if _is_str(arr.type):
            arr, dtype = arr.cast(pa.string()), _STR
        elif pa.types.is_integer(arr.type) or pa.types.is_null(arr.type):
            arr, dtype = arr.cast(pa.int64()), _INT
        else:
            raise SchemaError(f"vocabulary `{name}`: cannot build from values of type {arr.type}")
        t = pa.table({"v": arr, "c": cnt}).filter(pc.is_valid(arr))
        g = t.group_by("v").aggregate([("c", "sum")])
        g = g.filter(pc.greater_equal(g.column("c_sum"), min_freq))
        g = g.sort_by([("c_sum", "descending"), ("v", "ascending")])
        return cls(g.column("v").to_pylist(), counts=g.column("c_sum").to_pylist(), min_freq=min_freq, name=name, dtype=dtype)

    # ---- lookup ---------------------------------------------------------------------------
    def lookup(self, x: ArrayLike) -> np.ndarray:
        """Maps raw values to rows, vectorised; unknown and null values → 0.

        Args:
            x: ids (numpy or Arrow integers) for an int vocabulary, strings for a string one.

        Returns:
            (N,) int64 rows in ``[0, num_rows)``.
        """
        if self.dtype == _INT:
            ids, mask = _int_array(x, f"vocabulary `{self.name}`")
            if not len(self._keys):
                return np.zeros(len(ids), np.int64)
            pos = np.searchsorted(self._keys, ids)
            pos = np.minimum(pos, len(self._keys) - 1)
            rows = np.where(self._keys[pos] == ids, self._rows[pos], 0)
            if mask is not None:
                rows[mask] = 0
            return rows.astype(np.int64, copy=False)
        arr = _to_arrow(x)
        if pa.types.is_null(arr.type):
            return np.zeros(len(arr), np.int64)
        if not _is_str(arr.type):
            raise SchemaError(f"vocabulary `{self.name}`: expected strings, got {arr.type}")
        idx = pc.index_in(arr.cast(pa.string()), value_set=self._value_set)
        return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1

    # ---- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "min_freq": self.min_freq, "values": self.values, "counts": self.counts}

    def save(self, path: str | Path) -> Path:
        """Writes ``{"values": [...], "counts": [...], "min_freq": n, ...}`` (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Reads a vocabulary JSON file; a malformed one raises SchemaError naming the file."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            return cls(
                d["values"],
                counts=d.get("counts"),
                min_freq=int(d.get("min_freq", 1)),
                name=str(d.get("name", path.stem)),
                dtype=d.get("dtype"),
            )
        except FileNotFoundError:
            raise SchemaError(f"{path}: vocabulary file missing") from None
        except (KeyError, TypeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            raise SchemaError(f"{path}: not a valid vocabulary ({type(e).__name__}: {e})") from None


class HashedVocabulary:
    """Int ids → rows ``splitmix64(id) % (num_rows - 1) + 1``; null → 0. No file, no floor.

    Example:
        >>> h = HashedVocabulary(num_rows=11, name="user")
        >>> rows = h.lookup(np.arange(1000))
        >>> int(rows.min()) >= 1 and int(rows.max()) <= 10
        True
    """

    dtype = _INT

    def __init__(self, *, num_rows: int, name: str = "") -> None:
        if num_rows < 2:
            raise SchemaError(f"hashed table `{name}`: num_rows = {num_rows}; needs ≥ 2")
        self.num_rows = int(num_rows)
        self.name = name

    def __repr__(self) -> str:
        return f"HashedVocabulary(name={self.name!r}, num_rows={self.num_rows})"

    def lookup(self, x: ArrayLike) -> np.ndarray:
        ids, mask = _int_array(x, f"hashed table `{self.name}`")
        rows = (splitmix64(ids) % np.uint64(self.num_rows - 1)).astype(np.int64) + 1
        if mask is not None:
            rows[mask] = 0
        return rows


AnyVocabulary = Vocabulary | HashedVocabulary


# ==== the transform ============================================================================
def _list_tail(arr: pa.Array | pa.ChunkedArray, t: int) -> tuple[np.ndarray, pa.Array]:
    """Keeps the last ``t`` entries of every list (null lists are empty).

    Returns:
        (B,) int64 lengths and the kept values, flattened sample-major.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise SchemaError(f"expected a list column, got {arr.type}")
    offsets = arr.offsets.to_numpy().astype(np.int64)  # (B+1,), slicing applied; values are not sliced
    ends = offsets[1:]
    lens = ends - offsets[:-1]
    if arr.null_count:
        lens = np.where(arr.is_valid().to_numpy(zero_copy_only=False), lens, 0)
    keep = np.minimum(lens, t)
    out_off = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(keep, out=out_off[1:])
    idx = np.arange(out_off[-1], dtype=np.int64) + np.repeat(ends - keep - out_off[:-1], keep)
    return keep, arr.values.take(pa.array(idx))


class FeatureTransform:
    """Sample columns (raw ids) → :class:`Batch`, driven by a :class:`FeatureSpec` and its vocabularies.

    Missing columns (as at serving, where the request carries no labels and maybe no history):
    sparse → OOV row 0, sequence → empty lists, dense → 0 (the train mean after normalisation),
    label → 0. The domain column is required when the spec has a domain feature; a domain outside
    ``spec.domains`` raises DataError. Dense features are normalised by ``spec.stats["dense"]``:
    ``{name: {"transform": "log1p" | "identity", "mean": m, "std": s}}``.

    Args:
        spec: the feature spec of the sample set (or model package).
        vocabs: one vocabulary per table of ``spec`` (hashed tables may be omitted).

    Example:
        >>> from feature_pipeline.spec import TableSpec
        >>> spec = FeatureSpec(seq_len=2, domains=("feed",),
        ...     tables=(TableSpec(name="item", num_embeddings=3, embedding_dim=4, vocab="vocab/item.json"),
        ...             TableSpec(name="domain", num_embeddings=2, embedding_dim=4, vocab="vocab/domain.json")),
        ...     features=(Feature(name="item_id", kind=FeatureKind.SPARSE, table="item"),
        ...               Feature(name="domain", kind=FeatureKind.DOMAIN, table="domain"),
        ...               Feature(name="hist_item_id", kind=FeatureKind.SEQUENCE, table="item"),
        ...               Feature(name="click", kind=FeatureKind.LABEL)))
        >>> tf = FeatureTransform(spec, {"item": Vocabulary([10, 20]), "domain": Vocabulary(["feed"])})
        >>> b = tf.to_batch(pa.table({"item_id": [20, 99], "domain": ["feed", "feed"],
        ...                           "hist_item_id": [[10, 20, 10], []], "click": [1, 0]}))
        >>> b.sparse["item_id"].values().tolist(), b.sequence["hist_item_id"].lengths().tolist()
        ([2, 0], [2, 0])
    """

    def __init__(self, spec: FeatureSpec, vocabs: Mapping[str, AnyVocabulary]) -> None:
        self.spec = spec
        resolved: dict[str, AnyVocabulary] = {}
        for t in spec.tables:
            v = vocabs.get(t.name)
            if v is None and t.hashed:
                v = HashedVocabulary(num_rows=t.num_embeddings, name=t.name)
            if v is None:
                raise SchemaError(f"table `{t.name}` of the feature spec has no vocabulary; expected {t.vocab}")
            if v.num_rows > t.num_embeddings:
                raise SchemaError(f"table `{t.name}`: vocabulary needs {v.num_rows} rows but the spec gives num_embeddings = {t.num_embeddings}")
            resolved[t.name] = v
        self.vocabs = resolved
        self._sparse = [spec.feature(k) for k in spec.sparse_keys]
        self._sequence = [spec.feature(k) for k in spec.sequence_keys]
        self._dense = spec.of_kind(FeatureKind.DENSE)
        self._labels = spec.of_kind(FeatureKind.LABEL)
        doms = spec.of_kind(FeatureKind.DOMAIN)
        self._domain: Feature | None = doms[0] if doms else None
        self._domain_set = pa.array(list(spec.domains), type=pa.string())
        users = [f for f in spec.of_kind(FeatureKind.SPARSE) if f.name == "user_id"] or [
            f for f in spec.of_kind(FeatureKind.SPARSE) if f.table == "user"
        ]
        self._user: Feature | None = users[0] if users else None
        self._dense_norm: dict[str, dict[str, Any]] = dict(spec.stats.get("dense", {}))

    @classmethod
    def from_spec_dir(cls, samples_dir: str | Path) -> FeatureTransform:
        """Loads ``feature_spec.json`` and the vocabulary files it names from ``samples_dir``."""
        root = Path(samples_dir)
        spec = FeatureSpec.load(root)
        vocabs: dict[str, AnyVocabulary] = {t.name: Vocabulary.load(root / t.vocab) for t in spec.tables if t.vocab is not None}
        return cls(spec, vocabs)

    @property
    def columns(self) -> list[str]:
        """The sample columns :meth:`to_batch` reads (others are ignored)."""
        feats = [*self._sparse, *self._sequence, *self._dense, *self._labels]
        return list(dict.fromkeys(f.source for f in feats))

    def to_batch(self, table: pa.Table | pa.RecordBatch) -> Batch:
        """Maps one table of samples (raw ids) to a Batch; no per-row Python.

        Args:
            table: B rows with (some of) the sample columns; list columns may hold more than T
                entries (the last T are kept) or fewer.

        Returns:
            The Batch; see :mod:`feature_pipeline.batch` for its layout.
        """
        B = table.num_rows
        names = set(table.schema.names)
        T = self.spec.seq_len

        sp_values: list[np.ndarray] = []
        user = np.zeros(B, np.int64)
        domain = np.zeros(B, np.int64)
        for f in self._sparse:
            assert f.table is not None  # spec validation: sparse/domain features have tables
            if f.source in names:
                rows = self.vocabs[f.table].lookup(table.column(f.source))
            elif f.kind is FeatureKind.DOMAIN:
                raise DataError(f"column `{f.source}` is missing; it is required (the domain of each sample, one of {list(self.spec.domains)})")
            else:
                rows = np.zeros(B, np.int64)
            if f.kind is FeatureKind.DOMAIN:
                domain = self._domain_index(table.column(f.source))
            if f is self._user and f.source in names:
                # GAUC groups by the RAW user id: OOV users would otherwise collapse into row 0.
                user = np.asarray(_to_arrow(table.column(f.source)).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
            sp_values.append(rows)
        sparse = KeyedJaggedTensor(
            keys=[f.name for f in self._sparse],
            values=torch.from_numpy(np.concatenate(sp_values) if sp_values else np.zeros(0, np.int64)),
            lengths=torch.ones(len(self._sparse) * B, dtype=torch.int32),
        )

        seq_values: list[np.ndarray] = []
        seq_lengths: list[np.ndarray] = []
        for f in self._sequence:
            assert f.table is not None
            if f.source in names:
                lens, vals = _list_tail(table.column(f.source), T)
                seq_values.append(self.vocabs[f.table].lookup(vals))
                seq_lengths.append(lens)
            else:
                seq_lengths.append(np.zeros(B, np.int64))
        sequence = KeyedJaggedTensor(
            keys=[f.name for f in self._sequence],
            values=torch.from_numpy(np.concatenate(seq_values) if seq_values else np.zeros(0, np.int64)),
            lengths=torch.from_numpy((np.concatenate(seq_lengths) if seq_lengths else np.zeros(0, np.int64)).astype(np.int32)),
        )

        dense = np.zeros((B, len(self._dense)), np.float32)
        for j, f in enumerate(self._dense):
            if f.source in names:
                dense[:, j] = self._normalise(f.name, _floats(table.column(f.source)))
        labels = np.zeros((B, len(self._labels)), np.float32)
        for j, f in enumerate(self._labels):
            if f.source in names:
                labels[:, j] = np.nan_to_num(_floats(table.column(f.source)), nan=0.0)

        return Batch(
            sparse=sparse,
            sequence=sequence,
            dense=torch.from_numpy(dense),  # (B, F)
            labels=torch.from_numpy(labels),  # (B, n_labels)
            domain=torch.from_numpy(domain),  # (B,)
            user=torch.from_numpy(np.array(user, dtype=np.int64)),  # (B,) a writable copy
        )

    # ---- pieces ---------------------------------------------------------------------------
    def _domain_index(self, col: pa.Array | pa.ChunkedArray) -> np.ndarray:
        arr = _to_arrow(col)
        if not _is_str(arr.type):
            raise SchemaError(f"column `domain` must hold strings, got {arr.type}")
        idx = pc.index_in(arr.cast(pa.string()), value_set=self._domain_set)
        if idx.null_count:
            bad = pc.unique(arr.filter(pc.is_null(idx))).to_pylist()[:5]
            raise DataError(f"column `domain` holds {bad}, not among the known domains {list(self.spec.domains)}")
        return idx.to_numpy(zero_copy_only=False).astype(np.int64)

    def _normalise(self, name: str, x: np.ndarray) -> np.ndarray:
        norm = self._dense_norm.get(name, {})
        kind = norm.get("transform", "identity")
        if kind == "log1p":
            x = np.log1p(np.maximum(x, 0.0))
        elif kind != "identity":
            raise SchemaError(f"dense feature `{name}`: unknown transform {kind!r} in feature_spec stats")
        x = (x - float(norm.get("mean", 0.0))) / float(norm.get("std", 1.0) or 1.0)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _floats(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    arr = _to_arrow(col)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    return arr.cast(pa.float64()).fill_null(float("nan")).to_numpy(zero_copy_only=False)
