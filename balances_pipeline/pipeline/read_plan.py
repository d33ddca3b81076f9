"""The sync policy of sources with incremental reads (Open Dental's ledger mode, FHIR): a
full refresh or an incremental read, and the next cursors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from balances_pipeline.config import Practice


@dataclass(frozen=True)
class ReadPlan:
    """What an extract reads: everything (full) or what changed since each cursor."""

    full: bool
    changed_since: dict[str, datetime] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "full" if self.full else "incremental"


FULL_READ = ReadPlan(full=True)


def plan_extract(
    practice: Practice, as_of: date, last_full_as_of: date | None,
    cursors: dict[str, datetime],
) -> ReadPlan:
    """Full on a practice's first sync of each local day (deletions show only then), for
    daily practices and sources without incremental reads always; otherwise incremental
    from each endpoint's cursor minus the overlap window."""
    endpoints = practice.source.incremental_endpoints
    if (
        not endpoints
        or practice.sync.frequency == "daily"
        or last_full_as_of is None
        or last_full_as_of < as_of
        or set(cursors) != set(endpoints)
    ):
        return FULL_READ
    overlap = timedelta(minutes=practice.source.incremental_overlap_minutes)
    return ReadPlan(full=False, changed_since={e: c - overlap for e, c in cursors.items()})


def next_cursors(
    practice: Practice, previous: dict[str, datetime], server_clock: datetime | None,
) -> dict[str, datetime]:
    """Per endpoint: the source's clock when this read began (Open Dental: `SELECT NOW()`
    through ShortQuery, `serverDateTime`, or the `Date` header in server-local time; FHIR:
    the `Date` header, UTC); the next read starts `incremental_overlap_minutes` before it
    (`plan_extract`).

    Never the newest row stamp: after a PMS conversion most rows share one old stamp, and
    a row stamped in the future would hide later changes. Without a clock (a source that
    gave none) the previous cursors stay, so the next read re-reads more, never less.
    """
    if server_clock is None:
        return dict(previous)
    return dict.fromkeys(practice.source.incremental_endpoints, server_clock)
