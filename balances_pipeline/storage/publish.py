"""Publishing a practice: one working-database transaction, then one atomic symlink swap.

The working database is the source of truth for which snapshot is published
(`published_snapshots`); the symlink follows it. If a process dies between the commit and
the swap, `reconcile()` (run at the start of the practice's next sync) rolls it forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from filelock import FileLock

from balances_pipeline.schema import (
    COLLECTION_TARGET_HISTORY,
    DATA_RELATIONS,
    STATE_RELATIONS,
    STG_REJECTED_ROWS,
    quoted,
)
from balances_pipeline.storage import lake_published, ledger_store, override_store, sync_runs
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.override_store import OverrideEvent
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet
from balances_pipeline.storage.working_db import WorkingDatabase

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


# Columns of the staged rejected rows and of the day's targets that the working tables
# keep (the rest of each row comes from the publish).
_REJECTED_COLUMNS = ", ".join(map(quoted, STG_REJECTED_ROWS.names))
_TARGET_COLUMNS = ", ".join(
    quoted(name) for name in COLLECTION_TARGET_HISTORY.names if name != "sync_id"
)

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


@dataclass(frozen=True)
class SyncEnd:
    """How a sync ended, recorded in its `sync_runs` row with the publish."""

    sync_id: str
    status: str  # success | failed
    counts: sync_runs.SyncCounts
    finished_at: datetime
    fresh_until: datetime | None = None
    error: str | None = None
    error_class: str | None = None


@dataclass(frozen=True)
class LedgerRefresh:
    full: bool
    as_of: date
    cursors: dict[str, datetime]


@dataclass(frozen=True)
class CollectionDay:
    """The day's collection decisions, replacing that day's `collection_target_history`."""

    as_of: date
    sync_id: str
    targets: pa.Table


@dataclass(frozen=True)
class StateChanges:
    """What a publish commits to the working database, in the same transaction that makes
    the new snapshot the published one."""

    override_events: list[OverrideEvent] = field(default_factory=list)
    rejected_rows: pa.Table | None = None  # stg_rejected_rows of `sync_end.sync_id`
    discrepancies: pa.Table | None = None  # balance_discrepancies rows
    ledger_refresh: LedgerRefresh | None = None
    collection_day: CollectionDay | None = None
    sync_end: SyncEnd | None = None


def _commit(
    con: duckdb.DuckDBPyConnection, practice_id: str, changes: StateChanges, snapshot_id: str
) -> None:
    if changes.ledger_refresh is not None:
        refresh = changes.ledger_refresh
        ledger_store.record_refresh(con, practice_id, refresh.full, refresh.as_of,
                                    refresh.cursors)
    override_store.append_events(con, changes.override_events)
    if changes.rejected_rows is not None and changes.sync_end is not None:
        con.register("rejected_batch", changes.rejected_rows)
        con.execute(
            "INSERT INTO rejected_rows BY NAME SELECT ? AS sync_id, ? AS practice_id,"  # noqa: S608
            f" {_REJECTED_COLUMNS} FROM rejected_batch",
            [changes.sync_end.sync_id, practice_id],
        )
        con.unregister("rejected_batch")
    if changes.discrepancies is not None:
        con.register("found_discrepancies", changes.discrepancies)
        con.execute("INSERT INTO balance_discrepancies BY NAME SELECT * FROM found_discrepancies")
        con.unregister("found_discrepancies")
    if changes.collection_day is not None:
        day = changes.collection_day
        con.execute(
            "DELETE FROM collection_target_history WHERE practice_id = ? AND as_of_date = ?",
            [practice_id, day.as_of],
        )
        con.register("day_targets", day.targets)
        con.execute(
            f"INSERT INTO collection_target_history BY NAME SELECT {_TARGET_COLUMNS},"  # noqa: S608
            " ? AS sync_id FROM day_targets",
            [day.sync_id],
        )
        con.unregister("day_targets")
    if changes.sync_end is not None:
        end = changes.sync_end
        sync_runs.finish(
            con, end.sync_id, status=end.status, counts=end.counts,
            finished_at=end.finished_at, fresh_until=end.fresh_until, error=end.error,
            error_class=end.error_class,
            snapshot_id=snapshot_id if end.status == "success" else None,
        )


def publish(
    layout: Layout,
    working_db: WorkingDatabase,
    practice_id: str,
    snapshot_dir: Path,
    changes: StateChanges,
    *,
    sync_id: str | None = None,
) -> int:
    """Make `snapshot_dir` the practice's published data, with `changes` committed alongside.
    Returns the practice's number of unresolved override conflicts after the commit.

    Call while holding `practice_lock`. Files `snapshot_dir` lacks are carried over from
    the current snapshot; the state relations are exported inside the transaction, so they
    include the changes.
    """
    if layout.lake is not None:
        return _publish_to_lake(layout, working_db, practice_id, snapshot_dir, changes,
                                sync_id)
    store = SnapshotStore(layout)
    store.carry_over(practice_id, snapshot_dir, CARRIED_FILES)
    with working_db.transaction() as con:
        _commit(con, practice_id, changes, snapshot_dir.name)
        conflicts = override_store.open_conflict_count(con, practice_id)
        record_published(con, practice_id, snapshot_dir.name, sync_id)
        export_state(con, practice_id, snapshot_dir)
    store.point_to(practice_id, snapshot_dir)
    store.prune(practice_id)
    return conflicts


def record_published(con: duckdb.DuckDBPyConnection, practice_id: str, snapshot_id: str,
                     sync_id: str | None) -> None:
    con.execute("DELETE FROM published_snapshots WHERE practice_id = ?", [practice_id])
    con.execute(
        "INSERT INTO published_snapshots (practice_id, snapshot_id, sync_id, published_at)"
        " VALUES (?, ?, ?, current_timestamp)",
        [practice_id, snapshot_id, sync_id],
    )


def _publish_to_lake(
    layout: Layout, working_db: WorkingDatabase, practice_id: str, snapshot_dir: Path,
    changes: StateChanges, sync_id: str | None,
) -> int:
    """The DuckLake layout's publish: the state changes and the practice's rows of every
    relation `snapshot_dir` carries in one lake transaction, run again from its start
    when it conflicts with another worker's commit (`lake.retry_conflicts`)."""

    def commit(con: duckdb.DuckDBPyConnection) -> int:
        _commit(con, practice_id, changes, snapshot_dir.name)
        lake_published.replace_practice_rows(con, practice_id, snapshot_dir)
        record_published(con, practice_id, snapshot_dir.name, sync_id)
        return override_store.open_conflict_count(con, practice_id)

    conflicts = working_db.transaction_retrying(commit)
    SnapshotStore(layout).prune(practice_id)
    return conflicts


def reconcile(layout: Layout, working_db: WorkingDatabase, practice_id: str) -> bool:
    """Point the symlink at the snapshot the working database says is published."""
    if layout.lake is not None:
        return False  # a lake publish has no second step
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
