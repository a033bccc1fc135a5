"""The online feature store: each user's recent behaviours and attributes in Redis.

Written by the events writer (:class:`OnlineStoreWriter`, fed with event and user tables in the log
schema); read by the scoring server when a request carries no history (:class:`OnlineStoreReader`).
This module is the one layout of the store: the key builders, the record codec and the reply
parsers are pure functions, shared by the writer, the reader and the golden-bytes tests.

Layout (``ns`` = namespace, default ``seedrec``; ids in decimal ASCII)::

    ======================== ===== ==================================================================
    key                      type  value
    ======================== ===== ==================================================================
    ``{ns}:hist:{user_id}``  LIST  behaviour records (below), oldest first (RPUSH), capped to the
                                   last ``max_len`` by LTRIM; TTL ``ttl_s`` when set
    ``{ns}:user:{user_id}``  HASH  field = users-table column, value = typed text: ``s:<utf-8>``,
                                   ``i:<decimal int>`` or ``f:<repr float>``
    ``{ns}:meta``            HASH  ``format`` = ``seedrec.online_store/v1``, ``max_len``
    ======================== ===== ==================================================================

A behaviour record (little-endian, 27 + a + d bytes)::

    offset  size  field
    0       1     record version = 0x01
    1       8     ts_ms        int64, event time in ms since the epoch (UTC)
    9       8     item_id      int64
    17      8     category_id  int64; INT64_MIN = unknown (maps to the OOV row)
    25      1     a = len(action)   (UTF-8 bytes, ≤ 255)
    26      1     d = len(domain)
    27      a     action (UTF-8)
    27+a    d     domain (UTF-8)

Records are appended in event-time order per batch; a late event may land after a newer one, so the
reader sorts by ``ts_ms`` (stable). Round trips: one pipeline per written batch
(``RPUSH``+``LTRIM``[+``EXPIRE``] per user), one pipeline per read (``LRANGE`` + ``HGETALL`` per user).

Example:
    >>> history_key(42)
    b'seedrec:hist:42'
    >>> rec = encode_behaviour(ts_ms=1000, item_id=7, category_id=3, action="click", domain="feed")
    >>> decode_behaviour(rec)
    Behaviour(ts_ms=1000, item_id=7, category_id=3, action='click', domain='feed')
"""

from __future__ import annotations

import argparse
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seedrec.errors import DataError, SchemaError

__all__ = [
    "FORMAT",
    "UNKNOWN_CATEGORY",
    "Behaviour",
    "UserFeatures",
    "history_key",
    "user_key",
    "meta_key",
    "encode_behaviour",
    "decode_behaviour",
    "encode_value",
    "decode_value",
    "parse_history",
    "parse_user",
    "OnlineStoreWriter",
    "OnlineStoreReader",
    "main",
]

logger = logging.getLogger(__name__)

FORMAT = "seedrec.online_store/v1"
DEFAULT_NAMESPACE = "seedrec"
#: ``category_id`` of a behaviour whose item was not in the items table.
UNKNOWN_CATEGORY = -(2**63)
_RECORD_VERSION = 1
_HEAD = struct.Struct("<BqqqBB")  # version, ts_ms, item_id, category_id, len(action), len(domain)


# ==== records ==================================================================================
@dataclass(frozen=True)
class Behaviour:
    """One stored behaviour; ``category_id`` is None when unknown."""

    ts_ms: int
    item_id: int
    category_id: int | None
    action: str
    domain: str


