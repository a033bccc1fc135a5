"""The Redis layout of the LMN memory block: keys, fields and value encodings.

One block ``NAME`` (e.g. ``lmn``) holds any number of versions; each version is an ``n x d`` table
of float32 rows (``M`` slots). Readers resolve the current version once per request and read only
that version's keys, so a reply never mixes versions.

========================================  ========  ==============================================
key                                       type      contents
========================================  ========  ==============================================
``{mem:NAME}:current``                    string    the current (committed) version id
``{mem:NAME}:versions``                   zset      version id -> created unix ms (every version
                                                    not deleted or aborted)
``{mem:NAME}:meta:VERSION``               hash      :data:`META_FIELDS` (below)
``{mem:NAME}:dlog:VERSION``               list      delta log, one entry per ApplyDelta:
                                                    ``<i8 seq><i8 slot>*`` (little-endian), the
                                                    last :data:`DELTA_LOG_MAX` deltas; a delta of
                                                    more than :data:`DELTA_LOG_MAX_SLOTS` slots
                                                    is logged as the one slot ``-1`` ("all")
``{mem:NAME:VERSION:G}:SLOT``             string    row ``SLOT``: ``d`` float32 little-endian
                                                    (``4 d`` bytes); ``G = SLOT // group_rows``
========================================  ========  ==============================================

Meta hash fields (all ASCII): ``n``, ``d``, ``dtype`` (``float32``), ``sha256`` (hex, of the
``n x d`` float32 LE block as loaded), ``source``, ``state`` (``loading`` / ``committed`` /
``aborted`` / ``deleting``), ``load_id``, ``created_ms``, ``committed_ms``, ``retired_ms`` (when
it stopped being current), ``delta_seq``, ``group_rows``, ``layout`` (``1``).

**Hash tags (Redis Cluster).** The pointer, the version set, every meta hash and delta log share
the tag ``{mem:NAME}``, so one hash slot holds them and a commit (meta + pointer + set) is a single
MULTI/EXEC. Rows are tagged per *row group* ``{mem:NAME:VERSION:G}`` (``group_rows`` contiguous
slots, 2048 by default): a 1M-slot version is 512 tags that CRC16 spreads over every node, while
the keys of one group still share a slot, so a read sends one MGET per group (per node, one
pipeline). A per-version tag would have put a whole version on one shard.

**Why one key per slot.** ``benchmarks/memory_read.py`` (1,048,576 x 64 block, 6,400 random
slots per request, redis 6.2 + redis-py 8.1 on 2 shared cores) measured raw MGET of per-slot
keys at ~137k rows/s (p50 44 ms) against ~41k rows/s (p50 148 ms) for a pipeline of GETRANGE on
64-rows-per-key chunk strings; a Lua gather of GETRANGEs was also slower than MGET in a first
probe. The random slots of a product-key memory hit distinct chunks, so per-slot keys win for the
hot path, at the price of ~368 B of Redis memory per 256-byte row (~0.39 GB for 1M x 64, against
~0.27 GB chunked) and one key per row to write at load (1M rows load + verify in ~12 s).

Every function here is pure: it builds keys, encodes values or parses replies; the sync store and
any async twin share them.

Example:
    >>> row_key("lmn", "v1", 4097, 2048)
    b'{mem:lmn:v1:2}:4097'
    >>> pack_rows(np.array([[1.0, -2.0]], dtype=np.float32))
    [b'\\x00\\x00\\x80?\\x00\\x00\\x00\\xc0']
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LAYOUT_VERSION",
    "DEFAULT_GROUP_ROWS",
    "DELTA_LOG_MAX",
    "DELTA_LOG_MAX_SLOTS",
    "ALL_SLOTS",
    "DTYPE",
    "META_FIELDS",
    "State",
    "VersionMeta",
    "validate_name",
    "validate_version",
    "pointer_key",
    "versions_key",
    "meta_key",
    "delta_log_key",
    "row_group",
    "row_key",
    "row_keys",
    "row_range_keys",
    "group_tag",
    "pack_rows",
    "unpack_rows",
    "block_sha256",
    "pack_delta_entry",
    "unpack_delta_entry",
    "encode_meta",
    "decode_meta",
]

LAYOUT_VERSION = 1
DEFAULT_GROUP_ROWS = 2048
DELTA_LOG_MAX = 256
DELTA_LOG_MAX_SLOTS = 4096  # bounds the log at 256 x 4096 x 8 B = 8 MiB per version
ALL_SLOTS = -1
DTYPE = "float32"
_ROW_DTYPE = np.dtype("<f4")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

META_FIELDS: tuple[str, ...] = (
    "n", "d", "dtype", "sha256", "source", "state", "load_id", "created_ms", "committed_ms",
    "retired_ms", "delta_seq", "group_rows", "layout",
)


class State:
    """The ``state`` field of a version's meta hash."""

    LOADING = "loading"
    COMMITTED = "committed"
    ABORTED = "aborted"
    DELETING = "deleting"


