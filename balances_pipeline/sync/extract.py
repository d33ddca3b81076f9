"""Extract: stream the source's pages into the sync's staging database, counting rejects."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from balances_pipeline.sources.errors import DuplicateRowsError, SourceError
from balances_pipeline.sources.opendental import OpenDentalClient
from balances_pipeline.sources.rows import Page
from balances_pipeline.warehouse.ledger_store import LEDGER_ENDPOINTS, LedgerPlan
from balances_pipeline.warehouse.staging import StagingDatabase

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class TooManyRejectedRowsError(SourceError):
    """More than `max_rejected_fraction` of the rows failed validation."""


@dataclass(frozen=True)
class ExtractResult:
    rows_extracted: int
    rows_rejected: int
    requests: int
    retries: int
    pages: int
    reread_after_duplicates: bool


def _stream_aging_report(
    client: OpenDentalClient, staging: StagingDatabase, as_of: date,
    progress: ProgressCallback | None, include_patients: bool,
) -> tuple[int, int, int]:
    rows = rejected = pages = 0
    sources = [client.aging_report_pages(as_of)]
    if include_patients:
        sources.append(client.patient_pages())
    for source in sources:
        for page in source:
            staging.append(page.rows)
            staging.append(page.rejected)
            rows += page.row_count
            rejected += len(page.rejected)
            pages += 1
            if progress:
                progress(pages, rows)
    return rows, rejected, pages


def extract_aging_report(
    client: OpenDentalClient,
    staging: StagingDatabase,
    *,
    practice_id: str,
    as_of: date,
    max_rejected_fraction: float,
    progress: ProgressCallback | None = None,
    include_patients: bool = False,
) -> ExtractResult:
    """Read the whole aging report into staging; re-read once if rows shifted between pages.

    With `include_patients`, also read `/patients` (the guarantors' PatStatus, which
    collection rules need to exclude deceased guarantors).
    """
    reread = False
    try:
        rows, rejected, pages = _stream_aging_report(
            client, staging, as_of, progress, include_patients
        )
    except DuplicateRowsError:
        log.warning("practice %s: duplicate rows across pages, reading again", practice_id)
        staging.truncate()
        reread = True
        rows, rejected, pages = _stream_aging_report(
            client, staging, as_of, progress, include_patients
        )
    if rows and rejected / rows > max_rejected_fraction:
        raise TooManyRejectedRowsError(
            f"practice {practice_id}: {rejected} of {rows} rows rejected "
            f"({rejected / rows:.1%}), more than max_rejected_fraction {max_rejected_fraction:.1%}"
        )
    return ExtractResult(
        rows_extracted=rows,
        rows_rejected=rejected,
        requests=client.stats.requests,
        retries=client.stats.retries,
        pages=pages,
        reread_after_duplicates=reread,
    )


def extract_ledger(
    client: OpenDentalClient,
    staging: StagingDatabase,
    *,
    practice_id: str,
    as_of: date,
    plan: LedgerPlan,
    max_rejected_fraction: float,
    progress: ProgressCallback | None = None,
) -> ExtractResult:
    """Read the raw ledger (all of it, or what changed since each cursor) into staging.

    A full refresh also reads the source's own aging report, when it serves one, for the
    ledger-vs-report reconciliation (an incremental sync does not: its requests stay in
    proportion to what changed).
    """
    rows = rejected = pages = 0
    reread = False
    sources: list[tuple[str, Iterator[Page[Any]]]] = [
        (endpoint, client.ledger_pages(endpoint, plan.changed_since.get(endpoint)))
        for endpoint in LEDGER_ENDPOINTS
    ]
    for attempt in range(2):
        try:
            rows = rejected = pages = 0
            for _, source in sources:
                for page in source:
                    staging.append(page.rows)
                    staging.append(page.rejected)
                    rows += page.row_count
                    rejected += len(page.rejected)
                    pages += 1
                    if progress:
                        progress(pages, rows)
            break
        except DuplicateRowsError:
            if attempt:
                raise
            log.warning("practice %s: duplicate rows across pages, reading again", practice_id)
            staging.truncate()
            reread = True
            sources = [
                (endpoint, client.ledger_pages(endpoint, plan.changed_since.get(endpoint)))
                for endpoint in LEDGER_ENDPOINTS
            ]
    if plan.full:
        try:
            for page in client.aging_report_pages(as_of):
                staging.append(page.rows)
                pages += 1
        except SourceError as error:
            log.info("practice %s: no aging report to reconcile with (%s)", practice_id,
                     type(error).__name__)
            staging.con.execute("DELETE FROM stg_aging_report")
    staging.set_meta("server_clock", client.server_clock)
    if rows and rejected / rows > max_rejected_fraction:
        raise TooManyRejectedRowsError(
            f"practice {practice_id}: {rejected} of {rows} rows rejected "
            f"({rejected / rows:.1%}), more than max_rejected_fraction {max_rejected_fraction:.1%}"
        )
    return ExtractResult(
        rows_extracted=rows, rows_rejected=rejected, requests=client.stats.requests,
        retries=client.stats.retries, pages=pages, reread_after_duplicates=reread,
    )
