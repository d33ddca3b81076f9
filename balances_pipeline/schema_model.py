"""How relations are declared: `Column`s with DuckDB types, grouped in `Relation`s.

The declarations themselves are in `schema.py`; this module is the vocabulary and the
derivations that need no particular relation (DDL, Arrow types and schemas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pyarrow as pa

# DuckDB types used by the relations (`warehouse.md`: amounts are DECIMAL(14,2),
# timestamps TIMESTAMPTZ; source clock times, as the server writes them, are TIMESTAMP).
MONEY = "DECIMAL(14,2)"
PERCENT = "DECIMAL(18,2)"
VARCHAR = "VARCHAR"
BIGINT = "BIGINT"
INTEGER = "INTEGER"
BOOLEAN = "BOOLEAN"
DATE = "DATE"
TIMESTAMP = "TIMESTAMP"
TIMESTAMPTZ = "TIMESTAMPTZ"

_ARROW_TYPES: dict[str, pa.DataType] = {
    VARCHAR: pa.string(),
    BIGINT: pa.int64(),
    INTEGER: pa.int32(),
    BOOLEAN: pa.bool_(),
    DATE: pa.date32(),
    TIMESTAMP: pa.timestamp("us"),
    TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
}
_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")


def quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def arrow_type(duckdb_type: str) -> pa.DataType:
    """The Arrow type DuckDB reads as `duckdb_type` (and writes for it)."""
    decimal = _DECIMAL.fullmatch(duckdb_type)
    if decimal:
        return pa.decimal128(int(decimal.group(1)), int(decimal.group(2)))
    try:
        return _ARROW_TYPES[duckdb_type]
    except KeyError:
        raise ValueError(f"unsupported column type {duckdb_type!r}") from None


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a DuckDB type, one of the constants above
    nullable: bool = True
    analyst: bool = True  # part of the relation's analyst view (if it has one)
    doc: str = ""

    def __post_init__(self) -> None:
        arrow_type(self.type)  # an unknown type string fails at import


@dataclass(frozen=True)
class Relation:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    # Staging and ledger tables: the source's key of a row. Unique per extract, checked
    # (`StagingDatabase.first_duplicate_key`) and used for upserts, but deliberately not
    # indexed: an index of millions of keys would have to stay in memory.
    source_key: str | None = None
    # Working tables: the sequence that numbers the `sequence` column.
    sequence: str | None = None
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a column is declared twice")
        for key in (*self.primary_key, *filter(None, [self.source_key])):
            if key not in names:
                raise ValueError(f"{self.name}: key column {key} is not declared")
        for key in self.primary_key:
            if self.column(key).nullable:
                raise ValueError(f"{self.name}: primary key column {key} must be NOT NULL")
        if self.sequence and "sequence" not in names:
            raise ValueError(f"{self.name}: a sequence needs a `sequence` column")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def analyst_columns(self) -> tuple[Column, ...]:
        return tuple(column for column in self.columns if column.analyst)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name}")

    def renamed(self, name: str) -> Relation:
        """The same columns and keys under another name (the ledger copies of staging)."""
        return replace(self, name=name)

    def create_sql(self, *, if_not_exists: bool = False) -> str:
        """`CREATE TABLE` with the declared columns, NOT NULLs and primary key."""
        lines = [
            f"{quoted(column.name)} {column.type}{'' if column.nullable else ' NOT NULL'}"
            for column in self.columns
        ]
        if self.primary_key:
            lines.append(f"PRIMARY KEY ({', '.join(map(quoted, self.primary_key))})")
        exists = "IF NOT EXISTS " if if_not_exists else ""
        body = ",\n  ".join(lines)
        return f"CREATE TABLE {exists}{self.name} (\n  {body}\n)"


def columns(*columns: Column) -> tuple[Column, ...]:
    return columns


def required(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, nullable=False, doc=doc)


def internal(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, analyst=False, doc=doc)


def arrow_schema(relation: Relation) -> pa.Schema:
    return pa.schema([(column.name, arrow_type(column.type)) for column in relation.columns])
