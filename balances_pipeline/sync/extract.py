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


PageSources = Callable[[], list[Iterator[Page[Any]]]]


def _stream(
    staging: StagingDatabase, sources: list[Iterator[Page[Any]]],
    progress: ProgressCallback | None, practice_id: str,
) -> tuple[int, int, int]:
    rows = rejected = pages = 0
    for source in sources:
        for page in source:
            staging.append(page.rows)
            staging.append(page.rejected)
            rows += page.row_count
            rejected += len(page.rejected)
            pages += 1
            if progress:
                progress(pages, rows)
    duplicate = staging.first_duplicate_key()
    if duplicate:
        raise DuplicateRowsError(
            f"practice {practice_id}: key {duplicate[1]} staged twice in {duplicate[0]};"
            " rows shifted between pages"
        )
    return rows, rejected, pages


def _stream_reading_again_once(
    staging: StagingDatabase, sources: PageSources, practice_id: str,
    progress: ProgressCallback | None,
) -> tuple[int, int, int, bool]:
    """Stream every source into staging; if rows shifted between offset pages (a key came
    back twice), start again once from scratch, then fail: nothing is double counted."""
    try:
        return (*_stream(staging, sources(), progress, practice_id), False)
    except DuplicateRowsError:
        log.warning("practice %s: duplicate rows across pages, reading again", practice_id)
        staging.truncate()
        return (*_stream(staging, sources(), progress, practice_id), True)


def _check_rejected_fraction(
    practice_id: str, rows: int, rejected: int, max_rejected_fraction: float
) -> None:
    if rows and rejected / rows > max_rejected_fraction:
        raise TooManyRejectedRowsError(
            f"practice {practice_id}: {rejected} of {rows} rows rejected "
            f"({rejected / rows:.1%}), more than max_rejected_fraction {max_rejected_fraction:.1%}"
        )


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
    """Read the whole aging report into staging.

    With `include_patients`, also read `/patients` (the guarantors' PatStatus, which
    collection rules need to exclude deceased guarantors).
    """

    def sources() -> list[Iterator[Page[Any]]]:
        found = [client.aging_report_pages(as_of)]
        if include_patients:
            found.append(client.patient_pages())
        return found

    rows, rejected, pages, reread = _stream_reading_again_once(
        staging, sources, practice_id, progress
    )
    _check_rejected_fraction(practice_id, rows, rejected, max_rejected_fraction)
    return ExtractResult(
        rows_extracted=rows, rows_rejected=rejected, requests=client.stats.requests,
        retries=client.stats.retries, pages=pages, reread_after_duplicates=reread,
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

    def sources() -> list[Iterator[Page[Any]]]:
        return [client.ledger_pages(endpoint, plan.changed_since.get(endpoint))
                for endpoint in LEDGER_ENDPOINTS]

    rows, rejected, pages, reread = _stream_reading_again_once(
        staging, sources, practice_id, progress
    )
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
    _check_rejected_fraction(practice_id, rows, rejected, max_rejected_fraction)
    return ExtractResult(
        rows_extracted=rows, rows_rejected=rejected, requests=client.stats.requests,
        retries=client.stats.retries, pages=pages, reread_after_duplicates=reread,
    )
