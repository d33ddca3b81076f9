"""Extracting a source that reports account balances (FHIR EHRs, aging files, and any
source added the same way): its pages into `stg_source_balances`, and what it learnt
(`ReadFacts`) for `sync_runs`.

A file drop whose newest file is the one the practice's last successful sync read has
nothing new: the sync is recorded `success` in mode `unchanged`, keeping the freshness of
the sync that read the file (freshness then says how old the data is), and nothing is
published from it.
"""

from __future__ import annotations

import duckdb

from balances_pipeline.pipeline.outcomes import ExtractResult
from balances_pipeline.pipeline.read_plan import ReadPlan
from balances_pipeline.pipeline.streaming import (
    ProgressCallback,
    check_rejected_fraction,
    stream_reading_again_once,
)
from balances_pipeline.sources.clients import AccountBalanceClient, ReadFacts
from balances_pipeline.storage import sync_runs
from balances_pipeline.storage.staging import StagingDatabase


def extract_account_balances(
    client: AccountBalanceClient,
    staging: StagingDatabase,
    *,
    practice_id: str,
    plan: ReadPlan,
    max_rejected_fraction: float,
    progress: ProgressCallback | None = None,
) -> ExtractResult:
    """Every account (a full read) or those changed since the cursor, into staging."""
    changed_since = None if plan.full else next(iter(plan.changed_since.values()), None)
    streamed = stream_reading_again_once(
        staging, lambda: client.account_balance_pages(changed_since), practice_id, progress
    )
    facts = client.facts()
    staging.set_meta("server_clock", client.server_clock)
    staging.set_meta("read_path", facts.read_path)
    check_rejected_fraction(practice_id, streamed, max_rejected_fraction)
    return ExtractResult(
        rows_extracted=streamed.total_rows, rows_rejected=streamed.total_rejected,
        requests=client.stats.requests, retries=client.stats.retries, pages=streamed.pages,
        reread_after_duplicates=streamed.reread, facts=facts,
    )


def record_facts_or_unchanged(
    con: duckdb.DuckDBPyConnection, practice_id: str, sync_id: str, facts: ReadFacts | None,
    counts: sync_runs.SyncCounts,
) -> bool:
    """Record what the read learnt on the sync's row; True when it read the very file the
    last successful sync read (then the sync is finished here, as unchanged)."""
    if facts is None:
        return False
    sync_runs.record_source_facts(con, sync_id, as_of_date=facts.as_of_date,
                                  source_file=facts.source_file,
                                  source_checksum=facts.source_checksum)
    if facts.source_checksum is None:
        return False
    previous = sync_runs.latest_source_file(con, practice_id)
    if previous is None or previous.source_checksum != facts.source_checksum:
        return False
    sync_runs.finish_unchanged(con, sync_id, counts, previous)
    return True
