"""Streaming a source's pages into the staging database, the same for every source: rows
and rejected rows appended as they come, keys staged twice detected (the read starts again
once), and `max_rejected_fraction` checked per endpoint.

Pages that come as JSON bodies (`JsonPage`) are validated set-based, `JSON_BATCH_PAGES`
at a time; the pages of a batch that are not plainly valid in every row are read row by
row (their rejects and reasons), so the result is the same either way."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from balances_pipeline.sources.errors import DuplicateRowsError, SourceError
from balances_pipeline.sources.rows import JsonPage, JsonPageSql, Page
from balances_pipeline.storage.staging import StagingDatabase

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class TooManyRejectedRowsError(SourceError):
    """More than `max_rejected_fraction` of one endpoint's rows failed validation."""


PageSources = Callable[[], list[Iterator[Page[Any] | JsonPage]]]
# Pages validated in one DuckDB statement: 50 pages of 100 rows cost about a fifth of
# one statement a page, and hold about a megabyte of bodies.
JSON_BATCH_PAGES = 50


@dataclass
class Streamed:
    """What streaming the sources into staging read: rows (accepted and rejected) and
    rejected rows per endpoint, in reading order, and the pages."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    reread: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


class _JsonBatches:
    """JSON pages waiting for one set-based statement; `flush` gives the pages that were
    read row by row."""

    def __init__(self, staging: StagingDatabase) -> None:
        self.staging = staging
        self.pending: list[JsonPage] = []

    def add(self, page: JsonPage) -> list[Page[Any]]:
        read = self.flush() if self.pending and self.pending[0].sql is not page.sql else []
        self.pending.append(page)
        if len(self.pending) >= JSON_BATCH_PAGES:
            read += self.flush()
        return read

    def flush(self) -> list[Page[Any]]:
        pages, self.pending = self.pending, []
        if not pages:
            return []
        sql: JsonPageSql = pages[0].sql
        doubtful = self.staging.append_json_bodies(sql, [page.body for page in pages])
        return [pages[index].exactly() for index in sorted(doubtful)]


@dataclass(frozen=True, slots=True)
class Appended:
    """What appending one page added: its rows (accepted and rejected) as counted when
    it came, and rejects, which a JSON page's batch tells later (`pages` 0 then)."""

    endpoint: str
    rows: int
    rejected: int
    pages: int = 1


def append_pages(
    staging: StagingDatabase, pages: Iterator[Page[Any] | JsonPage], *, rejects: bool = True
) -> Iterator[Appended]:
    """Append each page's rows, and with `rejects` its rejected rows, to staging."""
    batches = _JsonBatches(staging)

    def append(page: Page[Any]) -> None:
        staging.append(page.rows)
        if rejects:
            staging.append(page.rejected)

    def read_row_by_row(read: list[Page[Any]]) -> Iterator[Appended]:
        for page in read:
            append(page)
            yield Appended(page.endpoint, 0, len(page.rejected), pages=0)

    for page in pages:
        if isinstance(page, JsonPage):
            yield Appended(page.endpoint, page.row_count, 0)
            yield from read_row_by_row(batches.add(page))
        else:
            append(page)
            yield Appended(page.endpoint, page.row_count, len(page.rejected))
    yield from read_row_by_row(batches.flush())


def _stream(
    staging: StagingDatabase, sources: list[Iterator[Page[Any] | JsonPage]],
    progress: ProgressCallback | None, practice_id: str,
) -> Streamed:
    streamed = Streamed()
    for source in sources:
        for appended in append_pages(staging, source):
            endpoint = appended.endpoint
            streamed.rows[endpoint] = streamed.rows.get(endpoint, 0) + appended.rows
            streamed.rejected[endpoint] = streamed.rejected.get(endpoint, 0) + appended.rejected
            streamed.pages += appended.pages
            if progress and appended.pages:
                progress(streamed.pages, streamed.total_rows)
    duplicate = staging.first_duplicate_key()
    if duplicate:
        raise DuplicateRowsError(
            f"practice {practice_id}: key {duplicate[1]} returned twice by the source"
            f" (staged twice in {duplicate[0]}); rows shifted between pages"
        )
    return streamed


def stream_reading_again_once(
    staging: StagingDatabase, sources: PageSources, practice_id: str,
    progress: ProgressCallback | None,
) -> Streamed:
    """Stream every source into staging; if rows shifted between offset pages (a key came
    back twice), start again once from scratch, then fail: nothing is double counted."""
    try:
        return _stream(staging, sources(), progress, practice_id)
    except DuplicateRowsError:
        log.warning("practice %s: duplicate rows across pages, reading again", practice_id)
        staging.truncate()
        streamed = _stream(staging, sources(), progress, practice_id)
        streamed.reread = True
        return streamed


def _percent(fraction: float) -> str:
    return f"{fraction:.1%}"


def check_rejected_fraction(
    practice_id: str, streamed: Streamed, max_rejected_fraction: float
) -> None:
    """`max_rejected_fraction` holds for each endpoint on its own: the rows of another
    endpoint (`/patients` beside the aging report) never dilute one endpoint's rejects."""
    for endpoint, rows in streamed.rows.items():
        rejected = streamed.rejected.get(endpoint, 0)
        if rows and rejected / rows > max_rejected_fraction:
            raise TooManyRejectedRowsError(
                f"practice {practice_id}: {rejected} of {rows} rows of {endpoint} rejected "
                f"({_percent(rejected / rows)}), more than max_rejected_fraction "
                f"{_percent(max_rejected_fraction)}; the rows rejected are in rejected_rows"
            )
