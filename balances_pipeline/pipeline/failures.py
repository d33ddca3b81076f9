"""A failed sync: recorded in `sync_runs`, republished around the unchanged data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import duckdb

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.errors import SyncFailed, one_line_error
from balances_pipeline.sources.errors import TransientSourceError
from balances_pipeline.storage import sync_runs
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import StateChanges, SyncEnd, publish
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.staging import StagingDatabase
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)


def fail_sync(
    layout: Layout,
    working_db: WorkingDatabase,
    practice: Practice,
    sync_id: str,
    staging: StagingDatabase,
    counts: sync_runs.SyncCounts,
    error: BaseException,
) -> SyncFailed:
    """Record the failure (best effort), drop the staging file, return what to raise.

    If recording fails too, the next sync of the practice marks this one abandoned.
    """
    message = one_line_error(error, practice)
    try:
        _record_failure(layout, working_db, practice, sync_id, staging, counts, message,
                        type(error).__name__)
    except Exception as recording_error:  # noqa: BLE001 - the original error is what matters
        log.error(
            "practice %s: could not record the failure of sync %s: %s", practice.id,
            sync_id, type(recording_error).__name__,
        )
    staging.remove()
    return SyncFailed(
        message, sync_id, type(error).__name__, isinstance(error, TransientSourceError)
    )


def _record_failure(
    layout: Layout,
    working_db: WorkingDatabase,
    practice: Practice,
    sync_id: str,
    staging: StagingDatabase,
    counts: sync_runs.SyncCounts,
    message: str,
    error_class: str,
) -> None:
    """Mark the sync failed and republish the practice's state around its unchanged data
    (its rejected rows too, so staff can see why)."""
    try:
        rejected = staging.con.sql("SELECT * FROM stg_rejected_rows").to_arrow_table()
        counts = sync_runs.SyncCounts(
            rows_extracted=sum(staging.counts.values()) or None, rows_rejected=len(rejected),
            requests=counts.requests, retries=counts.retries,
        )
    except duckdb.Error:
        rejected = None
    changes = StateChanges(
        rejected_rows=rejected,
        sync_end=SyncEnd(
            sync_id=sync_id, status="failed", counts=counts, finished_at=datetime.now(UTC),
            error=message, error_class=error_class,
        ),
    )
    snapshot_dir = SnapshotStore(layout).create(practice.id)
    publish(layout, working_db, practice.id, snapshot_dir, changes)
    log.error("practice %s: sync %s failed: %s", practice.id, sync_id, message)