@dataclass(frozen=True, kw_only=True)
class VersionMeta:
    """A decoded meta hash (see the module table)."""

    n: int
    d: int
    dtype: str
    sha256: str
    source: str
    state: str
    load_id: str
    created_ms: int
    committed_ms: int
    retired_ms: int
    delta_seq: int
    group_rows: int
    layout: int


# ---- ids ---------------------------------------------------------------------------------------
def validate_name(name: str) -> str:
    """Returns ``name`` if it is a valid block name, else raises ``ValueError``.

    Names and versions are 1-64 characters of ``[A-Za-z0-9_.-]``, starting alphanumeric: no ``:``
    nor braces, so they can never change a key's hash tag.
    """
    if not isinstance(name, str) or not _ID_RE.match(name):
        raise ValueError(f"name: {name!r} is not 1-64 characters of [A-Za-z0-9_.-] starting alphanumeric")
    return name


def validate_version(version: str) -> str:
    """Returns ``version`` if it is a valid version id, else raises ``ValueError``."""
    if not isinstance(version, str) or not _ID_RE.match(version):
        raise ValueError(f"version: {version!r} is not 1-64 characters of [A-Za-z0-9_.-] starting alphanumeric")
    return version


# ---- keys --------------------------------------------------------------------------------------
def pointer_key(name: str) -> bytes:
    """``{mem:NAME}:current``: the current version id."""
    return f"{{mem:{name}}}:current".encode()


def versions_key(name: str) -> bytes:
    """``{mem:NAME}:versions``: zset of version ids scored by created unix ms."""
    return f"{{mem:{name}}}:versions".encode()


def meta_key(name: str, version: str) -> bytes:
    """``{mem:NAME}:meta:VERSION``: the version's meta hash."""
    return f"{{mem:{name}}}:meta:{version}".encode()


def delta_log_key(name: str, version: str) -> bytes:
    """``{mem:NAME}:dlog:VERSION``: the version's delta log."""
    return f"{{mem:{name}}}:dlog:{version}".encode()


def row_group(slot: int, group_rows: int) -> int:
    """The row group (hash-tag group) of ``slot``."""
    return slot // group_rows


def group_tag(name: str, version: str, group: int) -> bytes:
    """``{mem:NAME:VERSION:G}``: the hash tag shared by the rows of one group."""
    return f"{{mem:{name}:{version}:{group}}}".encode()


def row_key(name: str, version: str, slot: int, group_rows: int) -> bytes:
    """``{mem:NAME:VERSION:G}:SLOT``: one row."""
    return f"{{mem:{name}:{version}:{slot // group_rows}}}:{slot}".encode()


def row_keys(name: str, version: str, slots: Sequence[int] | np.ndarray, group_rows: int) -> list[bytes]:
    """The row keys of ``slots`` (any order, repeats kept), as :func:`row_key` would build them."""
    head = f"{{mem:{name}:{version}:"
    ids = slots.tolist() if isinstance(slots, np.ndarray) else list(slots)
    return [f"{head}{s // group_rows}}}:{s}".encode() for s in ids]


def row_range_keys(name: str, version: str, start: int, stop: int, group_rows: int) -> list[bytes]:
    """The row keys of slots ``start .. stop-1``."""
    return row_keys(name, version, range(start, stop), group_rows)


# ---- values ------------------------------------------------------------------------------------
def pack_rows(rows: np.ndarray) -> list[bytes]:
    """``(N, d)`` float32 -> N values of ``4 d`` little-endian bytes each."""
    arr = np.ascontiguousarray(rows, dtype=_ROW_DTYPE)
    if arr.ndim != 2:
        raise ValueError(f"rows: expected a 2-D (N, d) array, got shape {arr.shape}")
    width = arr.shape[1] * 4
    buf = arr.tobytes()
    return [buf[i : i + width] for i in range(0, len(buf), width)]


