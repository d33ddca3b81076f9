"""The analyst file `$BALANCES_HOME/warehouse.duckdb`: views over the published snapshots.

The file holds views only and is never opened for writing in place: when its definition
changes (a new schema version, derived from the views' SQL, or `BALANCES_HOME` moved) a
new file is built under a temporary name and renamed over it. An analyst holding the old
file open keeps working and sees the new views on reconnect; no sync ever waits for an
analyst.

Each relation's view reads the files whose names carry their snapshot id (see
`storage/snapshots.py`) and keeps, per practice (and day, for `balance_history`), only the
rows of the newest file it read: a query bound just before a publish reads the previous
snapshot whole, never a mix and never a practice twice. The file name is a hidden column
(`filename`), never one of the view's. Paths are escaped for DuckDB's glob syntax, so a
`BALANCES_HOME` may contain `[`, `*` or `?`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import duckdb

from balances_pipeline.schema import (
    ANALYST_RELATIONS,
    DERIVED_VIEWS,
    HISTORY_RELATIONS,
    select_list,
)
from balances_pipeline.storage import duck
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.history import upgrade_history
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.published_names import EMPTY_SUFFIX, glob_escape
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.sql_files import load_sql


def _view_sql(relation: str, current_dir: str, history_dir: str) -> str:
    # `[!.]*`: never a hidden entry (a temporary file or symlink).
    if relation in HISTORY_RELATIONS:
        pattern = f"{glob_escape(history_dir)}/[!.]*/[!.]*@*.parquet"
        newest_per = "practice_id, snapshot_date"
    else:
        pattern = f"{glob_escape(current_dir)}/[!.]*/{relation}@*.parquet"
        newest_per = "practice_id"
    # One scan, MATERIALIZED: the glob is listed once per query and both uses below read
    # that one listing. (A window, `QUALIFY filename = max(filename) OVER (...)`, is
    # rewritten by DuckDB into a self-join of two scans, each listing the directory on its
    # own: a publish in between made the practice vanish from the query.) Snapshot ids
    # being fixed-width and increasing, the greatest name is the newest file.
    return (
        f"CREATE VIEW {relation} AS\n"  # noqa: S608
        f"WITH files AS MATERIALIZED (\n"
        f"  SELECT * FROM read_parquet({sql_literal(pattern)}, union_by_name = true,"
        " filename = true)\n"
        ")\n"
        f"SELECT\n  {select_list(relation)}\n"
        "FROM files\n"
        f"WHERE filename IN (SELECT max(filename) FROM files GROUP BY {newest_per})\n"
        f"  AND NOT ends_with(filename, {sql_literal(EMPTY_SUFFIX)})"
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


# warehouse.duckdb files this process found current: (path, fingerprint) -> the file's
# (inode, mtime_ns, size) then. Opening the file to read its fingerprint costs a DuckDB
# open (tens of ms), once per practice in a run of many practices; a file replaced since
# (a rebuild, another release) has another identity and is checked again.
_checked: dict[tuple[str, str], tuple[int, int, int]] = {}


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def ensure_analyst_warehouse(layout: Layout, *, force: bool = False) -> bool:
    """Build `warehouse.duckdb` if it is missing or outdated. Returns True if it was (re)built.
    (The DuckLake layout has no such file: analysts attach the lake.)"""
    if layout.lake is not None:
        return False
    store = SnapshotStore(layout)
    store.ensure_schema_placeholder()
    key = (str(layout.warehouse_path), _fingerprint(layout))
    identity = _identity(layout.warehouse_path)
    if not force and identity is not None and _checked.get(key) == identity:
        return False
    if not force and _current_fingerprint(layout) == _fingerprint(layout):
        _checked[key] = identity
        return False
    # Files an earlier release published get the names the views read.
    store.upgrade_published()
    upgrade_history(layout)
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
    _checked[key] = _identity(layout.warehouse_path)
    return True
