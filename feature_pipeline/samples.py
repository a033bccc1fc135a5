"""The point-in-time sample builder behind ``seedrec data build``.

Logs (see :mod:`feature_pipeline.schemas`) → training samples, one row per impression, with the
user's last T events strictly before the impression's ``ts`` as list columns. Output layout::

    OUT/feature_spec.json            features, tables, domains, splits, stats (FeatureSpec)
    OUT/vocab/<table>.json           {"values": [...], "counts": [...], "min_freq": n, ...}
    OUT/train/part-<dt>.parquet      one file per day, row groups of ~64k rows
    OUT/valid/part-<dt>.parquet      the ``valid_days`` days before the test days
    OUT/test/part-<dt>.parquet       the last ``test_days`` days

Sample columns (raw ids are kept; the vocabularies map them at load time, see
:mod:`feature_pipeline.transform`)::

    request_id str, ts timestamp[ms, UTC], user_id int64, item_id int64, category_id int64,
    domain str, position int32, price float32, <context columns of impressions, e.g. hour, device>,
    <user attribute columns, e.g. age_bucket, gender, activity>, click int8, purchase int8,
    hist_item_id list<int64>, hist_category_id list<int64>, hist_domain list<str>,
    hist_action list<str>, hist_ts list<timestamp[ms, UTC]>      (oldest first, most recent last)

How the history join streams (memory stays bounded by one day plus a carry of ≤ T events/user)::

    for each day d (dt partitions of events and impressions, in date order):
        pool   = carry ∪ events(d)                 sorted by (user, ts) with one int64 key
        end    = searchsorted(pool_key, key(user, ts), side="left")  → events with ts < impression ts
        start  = max(user_start, end - T)          → hist = pool[start:end] as list columns
        carry  = last T events per user of pool

The split is by day: the last ``test_days`` days are ``test``, the ``valid_days`` before them are
``valid``, the rest ``train``. Vocabularies are counted on ``train`` only (``domain``: on every split,
domains being a closed set), so an id first seen in valid/test maps to the OOV row 0.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from feature_pipeline import log_io
from feature_pipeline.build_config import BuildConfig
from feature_pipeline.schemas import IMPRESSIONS, TS_TYPE
from feature_pipeline.spec import Feature, FeatureKind, FeatureSpec, TableSpec
from feature_pipeline.transform import Vocabulary
from seedrec.errors import DataError

__all__ = ["build_samples", "split_days", "EventPool", "SPLITS", "HIST_COLUMNS", "BuildConfig"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
HIST_COLUMNS: tuple[str, ...] = ("hist_item_id", "hist_category_id", "hist_domain", "hist_action", "hist_ts")

#: Columns of the event pool, in order: the history columns come from these.
_POOL_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("ts", TS_TYPE),
        ("item_id", pa.int64()),
        ("category_id", pa.int64()),
        ("domain", pa.string()),
        ("action", pa.string()),
    ]
)
_POOL_TO_HIST = {"item_id": "hist_item_id", "category_id": "hist_category_id", "domain": "hist_domain", "action": "hist_action", "ts": "hist_ts"}
_RESERVED = {*IMPRESSIONS.columns, "category_id", "price", "dt", *HIST_COLUMNS}
_MAX_KEY = 1 << 62


# ==== the point-in-time join ====================================================================
def _ts_int(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return col.cast(TS_TYPE).cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values in a sorted array → (unique values, run starts, run lengths)."""
    n = len(sorted_keys)
    if n == 0:
        e = np.zeros(0, np.int64)
        return e, e, e
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return sorted_keys[starts], starts, lengths


