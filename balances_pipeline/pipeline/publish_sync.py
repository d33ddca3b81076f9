"""Publish a sync: transform the waiting extract and make it the practice's data, atomically.

    lock the practice's publishing → claim its newest waiting extract →
    account_balances (balances.py) → the account count checked against the previous
    successful sync's (collapse_guard.py) → overrides kept / superseded / expired and
    outstanding_balances (overrides.py) → aging_summary (summary.py) → a new snapshot
    directory → one transaction for the state + one symlink swap (storage/publish.py)

With no extract waiting, the derived relations are recomputed from the published
balances instead (`recompute.py`): what re-materializing the balances step alone means.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.balances import (
    build_from_aging_report,
    build_from_ledger,
    build_from_source_balances,
)
from balances_pipeline.pipeline.collapse_guard import check_account_count
from balances_pipeline.pipeline.extract import is_ledger
from balances_pipeline.pipeline.failures import fail_sync
from balances_pipeline.pipeline.freshness import fresh_until
from balances_pipeline.pipeline.history import record_history
from balances_pipeline.pipeline.outcomes import SyncOutcome
from balances_pipeline.pipeline.overrides import (
    build_outstanding_balances,
    has_unidentified_rejects,
    reconcile_overrides,
    still_active,
)
from balances_pipeline.pipeline.recompute import recompute_practice, transform_params
from balances_pipeline.pipeline.summary import build_aging_summary
from balances_pipeline.schema import SYNC_RELATIONS
from balances_pipeline.storage import override_store, sync_runs
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import (
    StateChanges,
    SyncEnd,
    practice_lock,
    publish,
    reconcile,
)
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet
from balances_pipeline.storage.staging import StagingDatabase, remove_staging_files
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)


def publish_practice(
    practice: Practice, layout: Layout, *, dagster_run_id: str | None = None
) -> SyncOutcome:
    """Transform the practice's waiting extract and publish it atomically (or, with none
    waiting, recompute from the published balances). Raises `SyncFailed`."""
    working_db = WorkingDatabase(layout)
    clock = time.monotonic()
    with practice_lock(layout, practice.id):
        reconcile(layout, working_db, practice.id)
        with working_db.transaction() as con:
            abandoned = sync_runs.abandon_unfinished(con, practice.id, ("publishing",))
            waiting = sync_runs.claim_waiting_extract(con, practice.id)
        if abandoned:
            # Killed while publishing: the publish lock we hold says nobody uses them.
            remove_staging_files(abandoned)
            log.warning("practice %s: failed %d sync(s) killed while publishing",
                        practice.id, len(abandoned))
        if waiting is None:
            return recompute_practice(practice, layout)
        staging = StagingDatabase.open(layout.duckdb, Path(waiting.staging_file))
        try:
            outcome = _transform_and_publish(practice, layout, working_db, waiting, staging)
        except BaseException as error:
            failure = fail_sync(layout, working_db, practice, waiting.sync_id, staging,
                                sync_runs.SyncCounts(), error)
            if isinstance(error, Exception):
                raise failure from None
            raise
        # Published and recorded as a success: nothing after this may fail the sync.
        staging.remove()
        record_history(practice, layout, outcome)
    outcome.duration_seconds = time.monotonic() - clock
    return outcome


def _write_snapshot(staging: StagingDatabase, snapshot_dir: Path) -> None:
    con = staging.con
    for relation in SYNC_RELATIONS:
        target = snapshot_dir / f"{relation}.parquet"
        copy_to_parquet(con, relation, f"SELECT * FROM {relation}", target)  # noqa: S608
    con.execute(
        f"COPY (SELECT * FROM stg_aging_report ORDER BY guarantor_id) TO "  # noqa: S608
        f"{sql_literal(str(snapshot_dir / 'source_aging_report.parquet'))} "
        "(FORMAT parquet, COMPRESSION zstd)"
    )


def _apply_staff_changes_made_meanwhile(
    practice: Practice, layout: Layout, working_db: WorkingDatabase, expected_events: int
) -> str | None:
    """Staff changed the practice's overrides between this sync's reading them and its
    publish: possible only in the DuckLake layout, where the change came from another
    machine (on one machine the practice's publish lock keeps them apart). Its event is
    committed, but this publish computed the balances without it: republish from what was
    just published, with the overrides as they are now. Returns the snapshot it published."""
    with working_db.connect() as con:
        events_now = override_store.event_count(con, practice.id)
    if events_now != expected_events:
        log.warning("practice %s: overrides changed during the sync; republishing with them",
                    practice.id)
        return recompute_practice(practice, layout).snapshot_id
    return None


def _transform_and_publish(
    practice: Practice,
    layout: Layout,
    working_db: WorkingDatabase,
    waiting: sync_runs.WaitingExtract,
    staging: StagingDatabase,
) -> SyncOutcome:
    params = transform_params(practice, waiting.sync_id, waiting.as_of_date, waiting.started_at)
    if is_ledger(practice):
        balances = build_from_ledger(layout, working_db, practice, waiting, staging, params)
    elif practice.source.produces == "account_balances":
        balances = build_from_source_balances(layout, working_db, practice, waiting, staging,
                                              params)
    else:
        balances = build_from_aging_report(staging, params)
    # Before anything ends an override or replaces the data: has the count collapsed?
    check_account_count(working_db, practice, waiting.sync_id, balances.accounts)
    with working_db.connect() as con:
        active = override_store.active_overrides(con, practice.id)
        events_seen = override_store.event_count(con, practice.id)
    if has_unidentified_rejects(staging.con):
        log.warning("practice %s: rejected rows whose account could not be read; overrides"
                    " on accounts missing from this sync are kept", practice.id)
    override_events = reconcile_overrides(
        staging.con, active, waiting.sync_id,
        one_row_per_account=balances.one_row_per_account,
    )
    applied = still_active(active, override_events)
    build_outstanding_balances(staging.con, params, applied)
    summary = build_aging_summary(staging.con, params)
    discrepancies: dict[str, int] = dict(
        staging.con.execute('SELECT "check", count(*) FROM balance_discrepancies GROUP BY 1')
        .fetchall()
    )
    changes_from_staging = {
        "rejected_rows": staging.con.sql("SELECT * FROM stg_rejected_rows").to_arrow_table(),
        "discrepancies": staging.con.sql("SELECT * FROM balance_discrepancies").to_arrow_table(),
    }
    snapshot_dir = SnapshotStore(layout).create(practice.id)
    _write_snapshot(staging, snapshot_dir)
    staging.close()
    finished_at = datetime.now(UTC)
    until = fresh_until(practice, waiting.started_at)
    changes = StateChanges(
        override_events=override_events,
        ledger_refresh=balances.ledger_refresh,
        sync_end=SyncEnd(
            sync_id=waiting.sync_id, status="success",
            counts=sync_runs.SyncCounts(accounts=balances.accounts), finished_at=finished_at,
            fresh_until=until,
        ),
        **changes_from_staging,
    )
    conflicts = publish(layout, working_db, practice.id, snapshot_dir, changes,
                        sync_id=waiting.sync_id)
    republished = _apply_staff_changes_made_meanwhile(practice, layout, working_db,
                                                      events_seen + len(override_events))
    log.info("practice %s: published %d accounts (sync %s)", practice.id, balances.accounts,
             waiting.sync_id)
    return SyncOutcome(
        practice_id=practice.id,
        sync_id=waiting.sync_id,
        as_of_date=waiting.as_of_date,
        started_at=waiting.started_at,
        finished_at=finished_at,
        snapshot_id=republished or snapshot_dir.name,
        counts=waiting.counts,
        accounts=balances.accounts,
        fresh_until=until,
        summary=summary,
        discrepancies=discrepancies,
        overrides=_override_counts(len(applied), override_events) | {"conflicts": conflicts},
        mode=waiting.mode,
        future_entries=balances.future_entries,
    )


def _override_counts(applied: int, events: list[Any]) -> dict[str, int]:
    counts = Counter({"active": applied, "superseded": 0, "expired": 0})
    counts.update(event.event for event in events)
    return dict(counts)
