"""The log schemas (the input contract) and their validation.

Logs are Hive-partitioned parquet folders under one root::

    ROOT/impressions/dt=YYYY-MM-DD/*.parquet   one row per shown item
    ROOT/events/dt=YYYY-MM-DD/*.parquet        user behaviours (clicks, purchases, ...)
    ROOT/users/*.parquet                       user side table
    ROOT/items/*.parquet                       item side table

========== ====================================================================================
table      columns (required; extra columns are kept as context)
========== ====================================================================================
impressions request_id str, ts timestamp, user_id int, domain str, item_id int, position int,
           click int/bool, purchase int/bool
events     ts timestamp, user_id int, item_id int, domain str, action str (``click``,
           ``purchase``, ...)
users      user_id int
items      item_id int, category_id int, price float
========== ====================================================================================

Integer columns accept any integer width, timestamps any unit (read as ``timestamp[ms, UTC]``),
flags accept bool or integer. A file that breaks its schema is refused with a :class:`SchemaError`
naming the file, the column and the problem; nulls in key columns are refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, unique

import pyarrow as pa

__all__ = [
    "ColumnType",
    "LogSchema",
    "IMPRESSIONS",
    "EVENTS",
    "USERS",
    "ITEMS",
    "LOG_SCHEMAS",
    "TS_TYPE",
    "ACTIONS",
]

TS_TYPE = pa.timestamp("ms", tz="UTC")

#: The behaviour types the pipeline knows; others are kept but map to the OOV row.
ACTIONS: tuple[str, ...] = ("click", "purchase", "like", "share")


@unique
class ColumnType(str, Enum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    TIMESTAMP = "timestamp"
    FLAG = "flag"  # bool or integer 0/1

    def accepts(self, t: pa.DataType) -> bool:
        if self is ColumnType.INT:
            return pa.types.is_integer(t)
        if self is ColumnType.FLOAT:
            return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)
        if self is ColumnType.STRING:
            return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
        if self is ColumnType.TIMESTAMP:
            return pa.types.is_timestamp(t)
        return pa.types.is_boolean(t) or pa.types.is_integer(t)

    @property
    def arrow(self) -> pa.DataType:
        """The canonical Arrow type a column of this kind is cast to after validation."""
        return {
            ColumnType.INT: pa.int64(),
            ColumnType.FLOAT: pa.float32(),
            ColumnType.STRING: pa.string(),
            ColumnType.TIMESTAMP: TS_TYPE,
            ColumnType.FLAG: pa.int8(),
        }[self]


@dataclass(frozen=True, kw_only=True)
class LogSchema:
    """One log table: required columns with their kinds, and which of them may not be null."""

    name: str
    columns: dict[str, ColumnType]
    keys: tuple[str, ...]
    partitioned: bool = True
    optional: dict[str, ColumnType] = field(default_factory=dict)

    def arrow_schema(self, *, with_optional: bool = False) -> pa.Schema:
        cols = dict(self.columns)
        if with_optional:
            cols.update(self.optional)
        return pa.schema([(n, t.arrow) for n, t in cols.items()])


IMPRESSIONS = LogSchema(
    name="impressions",
    columns={
        "request_id": ColumnType.STRING,
        "ts": ColumnType.TIMESTAMP,
        "user_id": ColumnType.INT,
        "domain": ColumnType.STRING,
        "item_id": ColumnType.INT,
        "position": ColumnType.INT,
        "click": ColumnType.FLAG,
        "purchase": ColumnType.FLAG,
    },
    keys=("request_id", "ts", "user_id", "domain", "item_id"),
)

EVENTS = LogSchema(
    name="events",
    columns={
        "ts": ColumnType.TIMESTAMP,
        "user_id": ColumnType.INT,
        "item_id": ColumnType.INT,
        "domain": ColumnType.STRING,
        "action": ColumnType.STRING,
    },
    keys=("ts", "user_id", "item_id", "action"),
)

USERS = LogSchema(name="users", columns={"user_id": ColumnType.INT}, keys=("user_id",), partitioned=False)

ITEMS = LogSchema(
    name="items",
    columns={"item_id": ColumnType.INT, "category_id": ColumnType.INT, "price": ColumnType.FLOAT},
    keys=("item_id", "category_id"),
    partitioned=False,
)

LOG_SCHEMAS: dict[str, LogSchema] = {s.name: s for s in (IMPRESSIONS, EVENTS, USERS, ITEMS)}
