"""Reading and writing log tables, with validation on read.

Every file is checked against its :class:`~feature_pipeline.schemas.LogSchema` before any row is
used: a missing or mistyped column, a null in a key column, or bytes that are not parquet raise a
:class:`~seedrec.errors.SchemaError` whose one-line message names the file, the column and the
problem. Validated tables come back with canonical types (int64 ids, ``timestamp[ms, UTC]``, int8
flags) so everything downstream sees one representation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_pipeline.schemas import LOG_SCHEMAS, LogSchema
from seedrec.errors import DataError, SchemaError

__all__ = ["list_partitions", "list_files", "validate_files", "validate_schema", "read_file", "read_table", "iter_partitions", "write_partitioned", "write_table"]

logger = logging.getLogger(__name__)

_DT = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


def _schema(name: str) -> LogSchema:
    if name not in LOG_SCHEMAS:
        raise DataError(f"unknown log table {name!r}; known: {sorted(LOG_SCHEMAS)}")
    return LOG_SCHEMAS[name]


def list_partitions(root: str | Path, name: str) -> list[str]:
    """Returns the sorted ``dt`` values of ``ROOT/NAME/dt=*`` folders."""
    base = Path(root) / name
    if not base.is_dir():
        raise DataError(f"no {name}/ folder under {root}: expected Hive partitions {name}/dt=YYYY-MM-DD/*.parquet")
    return sorted(m.group(1) for p in base.iterdir() if p.is_dir() and (m := _DT.match(p.name)))


def list_files(root: str | Path, name: str, dt: str | None = None) -> list[Path]:
    """Returns the parquet files of table ``name`` (of one partition when ``dt`` is given)."""
    schema = _schema(name)
    base = Path(root) / name
    if schema.partitioned and dt is not None:
        base = base / f"dt={dt}"
    if not base.is_dir():
        raise DataError(f"no {base} folder: expected parquet files of the {name!r} log there")
    files = sorted(p for p in base.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataError(f"{base} holds no .parquet files")
    return files


def validate_schema(path: Path, found: pa.Schema, schema: LogSchema) -> None:
    """Raises SchemaError if ``found`` lacks or mistypes a required column of ``schema``."""
    for col, kind in {**schema.columns, **schema.optional}.items():
        required = col in schema.columns
        idx = found.get_field_index(col)
        if idx < 0:
            if required:
                raise SchemaError(f"{path}: column `{col}` is missing (the {schema.name} log needs {kind.value} `{col}`)")
            continue
        t = found.field(idx).type
        if not kind.accepts(t):
            raise SchemaError(f"{path}: column `{col}` has type {t}, expected {kind.value}")


def validate_files(root: str | Path, name: str) -> int:
    """Checks the schema of every file of table ``name`` (parquet footers only); returns the count.

    Raises:
        SchemaError: the first file that is unreadable or lacks/mistypes a required column.
    """
    schema = _schema(name)
    files = list_files(root, name)
    for path in files:
        try:
            found = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise SchemaError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        validate_schema(path, found, schema)
    return len(files)


def read_file(path: str | Path, name: str, *, columns: list[str] | None = None) -> pa.Table:
    """Reads and validates one parquet file of log table ``name``; returns canonical types."""
    path = Path(path)
    schema = _schema(name)
    try:
        pf = pq.ParquetFile(path)
        validate_schema(path, pf.schema_arrow, schema)
        table = pf.read(columns=columns)
    except SchemaError:
        raise
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    return _canonical(path, table, schema)


def _canonical(path: Path, table: pa.Table, schema: LogSchema) -> pa.Table:
    for col in schema.keys:
        if col in table.column_names and table.column(col).null_count:
            raise SchemaError(f"{path}: column `{col}` has {table.column(col).null_count} null value(s); key columns may not be null")
    for col, kind in {**schema.columns, **schema.optional}.items():
        if col not in table.column_names:
            continue
        arr = table.column(col)
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if arr.type != kind.arrow:
            try:
                arr = arr.cast(kind.arrow)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"{path}: column `{col}` cannot be read as {kind.value}: {str(e).splitlines()[0]}") from None
        table = table.set_column(table.column_names.index(col), col, arr)
    if "dt" in table.column_names:  # a partition key that leaked into the file
        table = table.drop_columns(["dt"])
    return table


def iter_partitions(root: str | Path, name: str, *, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """Yields ``(dt, table)`` per partition in date order, each validated; memory stays per-partition."""
    for dt in list_partitions(root, name):
        tables = [read_file(f, name, columns=columns) for f in list_files(root, name, dt)]
        yield dt, pa.concat_tables(tables, promote_options="default")


def read_table(root: str | Path, name: str, *, columns: list[str] | None = None) -> pa.Table:
    """Reads a whole log table (all partitions), validated."""
    schema = _schema(name)
    if schema.partitioned:
        parts = [t for _, t in iter_partitions(root, name, columns=columns)]
        if not parts:
            raise DataError(f"{Path(root) / name} has no dt=YYYY-MM-DD partitions")
        return pa.concat_tables(parts, promote_options="default")
    tables = [read_file(f, name, columns=columns) for f in list_files(root, name)]
    return pa.concat_tables(tables, promote_options="default")


def write_table(root: str | Path, name: str, table: pa.Table) -> Path:
    """Writes an unpartitioned side table (``users``/``items``) as ``ROOT/NAME/part-0.parquet``."""
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "part-0.parquet"
    pq.write_table(table, path)
    return path


def write_partitioned(root: str | Path, name: str, table: pa.Table, *, part: str = "part-0") -> list[Path]:
    """Writes ``table`` under ``ROOT/NAME/dt=YYYY-MM-DD/PART.parquet``, partitioned by the UTC day of ``ts``."""
    days = pc.strftime(table.column("ts").cast(pa.timestamp("ms", tz="UTC")), format="%Y-%m-%d")
    paths = []
    for day in sorted(pc.unique(days).to_pylist()):
        sub = table.filter(pc.equal(days, day))
        out = Path(root) / name / f"dt={day}"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{part}.parquet"
        pq.write_table(sub, path)
        paths.append(path)
    return paths