def _gather_ranges(start: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``range(start[i], start[i] + lengths[i])`` → (flat indices, offsets (n+1,))."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.arange(offsets[-1], dtype=np.int64) + np.repeat(start - offsets[:-1], lengths)
    return idx, offsets


@dataclass
class EventPool:
    """Events sorted by (user, ts): the source that histories are cut from.

    Holds :data:`_POOL_SCHEMA` columns (``user_id, ts, item_id, category_id, domain, action``);
    ties in (user, ts) keep their input order (stable sort), so the result is deterministic.

    Example:
        >>> ev = pa.table({"user_id": [1, 1, 2], "ts": pa.array([30, 10, 10], TS_TYPE), "item_id": [7, 8, 9],
        ...                "category_id": [0, 0, 0], "domain": ["a"] * 3, "action": ["click"] * 3})
        >>> pool = EventPool.from_events(ev)
        >>> h = pool.histories(np.array([1, 1, 3]), np.array([30, 31, 99]), seq_len=5)
        >>> h.column("hist_item_id").to_pylist()
        [[8], [8, 7], []]
    """

    table: pa.Table
    user: np.ndarray = field(init=False, repr=False)
    ts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user = self.table.column("user_id").to_numpy().astype(np.int64, copy=False)
        self.ts = _ts_int(self.table.column("ts"))

    @classmethod
    def empty(cls) -> EventPool:
        return cls(_POOL_SCHEMA.empty_table())

    @classmethod
    def from_events(cls, events: pa.Table) -> EventPool:
        """Sorts ``events`` (with the :data:`_POOL_SCHEMA` columns) by (user, ts)."""
        events = events.select(_POOL_SCHEMA.names).cast(_POOL_SCHEMA)
        user = events.column("user_id").to_numpy().astype(np.int64, copy=False)
        ts = _ts_int(events.column("ts"))
        order = _sort_order(user, ts)
        return cls(events.take(pa.array(order)).combine_chunks())

    def extend(self, events: pa.Table) -> EventPool:
        """A new pool with ``events`` added (after the existing ones among equal (user, ts))."""
        if events.num_rows == 0:
            return self
        return EventPool.from_events(pa.concat_tables([self.table, events.select(_POOL_SCHEMA.names).cast(_POOL_SCHEMA)]))

    def trim(self, seq_len: int) -> EventPool:
        """A new pool keeping each user's last ``seq_len`` events (all a later history can use)."""
        _, starts, lengths = _segments(self.user)
        seg_end = np.repeat(starts + lengths, lengths)
        keep = np.flatnonzero(np.arange(len(self.user)) >= seg_end - seq_len)
        if len(keep) == len(self.user):
            return self
        return EventPool(self.table.take(pa.array(keep)).combine_chunks())

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def history_bounds(self, user: np.ndarray, ts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """For each query (user, ts): pool rows ``[start, end)`` = its last ``seq_len`` events with event ts < ts.

        Args:
            user: (N,) int64 user ids.
            ts: (N,) int64 epoch milliseconds.
            seq_len: T.

        Returns:
            (N,) int64 start and (N,) int64 end; ``end - start`` ∈ [0, T].
        """
        n = len(user)
        uniq, starts, lengths = _segments(self.user)
        if n == 0 or len(uniq) == 0:
            z = np.zeros(n, np.int64)
            return z, z
        j = np.minimum(np.searchsorted(uniq, user), len(uniq) - 1)
        found = uniq[j] == user
        seg = np.repeat(np.arange(len(uniq), dtype=np.int64), lengths)
        pool_t, query_t, span = _time_axis(self.ts, ts)
        pool_key = seg * span + pool_t  # sorted: pool is sorted by (user, ts)
        end = np.searchsorted(pool_key, j * span + query_t, side="left")  # strictly before: equal ts excluded
        start = np.maximum(starts[j], end - seq_len)
        start = np.where(found, start, 0)
        end = np.where(found, end, 0)
        return start, end

    def histories(self, user: np.ndarray, ts: np.ndarray, seq_len: int) -> pa.Table:
        """The history list columns (:data:`HIST_COLUMNS`) for queries (user, ts), oldest first."""
        start, end = self.history_bounds(user, ts, seq_len)
        idx, offsets = _gather_ranges(start, end - start)
        if offsets[-1] >= np.iinfo(np.int32).max:
            raise DataError(f"one day yields {offsets[-1]} history entries, over the 2^31 limit of a list column; lower `seq_len`")
        off = pa.array(offsets.astype(np.int32))
        taken = self.table.take(pa.array(idx))
        cols = {_POOL_TO_HIST[c]: pa.ListArray.from_arrays(off, taken.column(c).combine_chunks()) for c in _POOL_TO_HIST}
        return pa.table({c: cols[c] for c in HIST_COLUMNS})


def _sort_order(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Stable argsort by (user, ts): one int64 key when it fits, else a lexsort."""
    if len(user) == 0:
        return np.zeros(0, np.int64)
    umin, umax = int(user.min()), int(user.max())
    tmin, tmax = int(ts.min()), int(ts.max())
    span = tmax - tmin + 1
    if (umax - umin + 1) * span < _MAX_KEY:
        return np.argsort((user - umin) * span + (ts - tmin), kind="stable")
    return np.lexsort((ts, user))


def _time_axis(pool_ts: np.ndarray, query_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Maps event and query times onto ``[0, span)`` so ``segment * span + t`` orders (user, ts).

    Query times are clipped to one past the last event (all events before) or 0 (none before),
    which keeps them inside their user's segment. When raw milliseconds would overflow the key,
    times are replaced by their ranks among all times (same order, smaller span).
    """
    tmin, tmax = int(pool_ts.min()), int(pool_ts.max())
    span = tmax - tmin + 2
    n_seg_bound = len(pool_ts) + 1
    if n_seg_bound * span < _MAX_KEY:
        return pool_ts - tmin, np.clip(query_ts - tmin, 0, span - 1), span
    grid = np.unique(pool_ts)
    pool_r = np.searchsorted(grid, pool_ts)  # rank among event times
    query_r = np.searchsorted(grid, query_ts, side="left")  # number of event times < query: same strict order
    return pool_r, query_r, len(grid) + 1


# ==== side tables ==============================================================================
class _SideTable:
    """A side table (users/items) indexed by its int64 key for vectorised left joins."""

    def __init__(self, table: pa.Table, key: str) -> None:
        keys = table.column(key).to_numpy().astype(np.int64, copy=False)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        first = np.r_[True, sk[1:] != sk[:-1]] if len(sk) else np.zeros(0, bool)
        self._keys, self._rows = sk[first], order[first]  # first row wins on duplicate keys
        self.table = table

    def join(self, ids: np.ndarray, columns: Iterable[str]) -> dict[str, pa.Array]:
        """Columns of the rows matching ``ids``; null where an id is absent."""
        if len(self._keys) == 0:
            return {c: pa.nulls(len(ids), self.table.schema.field(c).type) for c in columns}
        pos = np.minimum(np.searchsorted(self._keys, ids), len(self._keys) - 1)
        found = self._keys[pos] == ids
        idx = pa.array(self._rows[pos], mask=~found)
        return {c: self.table.column(c).combine_chunks().take(idx) for c in columns}


# ==== counting =================================================================================
class _Counter:
    """Streaming value counts of one vocabulary table (nulls ignored)."""

    def __init__(self, dtype: pa.DataType) -> None:
        self.dtype = dtype
        self._parts: list[pa.Table] = []

    def add(self, arr: pa.Array | pa.ChunkedArray) -> None:
        arr = arr.cast(self.dtype)
        vc = pc.value_counts(arr.drop_null())
        self._parts.append(pa.table({"v": vc.field("values"), "c": vc.field("counts").cast(pa.int64())}))
        if len(self._parts) >= 16:
            self._parts = [self._merged()]

    def _merged(self) -> pa.Table:
        if not self._parts:
            return pa.table({"v": pa.array([], self.dtype), "c": pa.array([], pa.int64())})
        t = pa.concat_tables(self._parts).group_by("v").aggregate([("c", "sum")])
        return t.select(["v", "c_sum"]).rename_columns(["v", "c"])

    def vocabulary(self, *, min_freq: int, name: str) -> Vocabulary:
        t = self._merged()
        return Vocabulary.build(t.column("v"), counts=t.column("c"), min_freq=min_freq, name=name)


@dataclass
class _Moments:
    n: int = 0
    s: float = 0.0
    ss: float = 0.0

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        self.n += len(x)
        self.s += float(x.sum())
        self.ss += float((x * x).sum())

    def norm(self, transform: str) -> dict[str, Any]:
        mean = self.s / self.n if self.n else 0.0
        var = self.ss / self.n - mean * mean if self.n else 1.0
        return {"transform": transform, "mean": mean, "std": math.sqrt(var) if var > 1e-12 else 1.0}


@dataclass
class _SplitStats:
    days: list[str] = field(default_factory=list)
    rows: int = 0
    clicks: int = 0
    purchases: int = 0
    hist_len: int = 0
    ts_min: int | None = None
    ts_max: int | None = None

    def add(self, dt: str, t: pa.Table) -> None:
        self.days.append(dt)
        self.rows += t.num_rows
        if t.num_rows == 0:
            return
        self.clicks += int(pc.sum(t.column("click").cast(pa.int64())).as_py() or 0)
        self.purchases += int(pc.sum(t.column("purchase").cast(pa.int64())).as_py() or 0)
        self.hist_len += int(pc.sum(pc.list_value_length(t.column("hist_item_id"))).as_py() or 0)
        ts = _ts_int(t.column("ts"))
        lo, hi = int(ts.min()), int(ts.max())
        self.ts_min = lo if self.ts_min is None else min(self.ts_min, lo)
        self.ts_max = hi if self.ts_max is None else max(self.ts_max, hi)

    def to_dict(self) -> dict[str, Any]:
        r = max(self.rows, 1)
        iso = lambda ms: None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()  # noqa: E731
        return {
            "days": self.days,
            "rows": self.rows,
            "click_rate": self.clicks / r,
            "purchase_rate": self.purchases / r,
            "mean_hist_len": self.hist_len / r,
            "ts_min": iso(self.ts_min),
            "ts_max": iso(self.ts_max),
        }


# ==== the split ================================================================================
def split_days(days: list[str], cfg: BuildConfig) -> dict[str, list[str]]:
    """Assigns sorted ``dt`` days to splits: last ``test_days`` → test, ``valid_days`` before → valid.

    Raises:
        DataError: fewer than ``valid_days + test_days + 1`` days (train would be empty).
    """
    need = cfg.valid_days + cfg.test_days + 1
    if len(days) < need:
        raise DataError(
            f"the impressions log has {len(days)} day partition(s) {days}; the split needs ≥ {need} "
            f"(`valid_days` = {cfg.valid_days} + `test_days` = {cfg.test_days} + ≥ 1 train day): "
            "lower `valid_days`/`test_days` or log more days"
        )
    n_test, n_valid = cfg.test_days, cfg.valid_days
    n_train = len(days) - n_test - n_valid
    return {"train": days[:n_train], "valid": days[n_train : n_train + n_valid], "test": days[n_train + n_valid :]}


# ==== the builder ==============================================================================
def _read_partition(root: Path, name: str, dt: str, columns: list[str] | None = None) -> pa.Table:
    tables = [log_io.read_file(f, name, columns=columns) for f in log_io.list_files(root, name, dt)]
    return pa.concat_tables(tables, promote_options="default")


def _column_kind(t: pa.DataType) -> FeatureKind | None:
    """Context / attribute columns: strings and ints → sparse ids, floats → dense, others skipped."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return FeatureKind.SPARSE
    if pa.types.is_floating(t):
        return FeatureKind.DENSE
    return None


def _canonical_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_boolean(t):
        return pa.int8()
    return t


@dataclass
class _Layout:
    """The extra columns of the samples and what they become."""

    context: dict[str, pa.DataType]  # impressions column → its sample type
    user_attrs: dict[str, tuple[str, pa.DataType]]  # sample column → (users column, sample type)

    def kind(self, col: str) -> FeatureKind | None:
        t = self.context[col] if col in self.context else self.user_attrs[col][1]
        return _column_kind(t)


def _layout(first_impressions: pa.Schema, users: pa.Table | None) -> _Layout:
    context: dict[str, pa.DataType] = {}
    for f in first_impressions:
        if f.name in _RESERVED:
            continue
        if _column_kind(f.type) is None:
            logger.warning("impressions column %s has type %s; skipped (only strings, ints and floats become features)", f.name, f.type)
            continue
        context[f.name] = _canonical_type(f.type)
    user_attrs: dict[str, tuple[str, pa.DataType]] = {}
    if users is not None:
        for f in users.schema:
            if f.name == "user_id" or f.name == "dt":
                continue
            if _column_kind(f.type) is None:
                logger.warning("users column %s has type %s; skipped", f.name, f.type)
                continue
            out = f.name if f.name not in _RESERVED and f.name not in context else f"user_{f.name}"
            user_attrs[out] = (f.name, _canonical_type(f.type))
    return _Layout(context=context, user_attrs=user_attrs)


def _day_samples(
    imps: pa.Table,
    pool: EventPool,
    items: _SideTable,
    users: _SideTable | None,
    layout: _Layout,
    seq_len: int,
) -> pa.Table:
    """The sample rows of one day's impressions (sorted by ts, stable)."""
    ts = _ts_int(imps.column("ts"))
    order = np.argsort(ts, kind="stable")
    imps = imps.take(pa.array(order))
    ts = ts[order]
    user = imps.column("user_id").to_numpy().astype(np.int64, copy=False)
    item = imps.column("item_id").to_numpy().astype(np.int64, copy=False)
    it = items.join(item, ["category_id", "price"])
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "request_id": imps.column("request_id"),
        "ts": imps.column("ts"),
        "user_id": imps.column("user_id"),
        "item_id": imps.column("item_id"),
        "category_id": it["category_id"].cast(pa.int64()),
        "domain": imps.column("domain"),
        "position": imps.column("position").cast(pa.int32()),
        "price": it["price"].cast(pa.float32()),
    }
    names = set(imps.column_names)
    for c, t in layout.context.items():
        cols[c] = imps.column(c).cast(t) if c in names else pa.nulls(imps.num_rows, t)
    if layout.user_attrs:
        assert users is not None  # user_attrs come from the users table
        joined = users.join(user, [src for src, _ in layout.user_attrs.values()])
        for c, (src, t) in layout.user_attrs.items():
            cols[c] = joined[src].cast(t)
    cols["click"] = imps.column("click")
    cols["purchase"] = imps.column("purchase")
    hist = pool.histories(user, ts, seq_len)
    for c in HIST_COLUMNS:
        cols[c] = hist.column(c)
    return pa.table(cols)


def _clean_output(out: Path) -> None:
    """Removes sample files of a previous build so stale days cannot mix in."""
    for split in SPLITS:
        for p in (out / split).glob("part-*.parquet"):
            p.unlink()
    if (out / "vocab").is_dir():
        shutil.rmtree(out / "vocab")


def build_samples(logs: str | Path, out: str | Path, cfg: BuildConfig | None = None) -> FeatureSpec:
    """Builds point-in-time samples, vocabularies and ``feature_spec.json`` from logs.

    Every log file's schema is checked before any row is read, and the build is written to a
    staging folder that replaces ``out``'s samples only when it succeeded: a bad log file leaves a
    previous build in ``out`` untouched.

    Args:
        logs: the log root (``impressions/``, ``events/``, ``items/``, optional ``users/``).
        out: the output folder (created; sample files of an earlier build there are replaced).
        cfg: the build configuration; defaults to ``BuildConfig()``.

    Returns:
        The written feature spec (also at ``out/feature_spec.json``).

    Raises:
        SchemaError: a log file breaks its schema (from :mod:`feature_pipeline.log_io`).
        DataError: missing logs, too few days for the split, or a split without rows.
    """
    cfg = cfg or BuildConfig()
    logs, out = Path(logs), Path(out)
    for name in ("impressions", "events", "items", *(["users"] if (logs / "users").is_dir() else [])):
        log_io.validate_files(logs, name)
    staging = out.parent / f".{out.name}.building"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        spec = _build(logs, staging, cfg)
        out.mkdir(parents=True, exist_ok=True)
        _clean_output(out)
        for child in staging.iterdir():
            target = out / child.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(child), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("samples in %s", out)
    return spec


def _build(logs: Path, out: Path, cfg: BuildConfig) -> FeatureSpec:
    t0 = time.perf_counter()
    imp_days = log_io.list_partitions(logs, "impressions")
    if not imp_days:
        raise DataError(f"{logs / 'impressions'} has no dt=YYYY-MM-DD partitions")
    splits = split_days(imp_days, cfg)
    split_of = {d: s for s, ds in splits.items() for d in ds}
    ev_days = [d for d in log_io.list_partitions(logs, "events") if d <= imp_days[-1]]
    days = sorted(set(imp_days) | set(ev_days))

    items = _SideTable(log_io.read_table(logs, "items", columns=["item_id", "category_id", "price"]), "item_id")
    users_t = log_io.read_table(logs, "users") if (logs / "users").is_dir() else None
    users = _SideTable(users_t, "user_id") if users_t is not None else None
    layout = _layout(pq.read_schema(log_io.list_files(logs, "impressions", imp_days[0])[0]), users_t)
    logger.info("building samples from %s: %d impression days %s → %s", logs, len(imp_days), {s: len(d) for s, d in splits.items()}, out)

    counters: dict[str, _Counter] = {
        "item": _Counter(pa.int64()),
        "category": _Counter(pa.int64()),
        "domain": _Counter(pa.string()),
        "action": _Counter(pa.string()),
    }
    if cfg.user_hash_buckets == 0:
        counters["user"] = _Counter(pa.int64())
    extra_sparse = [c for c in [*layout.context, *layout.user_attrs] if layout.kind(c) is FeatureKind.SPARSE]
    extra_dense = [c for c in [*layout.context, *layout.user_attrs] if layout.kind(c) is FeatureKind.DENSE]
    for c in extra_sparse:
        t = layout.context[c] if c in layout.context else layout.user_attrs[c][1]
        counters[c] = _Counter(pa.string() if pa.types.is_string(t) else pa.int64())
    moments = {c: _Moments() for c in ["price", *extra_dense]}
    stats = {s: _SplitStats() for s in SPLITS}
    actions = pa.array(list(cfg.history_actions)) if cfg.history_actions is not None else None

    _clean_output(out)
    for s in SPLITS:
        if splits[s]:
            (out / s).mkdir(parents=True, exist_ok=True)
    pool = EventPool.empty()
    t_join = 0.0
    for dt in tqdm(days, desc="data build", unit="day", disable=not cfg.progress):
        if dt in ev_days:
            ev = _read_partition(logs, "events", dt, columns=["ts", "user_id", "item_id", "domain", "action"])
            if actions is not None:
                ev = ev.filter(pc.is_in(ev.column("action"), value_set=actions))
            ev = ev.append_column("category_id", items.join(ev.column("item_id").to_numpy(), ["category_id"])["category_id"].cast(pa.int64()))
            pool = pool.extend(ev)
            counters["domain"].add(ev.column("domain"))  # domains are a closed set: every split counts
        if dt in split_of:
            imps = _read_partition(logs, "impressions", dt)
            tj = time.perf_counter()
            samples = _day_samples(imps, pool, items, users, layout, cfg.seq_len)
            t_join += time.perf_counter() - tj
            split = split_of[dt]
            pq.write_table(samples, out / split / f"part-{dt}.parquet", row_group_size=cfg.row_group_size)
            stats[split].add(dt, samples)
            counters["domain"].add(samples.column("domain"))
            if split == "train":
                _count_train(samples, counters, moments, extra_sparse, extra_dense)
            logger.debug("day %s (%s): %d samples, pool %d events", dt, split, samples.num_rows, pool.num_rows)
        pool = pool.trim(cfg.seq_len)

    for s in SPLITS:
        if splits[s] and stats[s].rows == 0:
            raise DataError(f"split `{s}` (days {splits[s]}) has no impression rows; check the impressions log or change `valid_days`/`test_days`")

    spec = _write_spec(out, cfg, splits, counters, moments, stats, layout, extra_sparse, extra_dense, time.perf_counter() - t0, t_join)
    logger.info(
        "built %s samples in %.1fs (history join %.1fs): %s",
        {s: stats[s].rows for s in SPLITS},
        spec.stats["build_seconds"],
        t_join,
        out,
    )
    return spec


def _count_train(
    samples: pa.Table,
    counters: dict[str, _Counter],
    moments: dict[str, _Moments],
    extra_sparse: list[str],
    extra_dense: list[str],
) -> None:
    counters["item"].add(samples.column("item_id"))
    counters["item"].add(pc.list_flatten(samples.column("hist_item_id")))
    counters["category"].add(samples.column("category_id"))
    counters["category"].add(pc.list_flatten(samples.column("hist_category_id")))
    counters["action"].add(pc.list_flatten(samples.column("hist_action")))
    if "user" in counters:
        counters["user"].add(samples.column("user_id"))
    for c in extra_sparse:
        counters[c].add(samples.column(c))
    price = samples.column("price").cast(pa.float64()).fill_null(float("nan")).to_numpy()
    moments["price"].add(np.log1p(np.maximum(price, 0.0)))
    for c in extra_dense:
        moments[c].add(samples.column(c).cast(pa.float64()).fill_null(float("nan")).to_numpy())


def _write_spec(
    out: Path,
    cfg: BuildConfig,
    splits: dict[str, list[str]],
    counters: dict[str, _Counter],
    moments: dict[str, _Moments],
    stats: dict[str, _SplitStats],
    layout: _Layout,
    extra_sparse: list[str],
    extra_dense: list[str],
    build_seconds: float,
    join_seconds: float,
) -> FeatureSpec:
    tables: list[TableSpec] = []
    domains: tuple[str, ...] = ()
    for name, counter in counters.items():
        if name == "domain":
            # closed set, every split: all domains kept, rows in name order so spec.domains[i] = row i+1
            v = counter.vocabulary(min_freq=1, name=name)
            order = sorted(range(len(v.values)), key=lambda i: v.values[i])
            v = Vocabulary([v.values[i] for i in order], counts=[v.counts[i] for i in order], min_freq=1, name=name)
            domains = tuple(v.values)
        else:
            v = counter.vocabulary(min_freq=cfg.min_freq_of(name), name=name)
        if len(v) == 0:
            logger.warning("vocabulary %s is empty after the frequency floor %d: every value maps to OOV", name, v.min_freq)
        v.save(out / "vocab" / f"{name}.json")
        tables.append(TableSpec(name=name, num_embeddings=max(v.num_rows, 2), embedding_dim=cfg.dim_of(name), vocab=f"vocab/{name}.json"))
    if cfg.user_hash_buckets:
        tables.append(TableSpec(name="user", num_embeddings=cfg.user_hash_buckets + 1, embedding_dim=cfg.dim_of("user"), hashed=True))

    F, K = Feature, FeatureKind
    features = [
        F(name="user_id", kind=K.SPARSE, table="user"),
        F(name="item_id", kind=K.SPARSE, table="item"),
        F(name="category_id", kind=K.SPARSE, table="category"),
        *[F(name=c, kind=K.SPARSE, table=c) for c in extra_sparse],
        F(name="domain", kind=K.DOMAIN, table="domain"),
        F(name="hist_item_id", kind=K.SEQUENCE, table="item"),
        F(name="hist_category_id", kind=K.SEQUENCE, table="category"),
        F(name="hist_domain", kind=K.SEQUENCE, table="domain"),
        F(name="hist_action", kind=K.SEQUENCE, table="action"),
        F(name="price", kind=K.DENSE),
        *[F(name=c, kind=K.DENSE) for c in extra_dense],
        F(name="click", kind=K.LABEL),
        F(name="purchase", kind=K.LABEL),
    ]
    dense_norm = {"price": moments["price"].norm("log1p"), **{c: moments[c].norm("identity") for c in extra_dense}}
    spec = FeatureSpec(
        seq_len=cfg.seq_len,
        tables=tuple(tables),
        features=tuple(features),
        domains=domains,
        splits={s: s for s in SPLITS if splits[s]},
        stats={
            **{s: stats[s].to_dict() for s in SPLITS if splits[s]},
            "dense": dense_norm,
            "context_columns": list(layout.context),
            "user_columns": {c: src for c, (src, _) in layout.user_attrs.items()},
            "build_seconds": build_seconds,
            "history_join_seconds": join_seconds,
            "config": {
                "seq_len": cfg.seq_len,
                "min_freq": cfg.min_freq,
                "table_min_freq": dict(cfg.table_min_freq),
                "valid_days": cfg.valid_days,
                "test_days": cfg.test_days,
                "user_hash_buckets": cfg.user_hash_buckets,
                "history_actions": list(cfg.history_actions) if cfg.history_actions is not None else None,
            },
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    spec.save(out)
    return spec
