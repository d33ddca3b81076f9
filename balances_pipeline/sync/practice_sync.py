"""One practice's sync, outside of Dagster, in two steps that may run in two processes.

    extract_practice:  lock the practice → fail its unfinished syncs → sync_runs 'running'
                       → stream the source's pages into a staging database (no shared
                       lock held) → 'extracted'
    publish_practice:  lock the practice → account_balances → outstanding_balances →
                       aging_summary (SQL in the staging database) → a new snapshot
                       directory → commit state + swap the symlink (atomic publish)

A failure anywhere leaves the previous snapshot published; the failed `sync_runs` row is
recorded and republished. Error messages are one line and scrubbed of secrets.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from balances_pipeline.config import OpenDentalSource, Practice, PracticesFile
from balances_pipeline.home import Layout
from balances_pipeline.sources.errors import SourceError, TransientSourceError
from balances_pipeline.sources.opendental import OpenDentalClient
from balances_pipeline.sync.as_of import resolve_as_of
from balances_pipeline.sync.balances import build_account_balances, find_discrepancies
from balances_pipeline.sync.extract import (
    ExtractResult,
    ProgressCallback,
    extract_aging_report,
    extract_ledger,
)
from balances_pipeline.sync.freshness import fresh_until
from balances_pipeline.sync.overrides import (
    build_outstanding_balances,
    reconcile_overrides,
    still_active,
)
from balances_pipeline.sync.summary import build_aging_summary
from balances_pipeline.warehouse import duck, override_store, sync_runs
from balances_pipeline.warehouse.analyst import ensure_analyst_warehouse
from balances_pipeline.warehouse.history import write_history
from balances_pipeline.warehouse.ledger_store import (
    LedgerPlan,
    LedgerStore,
    next_cursors,
    plan_extract,
    record_refresh,
)
from balances_pipeline.warehouse.override_store import OverrideEvent
from balances_pipeline.warehouse.publish import extract_lock, practice_lock, publish, reconcile
from balances_pipeline.warehouse.relations import SYNC_RELATIONS
from balances_pipeline.warehouse.snapshots import SnapshotStore, copy_to_parquet, sql_literal
from balances_pipeline.warehouse.sql_files import create_table_from_sql
from balances_pipeline.warehouse.staging import StagingDatabase, remove_stale_staging
from balances_pipeline.warehouse.working_db import WorkingDatabase

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 500
PROGRESS_EVERY_PAGES = 10
T = TypeVar("T")


class SyncFailed(RuntimeError):
    """The sync failed; the message is one line, names the practice, holds no secret."""

    def __init__(
        self,
        message: str,
        sync_id: str | None = None,
        error_class: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.sync_id = sync_id
        self.error_class = error_class
        self.transient = transient


class NothingToPublish(SyncFailed):
    """No extract of the practice is waiting to be published."""


@dataclass(frozen=True)
class ExtractOutcome:
    practice_id: str
    sync_id: str
    as_of_date: date
    started_at: datetime
    extract: ExtractResult
    duration_seconds: float


@dataclass
class SyncOutcome:
    practice_id: str
    sync_id: str
    as_of_date: date
    started_at: datetime
    finished_at: datetime
    snapshot_id: str
    counts: sync_runs.SyncCounts
    accounts: int
    fresh_until: datetime
    summary: dict[str, Any]
    discrepancies: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    mode: str = "full"
    future_entries: int | None = None


def new_sync_id(practice_id: str, started_at: datetime) -> str:
    return f"{practice_id}-{started_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _secret_values(practice: Practice) -> list[str]:
    source = practice.source
    names = [
        getattr(source, attribute, None)
        for attribute in ("developer_key_env", "customer_key_env", "private_key_env", "token_env")
    ]
    return [os.environ[name] for name in names if name and os.environ.get(name)]


def one_line_error(error: BaseException, practice: Practice) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = text if isinstance(error, SourceError) else f"{type(error).__name__}: {text}"
    for secret in _secret_values(practice):
        message = message.replace(secret, "***")
    return message[:MAX_ERROR_LENGTH]


def _client_for(practice: Practice) -> OpenDentalClient:
    if not isinstance(practice.source, OpenDentalSource):
        raise SourceError(f"practice {practice.id}: source type fhir is not supported yet")
    if not practice.verify_tls and practice.source.base_url.startswith("https"):
        log.warning("practice %s: TLS certificate verification is turned off", practice.id)
    return OpenDentalClient(practice)


def _reporting(practice_id: str, progress: ProgressCallback | None) -> ProgressCallback:
    def report(pages: int, rows: int) -> None:
        if pages % PROGRESS_EVERY_PAGES == 0:
            log.info("practice %s: %d rows in %d pages so far", practice_id, rows, pages)
        if progress:
            progress(pages, rows)

    return report


def _transform_params(practice: Practice, sync_id: str, as_of: date, started_at: datetime) -> dict:
    return {
        "practice_id": practice.id,
        "sync_id": sync_id,
        "as_of_date": as_of,
        "synced_at": started_at,
    }


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


def _arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    return con.sql(query).to_arrow_table()


@dataclass(frozen=True)
class _SyncStart:
    sync_id: str
    as_of: date
    started_at: datetime
    clock: float
    plan: LedgerPlan | None = None


def _is_ledger(practice: Practice) -> bool:
    return getattr(practice.source, "mode", None) == "ledger"


def _begin(
    practice: Practice, layout: Layout, working_db: WorkingDatabase, dagster_run_id: str | None
) -> _SyncStart:
    """Clean up after dead syncs of the practice, then record this one as running.

    Called with the practice's lock held: no other sync of it is alive in any process.
    """
    started_at = datetime.now(UTC)
    start = _SyncStart(
        sync_id=new_sync_id(practice.id, started_at),
        as_of=resolve_as_of(practice, started_at),
        started_at=started_at,
        clock=time.monotonic(),
    )
    source_mode = getattr(practice.source, "mode", "aging_report")
    with working_db.transaction() as con:
        unfinished = sync_runs.abandon_unfinished(con, practice.id, ("extracting", "extracted"))
        if _is_ledger(practice):
            start = replace(start, plan=plan_extract(con, practice, start.as_of))
        sync_runs.start(
            con, sync_id=start.sync_id, practice_id=practice.id, dagster_run_id=dagster_run_id,
            as_of_date=start.as_of, mode=start.plan.mode if start.plan else "full",
            source_mode=source_mode, started_at=started_at,
        )
        live = sync_runs.live_staging_files(con, practice.id)
    remove_stale_staging(layout.staging_dir(practice.id), keep=live)
    if unfinished:
        log.warning("practice %s: failed %d unfinished sync(s)", practice.id, len(unfinished))
    return start


def _guarded(
    practice: Practice,
    layout: Layout,
    working_db: WorkingDatabase,
    sync_id: str,
    staging: StagingDatabase,
    step: Callable[[], T],
    stats: Callable[[], sync_runs.SyncCounts],
) -> T:
    """Run one step of a sync; on any failure record it, drop the staging file, re-raise."""
    try:
        return step()
    except BaseException as error:
        message = one_line_error(error, practice)
        try:
            _record_failure(layout, working_db, practice, sync_id, staging, stats(), message,
                            type(error).__name__)
        except Exception as recording_error:  # the next sync marks this one abandoned
            log.error(
                "practice %s: could not record the failure of sync %s: %s", practice.id,
                sync_id, type(recording_error).__name__,
            )
        staging.remove()
        if isinstance(error, Exception):
            raise SyncFailed(
                message, sync_id, type(error).__name__, isinstance(error, TransientSourceError)
            ) from None
        raise


def extract_practice(
    practice: Practice,
    layout: Layout,
    *,
    dagster_run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> ExtractOutcome:
    """Read the practice's source into a staging file that waits for `publish_practice`."""
    working_db = WorkingDatabase(layout)
    ensure_analyst_warehouse(layout)
    with extract_lock(layout, practice.id):
        start = _begin(practice, layout, working_db, dagster_run_id)
        staging = StagingDatabase(layout.staging_dir(practice.id), start.sync_id)
        client: list[OpenDentalClient] = []

        def step() -> ExtractResult:
            client.append(_client_for(practice))
            with client[0]:
                if start.plan is not None:
                    extract = extract_ledger(
                        client[0], staging, practice_id=practice.id, as_of=start.as_of,
                        plan=start.plan, max_rejected_fraction=practice.max_rejected_fraction,
                        progress=_reporting(practice.id, progress),
                    )
                else:
                    extract = extract_aging_report(
                        client[0], staging, practice_id=practice.id, as_of=start.as_of,
                        max_rejected_fraction=practice.max_rejected_fraction,
                        progress=_reporting(practice.id, progress),
                        include_patients=practice.collection_rules is not None,
                    )
            staging.close()
            with working_db.transaction() as con:
                sync_runs.mark_extracted(con, start.sync_id, _counts(extract), str(staging.path))
            return extract

        def stats() -> sync_runs.SyncCounts:
            if not client:
                return sync_runs.SyncCounts()
            return sync_runs.SyncCounts(
                requests=client[0].stats.requests, retries=client[0].stats.retries
            )

        extract = _guarded(practice, layout, working_db, start.sync_id, staging, step, stats)
    log.info(
        "practice %s: extracted %d rows (%d rejected) in %d requests, %d retries",
        practice.id, extract.rows_extracted, extract.rows_rejected, extract.requests,
        extract.retries,
    )
    return ExtractOutcome(
        practice_id=practice.id, sync_id=start.sync_id, as_of_date=start.as_of,
        started_at=start.started_at, extract=extract,
        duration_seconds=time.monotonic() - start.clock,
    )