def unpack_rows(values: Sequence[bytes], d: int) -> np.ndarray:
    """Row values (as stored) -> an ``(N, d)`` float32 array (native byte order, writable).

    Raises:
        ValueError: a value is missing (``None``) or has the wrong length.
    """
    if not values:
        return np.zeros((0, d), dtype=np.float32)
    buf = b"".join(values)  # TypeError on None: checked by callers, which know the slot
    if len(buf) != len(values) * d * 4:
        raise ValueError(f"row values hold {len(buf)} bytes, expected {len(values)} rows x {d} float32")
    return np.frombuffer(buf, dtype=_ROW_DTYPE).astype(np.float32).reshape(len(values), d)


def block_sha256(values: np.ndarray) -> str:
    """The checksum of a block: sha256 of its ``(n, d)`` float32 little-endian C-order bytes."""
    arr = np.ascontiguousarray(values, dtype=_ROW_DTYPE)
    h = hashlib.sha256()
    step = max(1, (16 << 20) // max(1, arr[0:1].nbytes))  # hash in ~16 MiB pieces
    for i in range(0, arr.shape[0], step):
        h.update(memoryview(arr[i : i + step]).cast("B"))
    return h.hexdigest()


def pack_delta_entry(seq: int, slots: Sequence[int] | np.ndarray) -> bytes:
    """A delta-log entry: ``<i8 seq>`` then ``<i8 slot>`` per updated slot, or the single slot
    :data:`ALL_SLOTS` when the delta touched more than :data:`DELTA_LOG_MAX_SLOTS` slots."""
    ids = np.asarray(slots, dtype="<i8")
    if ids.size > DELTA_LOG_MAX_SLOTS:
        ids = np.array([ALL_SLOTS], dtype="<i8")
    return struct.pack("<q", seq) + ids.tobytes()


def unpack_delta_entry(entry: bytes) -> tuple[int, np.ndarray]:
    """Inverse of :func:`pack_delta_entry`: ``(seq, slots)``."""
    (seq,) = struct.unpack_from("<q", entry)
    return int(seq), np.frombuffer(entry, dtype="<i8", offset=8).astype(np.int64)


# ---- meta --------------------------------------------------------------------------------------
def encode_meta(
    *, n: int, d: int, sha256: str, source: str, load_id: str, created_ms: int,
    group_rows: int = DEFAULT_GROUP_ROWS,
) -> dict[str, str]:
    """The meta hash of a version that starts loading (HSET mapping)."""
    return {
        "n": str(n), "d": str(d), "dtype": DTYPE, "sha256": sha256, "source": source,
        "state": State.LOADING, "load_id": load_id, "created_ms": str(created_ms),
        "committed_ms": "0", "retired_ms": "0", "delta_seq": "0", "group_rows": str(group_rows),
        "layout": str(LAYOUT_VERSION),
    }


def decode_meta(raw: Mapping[bytes | str, bytes | str | None] | Sequence[bytes | str | None]) -> VersionMeta | None:
    """A meta hash reply (HGETALL mapping, or HMGET list in :data:`META_FIELDS` order) -> meta.

    Returns None when the hash does not exist (empty mapping, or HMGET of all-None).
    """
    if isinstance(raw, Mapping):
        items = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        vals = [items.get(f) for f in META_FIELDS]
    else:
        vals = list(raw)
    if not vals or all(v is None for v in vals):
        return None
    s = [(v.decode() if isinstance(v, bytes) else (v or "")) for v in vals]
    f = dict(zip(META_FIELDS, s))

    def num(key: str) -> int:
        return int(f[key]) if f[key] else 0

    return VersionMeta(
        n=num("n"), d=num("d"), dtype=f["dtype"] or DTYPE, sha256=f["sha256"], source=f["source"],
        state=f["state"], load_id=f["load_id"], created_ms=num("created_ms"),
        committed_ms=num("committed_ms"), retired_ms=num("retired_ms"), delta_seq=num("delta_seq"),
        group_rows=num("group_rows") or DEFAULT_GROUP_ROWS, layout=num("layout") or LAYOUT_VERSION,
    )
