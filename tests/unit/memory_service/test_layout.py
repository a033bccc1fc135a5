"""The Redis layout of the memory block: golden key bytes, value packing, meta, delta log."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from redis.crc import key_slot

from memory_service import layout as L


def test_golden_keys() -> None:
    assert L.pointer_key("lmn") == b"{mem:lmn}:current"
    assert L.versions_key("lmn") == b"{mem:lmn}:versions"
    assert L.meta_key("lmn", "v3") == b"{mem:lmn}:meta:v3"
    assert L.delta_log_key("lmn", "v3") == b"{mem:lmn}:dlog:v3"
    assert L.group_tag("lmn", "v3", 7) == b"{mem:lmn:v3:7}"
    assert L.row_key("lmn", "v3", 0, 2048) == b"{mem:lmn:v3:0}:0"
    assert L.row_key("lmn", "v3", 2047, 2048) == b"{mem:lmn:v3:0}:2047"
    assert L.row_key("lmn", "v3", 2048, 2048) == b"{mem:lmn:v3:1}:2048"
    assert L.row_key("lmn", "2026-11-30.1", 1_048_575, 2048) == b"{mem:lmn:2026-11-30.1:511}:1048575"


def test_row_keys_match_row_key() -> None:
    slots = np.array([5, 4096, 3, 5, 1_000_000])
    assert L.row_keys("lmn", "v1", slots, 2048) == [L.row_key("lmn", "v1", int(s), 2048) for s in slots]
    assert L.row_range_keys("lmn", "v1", 2046, 2050, 2048) == [
        b"{mem:lmn:v1:0}:2046", b"{mem:lmn:v1:0}:2047", b"{mem:lmn:v1:1}:2048", b"{mem:lmn:v1:1}:2049"]


def test_control_keys_share_one_cluster_slot_and_rows_spread() -> None:
    control = {key_slot(k) for k in (L.pointer_key("lmn"), L.versions_key("lmn"), L.meta_key("lmn", "v1"),
                                     L.meta_key("lmn", "v2"), L.delta_log_key("lmn", "v1"))}
    assert len(control) == 1
    # One group's rows share a slot; a 1M-slot version's 512 groups spread over 3 equal nodes.
    assert len({key_slot(k) for k in L.row_range_keys("lmn", "v1", 0, 2048, 2048)}) == 1
    groups = range(1_048_576 // L.DEFAULT_GROUP_ROWS)
    per_node = Counter(key_slot(L.row_key("lmn", "v1", g * L.DEFAULT_GROUP_ROWS, L.DEFAULT_GROUP_ROWS)) * 3 // 16384
                       for g in groups)
    assert sorted(per_node) == [0, 1, 2]
    assert min(per_node.values()) > 0.25 * len(groups)


@pytest.mark.parametrize("bad", ["", "a:b", "{x}", "a b", "-lead", "x" * 65])
def test_ids_that_could_break_a_key_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        L.validate_name(bad)
    with pytest.raises(ValueError, match="version"):
        L.validate_version(bad)


def test_pack_rows_golden_and_round_trip() -> None:
    rows = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    packed = L.pack_rows(rows)
    assert packed == [bytes.fromhex("0000803f000000c0"), bytes.fromhex("0000003f00004040")]
    back = L.unpack_rows(packed, 2)
    assert back.dtype == np.float32 and back.flags.writeable
    np.testing.assert_array_equal(back, rows)
    big = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float64)  # cast to float32
    np.testing.assert_array_equal(L.unpack_rows(L.pack_rows(big), 64), big.astype(np.float32))
    assert L.unpack_rows([], 64).shape == (0, 64)


def test_unpack_rows_refuses_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="expected 2 rows x 2 float32"):
        L.unpack_rows([b"\0" * 8, b"\0" * 4], 2)
    with pytest.raises(ValueError, match="2-D"):
        L.pack_rows(np.zeros(3, dtype=np.float32))


def test_block_sha256_is_sha_of_le_float32_bytes() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert L.block_sha256(x) == hashlib.sha256(x.astype("<f4").tobytes()).hexdigest()
    assert L.block_sha256(x.astype(">f4")) == L.block_sha256(x)  # byte order normalised
    big = np.random.default_rng(1).standard_normal((70_000, 64), dtype=np.float32)  # > one 16 MiB piece
    assert L.block_sha256(big) == hashlib.sha256(big.tobytes()).hexdigest()


def test_delta_entry_golden_and_round_trip() -> None:
    entry = L.pack_delta_entry(3, [7, 1])
    assert entry == bytes.fromhex("0300000000000000" "0700000000000000" "0100000000000000")
    seq, slots = L.unpack_delta_entry(entry)
    assert seq == 3 and slots.tolist() == [7, 1]
    # A huge delta is logged as "all slots" (keeps the log small; clients drop every cached row).
    seq, slots = L.unpack_delta_entry(L.pack_delta_entry(4, np.arange(L.DELTA_LOG_MAX_SLOTS + 1)))
    assert seq == 4 and slots.tolist() == [L.ALL_SLOTS]


def test_meta_encode_decode() -> None:
    raw = L.encode_meta(n=10, d=4, sha256="ab" * 32, source="pkg/1", load_id="f00d", created_ms=123)
    assert raw["state"] == "loading" and raw["dtype"] == "float32" and raw["layout"] == "1"
    assert set(raw) == set(L.META_FIELDS)
    from_hash = L.decode_meta({k.encode(): v.encode() for k, v in raw.items()})
    from_hmget = L.decode_meta([raw[f].encode() for f in L.META_FIELDS])
    assert from_hash == from_hmget
    assert from_hash is not None and (from_hash.n, from_hash.d, from_hash.group_rows) == (10, 4, L.DEFAULT_GROUP_ROWS)
    assert L.decode_meta({}) is None
    assert L.decode_meta([None] * len(L.META_FIELDS)) is None
