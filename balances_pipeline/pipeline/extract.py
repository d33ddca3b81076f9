"""Extract: read the practice's source into a staging file that waits to be published.

    lock the practice's extraction → fail its unfinished syncs → `sync_runs` 'extracting'
    → stream the source's pages into a per-sync staging database (no shared lock held)
    → 'extracted'

A failure anywhere records the sync as failed (`failures.py`); the published data stays.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.as_of import resolve_as_of
from balances_pipeline.pipeline.extract_accounts import (
    extract_account_balances,
    record_facts_or_unchanged,
)
from balances_pipeline.pipeline.failures import fail_sync
from balances_pipeline.pipeline.outcomes import ExtractOutcome, ExtractResult
from balances_pipeline.pipeline.read_plan import FULL_READ, ReadPlan, plan_extract
from balances_pipeline.pipeline.streaming import (
    ProgressCallback,
    append_pages,
    check_rejected_fraction,
    stream_reading_again_once,
)
from balances_pipeline.sources.clients import SourceClient
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.rows import Page
from balances_pipeline.storage import ledger_store, sync_runs
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.ledger_store import LedgerStore
from balances_pipeline.storage.publish import extract_lock
from balances_pipeline.storage.staging import StagingDatabase, remove_stale_staging
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)

ClientFactory = Callable[[Practice], SourceClient]
PROGRESS_EVERY_PAGES = 10


@dataclass(frozen=True)
class _SyncStart:
    sync_id: str
    as_of: date
    started_at: datetime
    clock: float
    plan: ReadPlan | None = None


def new_sync_id(practice_id: str, started_at: datetime) -> str:
    return f"{practice_id}-{started_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def is_ledger(practice: Practice) -> bool:
    return practice.source.produces == "ledger"


def _begin(
    practice: Practice, layout: Layout, working_db: WorkingDatabase,
    dagster_run_id: str | None, fixed_as_of: date | None,
) -> _SyncStart:
    """Clean up after dead syncs of the practice, then record this one as running.

    Called with the practice's extract lock held: no other extraction of it is alive.
    """
    started_at = datetime.now(UTC)
    sync_id = new_sync_id(practice.id, started_at)
    as_of = resolve_as_of(practice, started_at, fixed_as_of)
    plan = None
    with working_db.transaction() as con:
        unfinished = sync_runs.abandon_unfinished(con, practice.id, ("extracting", "extracted"))
        if practice.source.produces != "aging_report":
            last_full, cursors = ledger_store.read_refresh_state(con, practice.id)
            if layout.lake is not None and is_ledger(practice) and not LedgerStore(
                layout, practice.id
            ).holds(sync_runs.last_success_id(con, practice.id)):
                last_full = None  # this worker's ledger file missed syncs run elsewhere
            plan = plan_extract(practice, as_of, last_full, cursors)
        sync_runs.start(
            con, sync_id=sync_id, practice_id=practice.id, dagster_run_id=dagster_run_id,
            as_of_date=as_of, mode=plan.mode if plan else "full",
            source_mode=practice.source.source_mode, started_at=started_at,
        )
        live = sync_runs.live_staging_files(con, practice.id)
    remove_stale_staging(layout.staging_dir(practice.id), keep=live)
    if unfinished:
        log.warning("practice %s: failed %d unfinished sync(s)", practice.id, len(unfinished))
    return _SyncStart(sync_id, as_of, started_at, time.monotonic(), plan)


def _reporting(practice_id: str, progress: ProgressCallback | None) -> ProgressCallback:
    """Every PROGRESS_EVERY_PAGES pages: a log line, and the caller's `progress`."""

    def report(pages: int, rows: int) -> None:
        if pages % PROGRESS_EVERY_PAGES:
            return
        log.info("practice %s: %d rows in %d pages so far", practice_id, rows, pages)
        if progress:
            progress(pages, rows)

    return report


def _read_source(
    client: SourceClient, staging: StagingDatabase, practice: Practice, start: _SyncStart,
    progress: ProgressCallback,
) -> ExtractResult:
    if practice.source.produces == "account_balances":
        return extract_account_balances(
            client, staging, practice_id=practice.id, plan=start.plan or FULL_READ,  # type: ignore[arg-type]
            max_rejected_fraction=practice.max_rejected_fraction, progress=progress,
        )
    if start.plan is not None:
        return extract_ledger(
            client, staging, practice_id=practice.id, as_of=start.as_of, plan=start.plan,
            max_rejected_fraction=practice.max_rejected_fraction, progress=progress,
        )
    return extract_aging_report(
        client, staging, practice_id=practice.id, as_of=start.as_of,
        max_rejected_fraction=practice.max_rejected_fraction, progress=progress,
        include_patients=practice.collection_rules is not None,
    )