def _counts(extract: ExtractResult) -> sync_runs.SyncCounts:
    return sync_runs.SyncCounts(
        rows_extracted=extract.rows_extracted, rows_rejected=extract.rows_rejected,
        requests=extract.requests, retries=extract.retries, pages=extract.pages,
    )


def publish_practice(
    practice: Practice, layout: Layout, *, dagster_run_id: str | None = None
) -> SyncOutcome:
    """Transform the practice's waiting extract and publish it atomically.

    With no extract waiting, recompute the derived relations from the published balances
    (the overrides step onwards): what re-materializing the balances step alone means.
    """
    working_db = WorkingDatabase(layout)
    clock = time.monotonic()
    with practice_lock(layout, practice.id):
        reconcile(layout, working_db, practice.id)
        with working_db.transaction() as con:
            sync_runs.abandon_unfinished(con, practice.id, ("publishing",))
            waiting = sync_runs.claim_waiting_extract(con, practice.id)
        if waiting is None:
            return recompute_practice(practice, layout)
        staging = StagingDatabase.open(Path(waiting.staging_file))
        outcome = _guarded(
            practice, layout, working_db, waiting.sync_id, staging,
            lambda: _transform_and_publish(practice, layout, working_db, waiting, staging),
            lambda: sync_runs.SyncCounts(),
        )
        # Published and recorded as a success: nothing after this may fail the sync.
        staging.remove()
        _write_history_best_effort(practice, layout, outcome)
    outcome.duration_seconds = time.monotonic() - clock
    return outcome


