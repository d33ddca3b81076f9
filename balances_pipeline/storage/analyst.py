"""The analyst file `$BALANCES_HOME/warehouse.duckdb`: views over the published snapshots.

The file holds views only and is never opened for writing in place: when its definition
changes (a new schema version, derived from the views' SQL, or `BALANCES_HOME` moved) a
new file is built under a temporary name and renamed over it. An analyst holding the old
file open keeps working and sees the new views on reconnect; no sync ever waits for an
analyst.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import duckdb

from balances_pipeline.schema import (
    ANALYST_RELATIONS,
    DERIVED_VIEWS,
    HISTORY_RELATIONS,
    select_list,
)
from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.snapshots import SnapshotStore, sql_literal
from balances_pipeline.storage.sql_files import load_sql


def _view_sql(relation: str, current_dir: str, history_dir: str) -> str:
    if relation in HISTORY_RELATIONS:
        pattern = sql_literal(f"{history_dir}/*/*.parquet")
    else:
        pattern = sql_literal(f"{current_dir}/*/{relation}.parquet")
    return (
        f"CREATE VIEW {relation} AS SELECT\n  {select_list(relation)}\n"  # noqa: S608
        f"FROM read_parquet({pattern}, union_by_name = true)"
    )


def _definitions(current_dir: str, history_dir: str) -> list[str]:
    """Every statement that builds the warehouse's views."""
    return [_view_sql(relation, current_dir, history_dir) for relation in ANALYST_RELATIONS] + [
        f"CREATE VIEW {view} AS {load_sql(view)}" for view in DERIVED_VIEWS
    ]


def view_sql(layout: Layout, relation: str) -> str:
    return _view_sql(relation, str(layout.current_dir), str(layout.history_dir))


# Derived from the views' definitions (independent of where `BALANCES_HOME` is): any change
# to a relation's columns or a view rebuilds `warehouse.duckdb`, with no number to bump.
ANALYST_SCHEMA_VERSION = hashlib.sha256(
    "\n;\n".join(_definitions("$current", "$history")).encode()
).hexdigest()[:16]


def _fingerprint(layout: Layout) -> str:
    return f"v{ANALYST_SCHEMA_VERSION}:{layout.current_dir}"


def _current_fingerprint(layout: Layout) -> str | None:
    if not layout.warehouse_path.exists():
        return None
    try:
        con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    except duckdb.Error:
        return None
    try:
        rows = con.execute("SELECT fingerprint FROM warehouse_info").fetchall()
        return rows[0][0] if rows else None
    except duckdb.Error:
        return None
    finally:
        con.close()


def ensure_analyst_warehouse(layout: Layout, *, force: bool = False) -> bool:
    """Build `warehouse.duckdb` if it is missing or outdated. Returns True if it was (re)built."""
    SnapshotStore(layout).ensure_schema_placeholder()
    if not force and _current_fingerprint(layout) == _fingerprint(layout):
        return False
    temporary = layout.warehouse_path.with_name(f".warehouse.{uuid.uuid4().hex}.tmp")
    con = duck.connect(layout.duckdb, temporary)
    try:
        for statement in _definitions(str(layout.current_dir), str(layout.history_dir)):
            con.execute(statement)
        con.execute(
            "CREATE TABLE warehouse_info AS SELECT ? AS fingerprint, ? AS schema_version, "
            "current_timestamp AS built_at",
            [_fingerprint(layout), ANALYST_SCHEMA_VERSION],
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    layout.secure_published(temporary)
    os.replace(temporary, layout.warehouse_path)
    return True
