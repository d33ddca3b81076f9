"""Recompute a practice's derived relations from its published balances.

After a staff change (an override set or cleared), or a balances step with no new
extract: outstanding_balances and aging_summary are rebuilt from the published
account_balances and the active overrides, and published with the change's events in the
same step. `rebuild_published` does it for every practice after `warehouse.duckdb` is
rebuilt.

A staff change commits its events (of every practice it touches) in one working-database
transaction, with a `pending_republishes` row per practice; `republish_practice` then
publishes each practice and deletes its row. A command killed in between leaves the rows:
`complete_pending_republishes` (run first by every staff command, `balances` command and
`warehouse rebuild`) republishes those practices, so a committed change is never left
unpublished.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from balances_pipeline.config import Practice, PracticesFile
from balances_pipeline.pipeline.collections import refresh_collection_targets
from balances_pipeline.pipeline.errors import NothingToPublish
from balances_pipeline.pipeline.history import record_history
from balances_pipeline.pipeline.outcomes import SyncOutcome
from balances_pipeline.pipeline.overrides import build_outstanding_balances
from balances_pipeline.pipeline.summary import build_aging_summary
from balances_pipeline.storage import duck, override_store, sync_runs
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.override_store import OverrideEvent
from balances_pipeline.storage.publish import StateChanges, practice_lock, publish, reconcile
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet
from balances_pipeline.storage.working_db import WorkingDatabase

RECOMPUTED_RELATIONS = ("outstanding_balances", "aging_summary")
log = logging.getLogger(__name__)


def transform_params(
    practice: Practice, sync_id: str, as_of: date, started_at: datetime
) -> dict[str, Any]:
    """The parameters of the SQL transforms (`$practice_id`, ...)."""
    return {
        "practice_id": practice.id,
        "sync_id": sync_id,
        "as_of_date": as_of,
        "synced_at": started_at,
    }


def recompute_practice(
    practice: Practice, layout: Layout, *, events: list[OverrideEvent] | None = None
) -> SyncOutcome:
    """Recompute outstanding_balances and aging_summary from the published account_balances
    and the active overrides, committing `events` in the same step as the publish."""
    working_db = WorkingDatabase(layout)
    events = events or []
    store = SnapshotStore(layout)
    with practice_lock(layout, practice.id):
        # A publish killed between its commit and its symlink swap: carry over from the
        # snapshot the working database says is published, not from the stale link.
        reconcile(layout, working_db, practice.id)
        current = store.current_dir(practice.id)
        if current is None or not (current / "account_balances.parquet").exists():
            raise NothingToPublish(
                f"practice {practice.id}: no synced balances yet; materialize source_extract",
                error_class="NothingToPublish",
            )
        with working_db.connect() as con:
            sync = sync_runs.latest_published(con, practice.id)
            if sync is None:
                raise NothingToPublish(
                    f"practice {practice.id}: no successful sync recorded",
                    error_class="NothingToPublish",
                )
            # The active overrides as they will be once `events` are committed.
            con.execute("BEGIN TRANSACTION")
            override_store.append_events(con, events)
            active = override_store.active_overrides(con, practice.id)
            con.execute("ROLLBACK")
        work = duck.connect(layout.duckdb)
        try:
            work.execute(
                "CREATE TABLE account_balances AS SELECT * FROM read_parquet(?)",
                [str(current / "account_balances.parquet")],
            )
            params = transform_params(practice, sync.sync_id, sync.as_of_date, sync.started_at)
            accounts = build_outstanding_balances(work, params, active)
            summary = build_aging_summary(work, params)
            snapshot_dir = store.create(practice.id)
            for relation in RECOMPUTED_RELATIONS:
                copy_to_parquet(
                    work, relation, f"SELECT * FROM {relation}",  # noqa: S608
                    snapshot_dir / f"{relation}.parquet",
                )
        finally:
            work.close()
        conflicts = publish(layout, working_db, practice.id, snapshot_dir,
                            StateChanges(override_events=events), sync_id=sync.sync_id)
    outcome = SyncOutcome(
        practice_id=practice.id, sync_id=sync.sync_id, as_of_date=sync.as_of_date,
        started_at=sync.started_at, finished_at=datetime.now(UTC),
        snapshot_id=snapshot_dir.name, counts=sync.counts, accounts=accounts,
        fresh_until=sync.fresh_until, summary=summary, discrepancies={},
        overrides={"active": len(active), "conflicts": conflicts},
    )
    record_history(practice, layout, outcome)
    return outcome


def republish_practice(
    practice: Practice, practices: PracticesFile, layout: Layout, *, recompute: bool = True
) -> str | None:
    """Publish the practice's committed staff changes, then delete its `pending_republishes`
    row: outstanding_balances and aging_summary recomputed with the active overrides (and
    every state relation exported: override_events, account_blocks), then the collection
    targets re-evaluated (`recompute=False`: only those, after a block). Returns why the
    targets could not be re-evaluated, if they could not."""
    with practice_lock(layout, practice.id):
        if recompute:
            recompute_practice(practice, layout)
        warning = refresh_collection_targets(practice, practices, layout)
        if warning and not recompute:
            # The targets' publish would have exported the state (account_blocks): do it.
            recompute_practice(practice, layout)
        with WorkingDatabase(layout).transaction() as con:
            override_store.clear_pending(con, practice.id)
    if warning:
        log.warning("practice %s: %s", practice.id, warning)
    return warning


def complete_pending_republishes(
    layout: Layout, practices: PracticesFile, practice_ids: Iterable[str] | None = None
) -> list[str]:
    """Republish the practices (of `practice_ids`; None: all) whose committed staff changes
    a killed command left unpublished. Returns the practices republished."""
    if not layout.working_db_path.exists():
        return []  # nothing was ever committed
    working_db = WorkingDatabase(layout)
    with working_db.connect() as con:
        pending = override_store.pending_practices(con)
    wanted = None if practice_ids is None else set(practice_ids)
    done = []
    for practice_id in pending:
        if (wanted is not None and practice_id not in wanted) or practice_id not in practices.ids:
            continue  # not asked for, or no longer in the practices file
        with practice_lock(layout, practice_id):
            with working_db.connect() as con:
                if practice_id not in override_store.pending_practices(con):
                    continue  # another process completed it meanwhile
            log.warning("practice %s: republishing staff changes an interrupted command "
                        "committed", practice_id)
            try:
                republish_practice(practices.practice(practice_id), practices, layout)
            except NothingToPublish:
                # Nothing synced to publish them with: the practice's next sync does.
                with working_db.transaction() as con:
                    override_store.clear_pending(con, practice_id)
                continue
        done.append(practice_id)
    return done


def rebuild_published(layout: Layout, practices: PracticesFile) -> list[str]:
    """Rebuild warehouse.duckdb and republish every synced practice from the working state
    (first completing any staff change an interrupted command left unpublished).

    Override events, sync history and balances are read, never rewritten.
    """
    ensure_analyst_warehouse(layout, force=True)
    completed = complete_pending_republishes(layout, practices)
    rebuilt = []
    for practice in practices.practices:
        current = SnapshotStore(layout).current_dir(practice.id)
        if current is not None and (current / "account_balances.parquet").exists():
            if practice.id not in completed:
                recompute_practice(practice, layout)
            rebuilt.append(practice.id)
    return rebuilt