def _transform_and_publish(
    practice: Practice,
    layout: Layout,
    working_db: WorkingDatabase,
    waiting: sync_runs.WaitingExtract,
    staging: StagingDatabase,
) -> SyncOutcome:
    params = _transform_params(practice, waiting.sync_id, waiting.as_of_date, waiting.started_at)
    ledger_record = None
    future_entries = None
    if _is_ledger(practice):
        accounts, future_entries, ledger_record = _age_ledger(
            practice, layout, working_db, waiting, staging, params
        )
    else:
        accounts = build_account_balances(staging.con, params)
        find_discrepancies(staging.con, params)
    with working_db.connect() as con:
        active = override_store.active_overrides(con, practice.id)
    override_events = reconcile_overrides(staging.con, active, waiting.sync_id)
    applied = still_active(active, override_events)
    build_outstanding_balances(staging.con, params, applied)
    summary = build_aging_summary(staging.con, params)
    discrepancies = dict(
        staging.con.execute('SELECT "check", count(*) FROM balance_discrepancies GROUP BY 1')
        .fetchall()
    )
    rejected = _arrow(staging.con, "SELECT * FROM stg_rejected_rows")
    found = _arrow(staging.con, "SELECT * FROM balance_discrepancies")
    snapshot_dir = SnapshotStore(layout).create(practice.id)
    _write_snapshot(staging, snapshot_dir)
    staging.close()
    finished_at = datetime.now(UTC)
    until = fresh_until(practice, waiting.started_at)
    counts = sync_runs.SyncCounts(accounts=accounts)

    conflicts: list[int] = []

    def record(con: duckdb.DuckDBPyConnection) -> None:
        if ledger_record is not None:
            ledger_record(con)
        override_store.append_events(con, override_events)
        conflicts.append(override_store.open_conflict_count(con, practice.id))
        _insert_rejected(con, rejected, waiting.sync_id, practice.id)
        con.register("found_discrepancies", found)
        con.execute("INSERT INTO balance_discrepancies SELECT * FROM found_discrepancies")
        sync_runs.finish(
            con, waiting.sync_id, status="success", counts=counts, finished_at=finished_at,
            fresh_until=until, snapshot_id=snapshot_dir.name,
        )

    publish(layout, working_db, practice.id, snapshot_dir, record=record, sync_id=waiting.sync_id)
    log.info("practice %s: published %d accounts (sync %s)", practice.id, accounts,
             waiting.sync_id)
    return SyncOutcome(
        practice_id=practice.id,
        sync_id=waiting.sync_id,
        as_of_date=waiting.as_of_date,
        started_at=waiting.started_at,
        finished_at=finished_at,
        snapshot_id=snapshot_dir.name,
        counts=waiting.counts,
        accounts=accounts,
        fresh_until=until,
        summary=summary,
        discrepancies=discrepancies,
        overrides=_override_counts(len(applied), override_events) | {"conflicts": conflicts[0]},
        mode=waiting.mode,
        future_entries=future_entries,
    )


