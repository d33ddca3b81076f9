"""Reading the published relations as an analyst does: `warehouse.duckdb`, read-only.

A read-only connection never blocks a sync and a sync never blocks it (the file holds
views over immutable snapshots). The one helper for every reader inside the product
(`balances account show`, sensors) and its tests.
"""

from __future__ import annotations

from typing import Any

import duckdb

from balances_pipeline.storage import lake
from balances_pipeline.storage.layout import Layout


def analyst_connection(layout: Layout) -> duckdb.DuckDBPyConnection:
    """A new read-only connection to the warehouse, made as an analyst makes one: the file
    `warehouse.duckdb`, or in the DuckLake layout `ATTACH 'ducklake:<catalog>' AS warehouse
    (READ_ONLY); USE warehouse;` (the README's instructions)."""
    if layout.lake is None:
        return duckdb.connect(str(layout.warehouse_path), read_only=True)
    con = lake.open_lake(layout.duckdb, layout.lake, read_only=True)
    con.execute(f"USE {lake.ALIAS}")
    return con


def read_published(layout: Layout, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Rows of `sql` over the analyst warehouse, as dicts; none before the first sync.
    In the DuckLake layout: the lake's analyst schema."""
    if layout.lake is not None:
        return _read_lake(layout, sql, params)
    if not layout.warehouse_path.exists():
        return []
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        return _dicts(con.execute(sql, params or []))
    finally:
        con.close()


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _read_lake(layout: Layout, sql: str, params: list | None) -> list[dict[str, Any]]:
    """Without the writer lock: readers never wait for a publish."""
    from balances_pipeline.storage.working_db import WorkingDatabase

    WorkingDatabase(layout).ensure_lake()  # the lake's tables exist from here on
    with lake.CONNECTIONS.cursor(layout.duckdb, layout.lake, schema=lake.ANALYST_SCHEMA) as con:
        return _dicts(con.execute(sql, params or []))