@dataclass(frozen=True)
class UserFeatures:
    """What the store holds for one user: behaviours (oldest first) and attributes."""

    user_id: int
    history: tuple[Behaviour, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


# ==== keys (pure) ==============================================================================
def history_key(user_id: int, *, namespace: str = DEFAULT_NAMESPACE) -> bytes:
    """``{ns}:hist:{user_id}``, the LIST of a user's behaviour records."""
    return f"{namespace}:hist:{int(user_id)}".encode()


def user_key(user_id: int, *, namespace: str = DEFAULT_NAMESPACE) -> bytes:
    """``{ns}:user:{user_id}``, the HASH of a user's attributes."""
    return f"{namespace}:user:{int(user_id)}".encode()


def meta_key(*, namespace: str = DEFAULT_NAMESPACE) -> bytes:
    """``{ns}:meta``, the HASH describing the store."""
    return f"{namespace}:meta".encode()


# ==== codecs (pure) ============================================================================
def encode_behaviour(*, ts_ms: int, item_id: int, category_id: int | None, action: str, domain: str) -> bytes:
    """Packs one behaviour record (see the module docstring).

    Raises:
        DataError: ``action`` or ``domain`` longer than 255 UTF-8 bytes.
    """
    a, d = action.encode(), domain.encode()
    if len(a) > 255 or len(d) > 255:
        raise DataError(f"behaviour of item {item_id}: action/domain longer than 255 bytes ({len(a)}, {len(d)})")
    cat = UNKNOWN_CATEGORY if category_id is None else int(category_id)
    return _HEAD.pack(_RECORD_VERSION, int(ts_ms), int(item_id), cat, len(a), len(d)) + a + d


def decode_behaviour(record: bytes) -> Behaviour:
    """Unpacks one record.

    Raises:
        DataError: a truncated record or an unknown record version.
    """
    if len(record) < _HEAD.size:
        raise DataError(f"behaviour record of {len(record)} bytes is truncated (needs ≥ {_HEAD.size})")
    version, ts, item, cat, na, nd = _HEAD.unpack_from(record)
    if version != _RECORD_VERSION:
        raise DataError(f"behaviour record version {version}; this reader knows {_RECORD_VERSION}")
    if len(record) != _HEAD.size + na + nd:
        raise DataError(f"behaviour record of {len(record)} bytes; its header says {_HEAD.size + na + nd}")
    a = record[_HEAD.size : _HEAD.size + na].decode()
    d = record[_HEAD.size + na :].decode()
    return Behaviour(ts_ms=ts, item_id=item, category_id=None if cat == UNKNOWN_CATEGORY else cat, action=a, domain=d)


def encode_value(value: Any) -> bytes:
    """Typed text of one attribute: ``s:`` strings, ``i:`` ints (and bools), ``f:`` floats.

    Example:
        >>> encode_value("ios"), encode_value(3), encode_value(0.5)
        (b's:ios', b'i:3', b'f:0.5')
    """
    if isinstance(value, str):
        return b"s:" + value.encode()
    if isinstance(value, (bool, int, np.integer)):
        return b"i:%d" % int(value)
    if isinstance(value, (float, np.floating)):
        return b"f:" + repr(float(value)).encode()
    raise DataError(f"attribute value {value!r} of type {type(value).__name__}; only str, int and float are stored")


def decode_value(raw: bytes) -> Any:
    """Inverse of :func:`encode_value`."""
    tag, _, body = raw.partition(b":")
    if tag == b"s":
        return body.decode()
    if tag == b"i":
        return int(body)
    if tag == b"f":
        return float(body)
    raise DataError(f"attribute value {raw[:20]!r} has no known type tag (s:, i:, f:)")


def parse_history(records: Sequence[bytes], *, limit: int | None = None) -> tuple[Behaviour, ...]:
    """LRANGE reply → behaviours sorted by time (stable), the last ``limit`` kept."""
    out = sorted((decode_behaviour(r) for r in records), key=lambda b: b.ts_ms)
    return tuple(out[-limit:] if limit else out)


def parse_user(reply: Mapping[bytes, bytes]) -> dict[str, Any]:
    """HGETALL reply → ``{column: value}``."""
    return {k.decode(): decode_value(v) for k, v in reply.items()}


# ==== writer ===================================================================================
class OnlineStoreWriter:
    """Appends behaviours and user attributes to the store, one pipeline per batch.

    Args:
        client: a ``redis.Redis`` connected to the store.
        namespace: the key prefix.
        max_len: behaviours kept per user (the most recent); ≥ the longest ``seq_len`` served.
        ttl_s: expire a user's keys this long after their last write; ``None`` = never.
        items: the items side table (``item_id``, ``category_id``): gives each behaviour its
            category, as the sample builder does; without it categories are unknown.
        actions: only these actions are stored (the sample builder's ``history_actions``); ``None`` = all.

    Example:
        >>> w = OnlineStoreWriter(client, items=items_table, max_len=100)   # doctest: +SKIP
        >>> w.write_events(events_table)                                     # doctest: +SKIP
        1234
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        max_len: int = 100,
        ttl_s: int | None = None,
        items: pa.Table | None = None,
        actions: Sequence[str] | None = None,
    ) -> None:
        if max_len < 1:
            raise DataError(f"`max_len` = {max_len}; must be ≥ 1")
        if ttl_s is not None and ttl_s < 1:
            raise DataError(f"`ttl_s` = {ttl_s}; must be ≥ 1 or None")
        self._r = client
        self.namespace = namespace
        self.max_len = int(max_len)
        self.ttl_s = ttl_s
        self.actions = tuple(actions) if actions is not None else None
        self._item_keys: np.ndarray | None = None
        self._item_cats: np.ndarray | None = None
        if items is not None:
            for col in ("item_id", "category_id"):
                if col not in items.column_names:
                    raise SchemaError(f"items table: column `{col}` is missing")
            ids = items.column("item_id").to_numpy().astype(np.int64)
            order = np.argsort(ids, kind="stable")
            self._item_keys = ids[order]
            self._item_cats = items.column("category_id").to_numpy().astype(np.int64)[order]

    def _categories(self, item_ids: np.ndarray) -> np.ndarray:
        if self._item_keys is None or self._item_cats is None or not len(self._item_keys):
            return np.full(len(item_ids), UNKNOWN_CATEGORY, np.int64)
        pos = np.minimum(np.searchsorted(self._item_keys, item_ids), len(self._item_keys) - 1)
        return np.where(self._item_keys[pos] == item_ids, self._item_cats[pos], UNKNOWN_CATEGORY)

    def write_events(self, events: pa.Table) -> int:
        """Appends an events table (``ts, user_id, item_id, domain, action``) in one pipeline.

        Returns:
            The number of behaviours written.

        Raises:
            SchemaError: a required column is missing.
        """
        for col in ("ts", "user_id", "item_id", "domain", "action"):
            if col not in events.column_names:
                raise SchemaError(f"events table: column `{col}` is missing (log schema: ts, user_id, item_id, domain, action)")
        if self.actions is not None:
            events = events.filter(pc.is_in(events.column("action"), value_set=pa.array(list(self.actions), pa.string())))
        n = events.num_rows
        if not n:
            return 0
        ts = events.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
        user = events.column("user_id").to_numpy().astype(np.int64)
        item = events.column("item_id").to_numpy().astype(np.int64)
        cat = self._categories(item)
        action = events.column("action").to_pylist()
        domain = events.column("domain").to_pylist()
        order = np.lexsort((ts, user))  # by user, then time: each user's records go in oldest first
        bounds = np.flatnonzero(np.diff(user[order])) + 1
        pipe = self._r.pipeline(transaction=False)
        for group in np.split(order, bounds):
            u = int(user[group[0]])
            recs = [encode_behaviour(ts_ms=int(ts[i]), item_id=int(item[i]), category_id=int(cat[i]),
                                     action=action[i], domain=domain[i]) for i in group[-self.max_len:]]
            key = history_key(u, namespace=self.namespace)
            pipe.rpush(key, *recs)
            pipe.ltrim(key, -self.max_len, -1)
            if self.ttl_s is not None:
                pipe.expire(key, self.ttl_s)
        pipe.hset(meta_key(namespace=self.namespace), mapping={"format": FORMAT, "max_len": str(self.max_len)})
        pipe.execute()  # one round trip for the whole batch
        return n

    def write_users(self, users: pa.Table) -> int:
        """Replaces the attributes of every user of a users table (``user_id`` + attribute columns).

        Returns:
            The number of users written.
        """
        if "user_id" not in users.column_names:
            raise SchemaError("users table: column `user_id` is missing")
        cols = [c for c in users.column_names if c not in ("user_id", "dt")]
        ids = users.column("user_id").to_pylist()
        values = {c: users.column(c).to_pylist() for c in cols}
        pipe = self._r.pipeline(transaction=False)
        for i, u in enumerate(ids):
            mapping = {c: encode_value(values[c][i]) for c in cols if values[c][i] is not None}
            key = user_key(u, namespace=self.namespace)
            pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)
            if self.ttl_s is not None:
                pipe.expire(key, self.ttl_s)
        pipe.execute()  # one round trip
        return len(ids)


# ==== reader ===================================================================================
class OnlineStoreReader:
    """Reads users' behaviours and attributes, one pipeline (one round trip) per call.

    Args:
        client: a ``redis.Redis`` connected to the store (give it a socket timeout: the reader
            does not retry).
        namespace: the key prefix the writer used.
    """

    def __init__(self, client: Any, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._r = client
        self.namespace = namespace

    def read(self, user_ids: Iterable[int], *, limit: int | None = None) -> list[UserFeatures]:
        """Returns each user's last ``limit`` behaviours (oldest first) and attributes.

        Raises:
            redis.RedisError: the store is unreachable or timed out (callers decide the fallback).
        """
        ids = [int(u) for u in user_ids]
        pipe = self._r.pipeline(transaction=False)
        for u in ids:
            pipe.lrange(history_key(u, namespace=self.namespace), -limit if limit else 0, -1)
            pipe.hgetall(user_key(u, namespace=self.namespace))
        replies = pipe.execute()  # one round trip
        return [
            UserFeatures(user_id=u, history=parse_history(replies[2 * i], limit=limit), attributes=parse_user(replies[2 * i + 1]))
            for i, u in enumerate(ids)
        ]


# ==== command line =============================================================================
def load_logs(
    logs: str | Path,
    *,
    redis_url: str,
    namespace: str = DEFAULT_NAMESPACE,
    max_len: int = 100,
    ttl_s: int | None = None,
    actions: Sequence[str] | None = None,
) -> dict[str, int]:
    """Writes the events (day by day) and users of a log folder into the store.

    Returns:
        ``{"events": n, "users": m}``.
    """
    import redis

    from feature_pipeline import log_io

    client = redis.Redis.from_url(redis_url)
    root = Path(logs)
    items = log_io.read_table(root, "items") if (root / "items").is_dir() else None
    writer = OnlineStoreWriter(client, namespace=namespace, max_len=max_len, ttl_s=ttl_s, items=items, actions=actions)
    n_ev = 0
    for _, day in log_io.iter_partitions(root, "events"):  # one day at a time: bounded memory
        n_ev += writer.write_events(day)
    n_users = writer.write_users(log_io.read_table(root, "users")) if (root / "users").is_dir() else 0
    return {"events": n_ev, "users": n_users}


def main(argv: list[str] | None = None) -> int:
    """``python -m feature_pipeline.online_store --logs DIR [--redis URL] [--max-len N]``."""
    from seedrec.logs import setup_logging

    ap = argparse.ArgumentParser(prog="python -m feature_pipeline.online_store", description="Logs -> online feature store.")
    ap.add_argument("--logs", required=True, help="log root (events/, users/, items/)")
    ap.add_argument("--redis", default=None, help="redis://host:port/db (default: $REDIS_URL)")
    ap.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    ap.add_argument("--max-len", type=int, default=100)
    ap.add_argument("--ttl-s", type=int, default=None)
    args = ap.parse_args(argv)
    setup_logging()
    import os

    url = args.redis or os.environ.get("REDIS_URL")
    if not url:
        logger.error("no Redis: pass --redis redis://host:port/0 or set REDIS_URL")
        return 2
    summary = load_logs(args.logs, redis_url=url, namespace=args.namespace, max_len=args.max_len, ttl_s=args.ttl_s)
    logger.info("online store written: %s", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