def _write_history_best_effort(practice: Practice, layout: Layout, outcome: SyncOutcome) -> None:
    """The day's balance_history file, after the publish; a failure here is logged, and the
    next publish of the day writes it again."""
    try:
        snapshot_dir = SnapshotStore(layout).snapshot_dir(practice.id, outcome.snapshot_id)
        write_history(
            layout, practice.id, snapshot_dir, outcome.as_of_date, practice.history_days
        )
    except Exception as error:  # noqa: BLE001 - the sync itself succeeded
        log.warning("practice %s: balance_history not written (%s)", practice.id,
                    type(error).__name__)


def _age_ledger(
    practice: Practice,
    layout: Layout,
    working_db: WorkingDatabase,
    waiting: sync_runs.WaitingExtract,
    staging: StagingDatabase,
    params: dict[str, Any],
) -> tuple[int, int, Callable[[duckdb.DuckDBPyConnection], None]]:
    """Upsert the extract into the practice's ledger, age the whole ledger, reconcile with
    the source's own report (full refreshes), and return what the publish must commit."""
    full = waiting.mode == "full"
    server_clock = staging.get_meta("server_clock")
    staging.close()
    counts = LedgerStore(layout, practice.id).apply_and_age(staging.path, full, params)
    staging.reopen()
    accounts = staging.con.execute("SELECT count(*) FROM account_balances").fetchall()[0][0]
    create_table_from_sql(staging.con, "balance_discrepancies", "ledger_vs_report", params)
    with working_db.connect() as con:
        previous = dict(con.execute(
            "SELECT endpoint, cursor_at FROM ledger_cursors WHERE practice_id = ?", [practice.id]
        ).fetchall())
    cursors = next_cursors(
        staging.con, previous, datetime.fromisoformat(server_clock) if server_clock else None
    )
    log.info("practice %s: ledger %s, %d entries dated after the as-of date", practice.id,
             "replaced (full refresh)" if full else "updated (incremental)",
             counts["future_entries"])

    def record(con: duckdb.DuckDBPyConnection) -> None:
        record_refresh(con, practice.id, LedgerPlan(full=full), waiting.as_of_date, cursors)

    return accounts, counts["future_entries"], record


def _override_counts(applied: int, events: list[OverrideEvent]) -> dict[str, int]:
    counts = {"active": applied, "superseded": 0, "expired": 0}
    for event in events:
        counts[event.event] = counts.get(event.event, 0) + 1
    return counts


