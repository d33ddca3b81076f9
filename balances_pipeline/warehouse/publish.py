"""Publishing a practice: one working-database transaction, then one atomic symlink swap.

The working database is the source of truth for which snapshot is published
(`published_snapshots`); the symlink follows it. If a process dies between the commit and
the swap, `reconcile()` (run at the start of the practice's next sync) rolls it forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
from filelock import FileLock

from balances_pipeline.home import Layout
from balances_pipeline.warehouse.relations import DATA_RELATIONS, STATE_RELATIONS
from balances_pipeline.warehouse.snapshots import SnapshotStore, copy_to_parquet
from balances_pipeline.warehouse.working_db import WorkingDatabase

PRACTICE_LOCK_TIMEOUT_SECONDS = 1800
# Files a snapshot carries over from the previous one when a publish does not rewrite them.
SOURCE_FILES = ("source_aging_report.parquet",)
CARRIED_FILES = [f"{name}.parquet" for name in DATA_RELATIONS] + list(SOURCE_FILES)

_STATE_QUERIES = {
    "sync_runs": "SELECT * FROM sync_runs WHERE practice_id = ? ORDER BY started_at",
    "rejected_rows": (
        "SELECT r.* FROM rejected_rows r JOIN sync_runs s USING (sync_id)"
        " WHERE r.practice_id = ? ORDER BY s.started_at, r.endpoint, r.row_key"
    ),
    "balance_discrepancies": (
        "SELECT d.* FROM balance_discrepancies d JOIN sync_runs s USING (sync_id)"
        " WHERE d.practice_id = ? ORDER BY s.started_at, d.account_id, d.\"check\""
    ),
    "override_events": "SELECT * FROM override_events WHERE practice_id = ? ORDER BY sequence",
    "collection_target_history": (
        "SELECT * FROM collection_target_history WHERE practice_id = ?"
        " ORDER BY as_of_date, account_id, rule_id"
    ),
    "account_blocks": "SELECT * FROM account_blocks WHERE practice_id = ? ORDER BY sequence",
}


_LOCKS: dict[Path, FileLock] = {}


def _lock(path: Path) -> FileLock:
    # One instance per file in a process, so a holder can re-enter it (FileLock counts).
    if path not in _LOCKS:
        _LOCKS[path] = FileLock(path, timeout=PRACTICE_LOCK_TIMEOUT_SECONDS)
    return _LOCKS[path]


def practice_lock(layout: Layout, practice_id: str) -> FileLock:
    """Serializes everything that publishes one practice (the publish step of syncs,
    overrides, blocks, recomputes), across processes. Held for seconds, not minutes."""
    return _lock(layout.locks_dir / f"practice-{practice_id}.lock")


def extract_lock(layout: Layout, practice_id: str) -> FileLock:
    """Held for the whole extraction of a practice: one extraction of it at a time."""
    return _lock(layout.locks_dir / f"extract-{practice_id}.lock")


def export_state(con: duckdb.DuckDBPyConnection, practice_id: str, snapshot_dir: Path) -> None:
    for relation in STATE_RELATIONS:
        copy_to_parquet(
            con, relation, _STATE_QUERIES[relation], snapshot_dir / f"{relation}.parquet",
            [practice_id],
        )


def publish(
    layout: Layout,
    working_db: WorkingDatabase,
    practice_id: str,
    snapshot_dir: Path,
    *,
    record: Callable[[duckdb.DuckDBPyConnection], None],
    sync_id: str | None = None,
) -> None:
    """Make `snapshot_dir` the practice's published data, with `record` committed alongside.

    Call while holding `practice_lock`. Files `snapshot_dir` lacks are carried over from
    the current snapshot; the state relations are exported inside the transaction, so they
    include what `record` wrote.
    """
    store = SnapshotStore(layout)
    store.carry_over(practice_id, snapshot_dir, CARRIED_FILES)
    with working_db.transaction() as con:
        record(con)
        con.execute(
            "INSERT OR REPLACE INTO published_snapshots VALUES (?, ?, ?, current_timestamp)",
            [practice_id, snapshot_dir.name, sync_id],
        )
        export_state(con, practice_id, snapshot_dir)
    store.point_to(practice_id, snapshot_dir)
    store.prune(practice_id)


def reconcile(layout: Layout, working_db: WorkingDatabase, practice_id: str) -> bool:
    """Point the symlink at the snapshot the working database says is published."""
    with working_db.connect() as con:
        rows = con.execute(
            "SELECT snapshot_id FROM published_snapshots WHERE practice_id = ?", [practice_id]
        ).fetchall()
    row = rows[0] if rows else None
    store = SnapshotStore(layout)
    if row is None or store.current_id(practice_id) == row[0]:
        return False
    target = store.snapshot_dir(practice_id, row[0])
    if not target.is_dir():
        return False
    store.point_to(practice_id, target)
    return True
