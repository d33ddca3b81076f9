"""Streaming a source's pages into the staging database, the same for every source: rows
and rejected rows appended as they come, keys staged twice detected (the read starts again
once), and `max_rejected_fraction` checked per endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from balances_pipeline.sources.errors import DuplicateRowsError, SourceError
from balances_pipeline.sources.rows import Page
from balances_pipeline.storage.staging import StagingDatabase

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class TooManyRejectedRowsError(SourceError):
    """More than `max_rejected_fraction` of one endpoint's rows failed validation."""


PageSources = Callable[[], list[Iterator[Page[Any]]]]


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


def _stream(
    staging: StagingDatabase, sources: list[Iterator[Page[Any]]],
    progress: ProgressCallback | None, practice_id: str,
) -> Streamed:
    streamed = Streamed()
    for source in sources:
        for page in source:
            staging.append(page.rows)
            staging.append(page.rejected)
            streamed.rows[page.endpoint] = streamed.rows.get(page.endpoint, 0) + page.row_count
            streamed.rejected[page.endpoint] = (
                streamed.rejected.get(page.endpoint, 0) + len(page.rejected)
            )
            streamed.pages += 1
            if progress:
                progress(streamed.pages, streamed.total_rows)
    duplicate = staging.first_duplicate_key()
    if duplicate:
        raise DuplicateRowsError(
            f"practice {practice_id}: key {duplicate[1]} staged twice in {duplicate[0]};"
            " rows shifted between pages"
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