def recompute_practice(
    practice: Practice, layout: Layout, *, events: list[OverrideEvent] | None = None
) -> SyncOutcome:
    """Recompute outstanding_balances and aging_summary from the published account_balances
    and the active overrides, committing `events` in the same step as the publish.

    Used after an override is set or cleared, and by a balances step with no new extract.
    """
    working_db = WorkingDatabase(layout)
    events = events or []
    store = SnapshotStore(layout)
    with practice_lock(layout, practice.id):
        current = store.current_dir(practice.id)
        if current is None or not (current / "account_balances.parquet").exists():
            raise NothingToPublish(
                f"practice {practice.id}: no synced balances yet; materialize source_extract",
                error_class="NothingToPublish",
            )
        with working_db.connect() as con:
            [sync] = con.execute(
                "SELECT sync_id, as_of_date, started_at, rows_extracted, rows_rejected,"
                " requests, retries, pages, fresh_until FROM sync_runs"
                " WHERE snapshot_id IS NOT NULL AND practice_id = ? AND status = 'success'"
                " ORDER BY started_at DESC LIMIT 1",
                [practice.id],
            ).fetchall()
            con.execute("BEGIN TRANSACTION")
            override_store.append_events(con, events)
            active = override_store.active_overrides(con, practice.id)
            con.execute("ROLLBACK")
        work = duck.connect()
        try:
            work.execute(
                "CREATE TABLE account_balances AS SELECT * FROM read_parquet(?)",
                [str(current / "account_balances.parquet")],
            )
            params = _transform_params(practice, sync[0], sync[1], sync[2])
            accounts = build_outstanding_balances(work, params, active)
            summary = build_aging_summary(work, params)
            snapshot_dir = store.create(practice.id)
            for relation in ("outstanding_balances", "aging_summary"):
                copy_to_parquet(
                    work, relation, f"SELECT * FROM {relation}",  # noqa: S608
                    snapshot_dir / f"{relation}.parquet",
                )
        finally:
            work.close()
        conflicts: list[int] = []

        def record(con: duckdb.DuckDBPyConnection) -> None:
            override_store.append_events(con, events)
            conflicts.append(override_store.open_conflict_count(con, practice.id))

        publish(layout, working_db, practice.id, snapshot_dir, record=record, sync_id=sync[0])
    outcome = SyncOutcome(
        practice_id=practice.id, sync_id=sync[0], as_of_date=sync[1], started_at=sync[2],
        finished_at=datetime.now(UTC), snapshot_id=snapshot_dir.name,
        counts=sync_runs.SyncCounts(*sync[3:8]), accounts=accounts, fresh_until=sync[8],
        summary=summary, discrepancies={},
        overrides={"active": len(active), "conflicts": conflicts[0]},
    )
    _write_history_best_effort(practice, layout, outcome)
    return outcome


def rebuild_published(layout: Layout, practices: PracticesFile) -> list[str]:
    """Rebuild warehouse.duckdb and republish every synced practice from the working state.

    Override events, sync history and balances are read, never rewritten.
    """
    ensure_analyst_warehouse(layout, force=True)
    rebuilt = []
    for practice in practices.practices:
        current = SnapshotStore(layout).current_dir(practice.id)
        if current is not None and (current / "account_balances.parquet").exists():
            recompute_practice(practice, layout)
            rebuilt.append(practice.id)
    return rebuilt


def sync_practice(
    practice: Practice,
    layout: Layout,
    *,
    dagster_run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> SyncOutcome:
    """Both steps, one after the other: extract, then transform and publish."""
    clock = time.monotonic()
    extract_practice(practice, layout, dagster_run_id=dagster_run_id, progress=progress)
    outcome = publish_practice(practice, layout, dagster_run_id=dagster_run_id)
    outcome.duration_seconds = time.monotonic() - clock
    return outcome


def _insert_rejected(
    con: duckdb.DuckDBPyConnection, rejected: pa.Table, sync_id: str, practice_id: str
) -> None:
    con.register("rejected_batch", rejected)
    con.execute(
        "INSERT INTO rejected_rows SELECT ?, ?, endpoint, row_key, reason, raw, account_id"
        " FROM rejected_batch",
        [sync_id, practice_id],
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
    """Mark the sync failed and republish the practice's state around its unchanged data."""
    try:
        rejected = _arrow(staging.con, "SELECT * FROM stg_rejected_rows")
        counts = sync_runs.SyncCounts(
            rows_extracted=sum(staging.counts.values()) or None, rows_rejected=len(rejected),
            requests=counts.requests, retries=counts.retries,
        )
    except duckdb.Error:
        rejected = None

    def record(con: duckdb.DuckDBPyConnection) -> None:
        if rejected is not None:
            _insert_rejected(con, rejected, sync_id, practice.id)
        sync_runs.finish(
            con, sync_id, status="failed", counts=counts, finished_at=datetime.now(UTC),
            error=message, error_class=error_class,
        )

    snapshot_dir = SnapshotStore(layout).create(practice.id)
    publish(layout, working_db, practice.id, snapshot_dir, record=record)
    log.error("practice %s: sync %s failed: %s", practice.id, sync_id, message)
