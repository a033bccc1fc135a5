"""The online feature store layout: key builders and record codecs pinned as golden bytes."""

from __future__ import annotations

import pytest

from feature_pipeline import online_store as os_
from seedrec.errors import DataError


def test_keys_are_golden() -> None:
    assert os_.history_key(42) == b"seedrec:hist:42"
    assert os_.history_key(-7, namespace="ab") == b"ab:hist:-7"
    assert os_.user_key(42) == b"seedrec:user:42"
    assert os_.meta_key() == b"seedrec:meta"


def test_behaviour_record_is_golden() -> None:
    rec = os_.encode_behaviour(ts_ms=1_700_000_000_123, item_id=7, category_id=3, action="click", domain="feed")
    assert rec == bytes.fromhex(
        "01"  # record version
        "7b68e5cf8b010000"  # ts_ms 1700000000123, int64 LE
        "0700000000000000"  # item_id 7
        "0300000000000000"  # category_id 3
        "05" "04"  # len(action), len(domain)
    ) + b"clickfeed"
    assert os_.decode_behaviour(rec) == os_.Behaviour(ts_ms=1_700_000_000_123, item_id=7, category_id=3, action="click", domain="feed")


def test_unknown_category_round_trips_as_none() -> None:
    rec = os_.encode_behaviour(ts_ms=1, item_id=2, category_id=None, action="like", domain="mall")
    assert rec[17:25] == b"\x00" * 7 + b"\x80"  # INT64_MIN
    assert os_.decode_behaviour(rec).category_id is None


def test_attribute_values_are_golden() -> None:
    assert [os_.encode_value(v) for v in ("25-34", 3, 0.25, True)] == [b"s:25-34", b"i:3", b"f:0.25", b"i:1"]
    assert os_.parse_user({b"gender": b"s:F", b"age": b"i:31", b"score": b"f:0.5"}) == {"gender": "F", "age": 31, "score": 0.5}


def test_history_is_sorted_by_time_and_cut() -> None:
    recs = [os_.encode_behaviour(ts_ms=t, item_id=t, category_id=None, action="click", domain="feed") for t in (5, 1, 3)]
    assert [b.item_id for b in os_.parse_history(recs)] == [1, 3, 5]
    assert [b.item_id for b in os_.parse_history(recs, limit=2)] == [3, 5]


@pytest.mark.parametrize(
    "bad",
    [b"\x01\x00", b"\x02" + b"\x00" * 26, os_.encode_behaviour(ts_ms=1, item_id=1, category_id=1, action="a", domain="b") + b"x"],
)
def test_corrupt_records_raise(bad: bytes) -> None:
    with pytest.raises(DataError):
        os_.decode_behaviour(bad)
