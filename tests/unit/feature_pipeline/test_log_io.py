"""Tests of the validated log readers and writers (feature_pipeline/log_io.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_pipeline import log_io
from feature_pipeline.schemas import TS_TYPE
from seedrec.errors import DataError, SchemaError

DAY1 = 1_704_103_200_000  # 2024-01-01T10:00Z
DAY2 = DAY1 + 86_400_000


def impressions(**override: pa.Array) -> pa.Table:
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(["a", "b"]),
        "ts": pa.array([DAY1, DAY2], TS_TYPE),
        "user_id": pa.array([1, 2], pa.int64()),
        "domain": pa.array(["feed", "search"]),
        "item_id": pa.array([10, 11], pa.int64()),
        "position": pa.array([0, 1], pa.int32()),
        "click": pa.array([1, 0], pa.int8()),
        "purchase": pa.array([0, 0], pa.int8()),
        "hour": pa.array([10, 10], pa.int8()),
    }
    cols.update(override)
    return pa.table(cols)


def write_file(tmp_path: Path, table: pa.Table, dt: str = "2024-01-01") -> Path:
    path = tmp_path / "impressions" / f"dt={dt}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write_file(tmp_path, impressions().drop_columns(["user_id"]))
    with pytest.raises(SchemaError, match="user_id") as e:
        log_io.read_table(tmp_path, "impressions")
    assert str(path) in str(e.value) and "missing" in str(e.value)


def test_mistyped_column(tmp_path: Path) -> None:
    path = write_file(tmp_path, impressions(user_id=pa.array(["1", "2"])))
    with pytest.raises(SchemaError, match=r"`user_id` has type string, expected int") as e:
        log_io.read_file(path, "impressions")
    assert str(path) in str(e.value)


def test_null_in_key_column(tmp_path: Path) -> None:
    path = write_file(tmp_path, impressions(item_id=pa.array([10, None], pa.int64())))
    with pytest.raises(SchemaError, match=r"`item_id` has 1 null"):
        log_io.read_file(path, "impressions")


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "impressions" / "dt=2024-01-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(SchemaError, match="not a readable parquet file") as e:
        log_io.read_table(tmp_path, "impressions")
    assert str(path) in str(e.value)


def test_int32_ids_cast_to_int64(tmp_path: Path) -> None:
    path = write_file(tmp_path, impressions(user_id=pa.array([1, 2], pa.int32()), item_id=pa.array([10, 11], pa.int16())))
    t = log_io.read_file(path, "impressions")
    assert t.schema.field("user_id").type == pa.int64() and t.schema.field("item_id").type == pa.int64()
    assert t.column("user_id").to_pylist() == [1, 2]
    assert t.schema.field("hour").type == pa.int8()  # context columns keep their type


def test_timestamp_seconds_cast_to_ms(tmp_path: Path) -> None:
    secs = pa.array([DAY1 // 1000, DAY2 // 1000], pa.timestamp("s"))
    path = write_file(tmp_path, impressions(ts=secs))
    t = log_io.read_file(path, "impressions")
    assert t.schema.field("ts").type == TS_TYPE
    assert t.column("ts").cast(pa.int64()).to_pylist() == [DAY1, DAY2]


def test_flags_and_dictionary_strings(tmp_path: Path) -> None:
    path = write_file(tmp_path, impressions(click=pa.array([True, False]), domain=pa.array(["feed", "feed"]).dictionary_encode()))
    t = log_io.read_file(path, "impressions")
    assert t.schema.field("click").type == pa.int8() and t.column("click").to_pylist() == [1, 0]
    assert t.schema.field("domain").type == pa.string()


def test_write_partitioned_and_iterate_in_date_order(tmp_path: Path) -> None:
    paths = log_io.write_partitioned(tmp_path, "impressions", impressions())
    assert [p.parent.name for p in paths] == ["dt=2024-01-01", "dt=2024-01-02"]
    assert log_io.list_partitions(tmp_path, "impressions") == ["2024-01-01", "2024-01-02"]
    parts = list(log_io.iter_partitions(tmp_path, "impressions", columns=["request_id", "user_id"]))
    assert [(dt, t.column("request_id").to_pylist()) for dt, t in parts] == [("2024-01-01", ["a"]), ("2024-01-02", ["b"])]
    assert log_io.read_table(tmp_path, "impressions").num_rows == 2


def test_side_table_round_trip(tmp_path: Path) -> None:
    log_io.write_table(tmp_path, "items", pa.table({"item_id": pa.array([1, 2], pa.int32()), "category_id": [5, 6], "price": [1.5, 2.0]}))
    t = log_io.read_table(tmp_path, "items")
    assert t.schema.field("item_id").type == pa.int64() and t.schema.field("price").type == pa.float32()


def test_missing_folder_and_unknown_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="events"):
        log_io.list_partitions(tmp_path, "events")
    with pytest.raises(DataError, match="unknown log table"):
        log_io.read_table(tmp_path, "clicks")