def extract_practice(
    practice: Practice,
    layout: Layout,
    open_client: ClientFactory,
    *,
    as_of: date | None = None,
    dagster_run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> ExtractOutcome:
    """Read the practice's source into a staging file that waits for `publish_sync`.

    `as_of` fixes the as-of date (`BALANCES_AS_OF`); by default it is the practice-local
    date now. Raises `SyncFailed` (recorded in `sync_runs`) on any failure.
    """
    working_db = WorkingDatabase(layout)
    ensure_analyst_warehouse(layout)
    with extract_lock(layout, practice.id):
        start = _begin(practice, layout, working_db, dagster_run_id, as_of)
        staging = StagingDatabase(layout.duckdb, layout.staging_dir(practice.id), start.sync_id)
        client: SourceClient | None = None
        try:
            client = open_client(practice)
            with client:
                extract = _read_source(
                    client, staging, practice, start, _reporting(practice.id, progress)
                )
            staging.close()
            with working_db.transaction() as con:
                unchanged = record_facts_or_unchanged(
                    con, practice.id, start.sync_id, extract.facts, _counts(extract))
                if not unchanged:
                    sync_runs.mark_extracted(con, start.sync_id, _counts(extract),
                                             str(staging.path))
            if unchanged:
                staging.remove()
        except BaseException as error:
            counts = sync_runs.SyncCounts(
                requests=client.stats.requests, retries=client.stats.retries
            ) if client is not None else sync_runs.SyncCounts()
            failure = fail_sync(layout, working_db, practice, start.sync_id, staging, counts,
                                error)
            if isinstance(error, Exception):
                raise failure from None
            raise
    log.info(
        "practice %s: extracted %d rows (%d rejected) in %d requests, %d retries%s",
        practice.id, extract.rows_extracted, extract.rows_rejected, extract.requests,
        extract.retries, "; the file was read before: unchanged" if unchanged else "",
    )
    facts = extract.facts
    return ExtractOutcome(
        practice_id=practice.id, sync_id=start.sync_id,
        as_of_date=facts.as_of_date if facts and facts.as_of_date else start.as_of,
        started_at=start.started_at, extract=extract,
        duration_seconds=time.monotonic() - start.clock, unchanged=unchanged,
    )


def _counts(extract: ExtractResult) -> sync_runs.SyncCounts:
    return sync_runs.SyncCounts(
        rows_extracted=extract.rows_extracted, rows_rejected=extract.rows_rejected,
        requests=extract.requests, retries=extract.retries, pages=extract.pages,
    )


def extract_aging_report(
    client: SourceClient,
    staging: StagingDatabase,
    *,
    practice_id: str,
    as_of: date,
    max_rejected_fraction: float,
    progress: ProgressCallback | None = None,
    include_patients: bool = False,
) -> ExtractResult:
    """Read the whole aging report into staging.

    With `include_patients`, also read `/patients` (the guarantors' PatStatus, which
    collection rules need to exclude deceased guarantors).
    """

    def sources() -> list[Iterator[Page[Any]]]:
        found = [client.aging_report_pages(as_of)]
        if include_patients:
            found.append(client.patient_pages())
        return found

    streamed = stream_reading_again_once(staging, sources, practice_id, progress)
    check_rejected_fraction(practice_id, streamed, max_rejected_fraction)
    return ExtractResult(
        rows_extracted=streamed.total_rows, rows_rejected=streamed.total_rejected,
        requests=client.stats.requests, retries=client.stats.retries, pages=streamed.pages,
        reread_after_duplicates=streamed.reread,
    )


def extract_ledger(
    client: SourceClient,
    staging: StagingDatabase,
    *,
    practice_id: str,
    as_of: date,
    plan: ReadPlan,
    max_rejected_fraction: float,
    progress: ProgressCallback | None = None,
) -> ExtractResult:
    """Read the raw ledger (all of it, or what changed since each cursor) into staging.

    A full refresh also reads the source's own aging report, when it serves one, for the
    ledger-vs-report reconciliation (an incremental sync does not: its requests stay in
    proportion to what changed).
    """

    def sources() -> list[Iterator[Page[Any]]]:
        # ShortQuery with the Queries permission, else the REST fallback (the client asks
        # once); either way the server's clock when the read began is `server_clock`.
        return client.ledger_sources(plan.changed_since)

    streamed = stream_reading_again_once(staging, sources, practice_id, progress)
    pages = streamed.pages
    if plan.full:
        try:
            appended = append_pages(staging, client.aging_report_pages(as_of), rejects=False)
            pages += sum(page.pages for page in appended)
        except SourceError as error:
            log.info("practice %s: no aging report to reconcile with (%s)", practice_id,
                     type(error).__name__)
            staging.con.execute("DELETE FROM stg_aging_report")
    staging.set_meta("server_clock", client.server_clock)
    staging.set_meta("ledger_path", client.ledger_path)
    check_rejected_fraction(practice_id, streamed, max_rejected_fraction)
    return ExtractResult(
        rows_extracted=streamed.total_rows, rows_rejected=streamed.total_rejected,
        requests=client.stats.requests, retries=client.stats.retries, pages=pages,
        reread_after_duplicates=streamed.reread,
    )
