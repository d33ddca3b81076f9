"""Ledger mode's sync policy: a full refresh or an incremental read, and the next cursors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb

from balances_pipeline.config import Practice
from balances_pipeline.sources.opendental.rows import LEDGER_RELATIONS

LEDGER_ENDPOINTS = tuple(LEDGER_RELATIONS)


@dataclass(frozen=True)
class LedgerPlan:
    """What an extract reads: everything (full) or what changed since each cursor."""

    full: bool
    changed_since: dict[str, datetime] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "full" if self.full else "incremental"


def plan_extract(
    practice: Practice, as_of: date, last_full_as_of: date | None,
    cursors: dict[str, datetime],
) -> LedgerPlan:
    """Full on a practice's first sync of each local day (deletions show only then), for
    daily practices always; otherwise incremental from each endpoint's cursor minus the
    overlap window."""
    if (
        practice.sync.frequency == "daily"
        or last_full_as_of is None
        or last_full_as_of < as_of
        or set(cursors) != set(LEDGER_ENDPOINTS)
    ):
        return LedgerPlan(full=True)
    overlap = timedelta(minutes=practice.source.incremental_overlap_minutes)
    return LedgerPlan(full=False, changed_since={e: c - overlap for e, c in cursors.items()})


def next_cursors(
    staging: duckdb.DuckDBPyConnection, previous: dict[str, datetime],
    server_clock: datetime | None,
) -> dict[str, datetime]:
    """Per endpoint: the server's clock when this read began (`SELECT NOW()` through
    ShortQuery, `serverDateTime`, or the `Date` header in the practice's time zone); the
    next read starts `incremental_overlap_minutes` before it (`plan_extract`).

    Never the newest row stamp: after a PMS conversion most rows share one old stamp, and
    a row stamped in the future would hide later changes. Without a clock (a source that
    gave none) the previous cursors stay, so the next read re-reads more, never less.
    `staging` is unused (kept for the caller's signature).
    """
    del staging
    if server_clock is None:
        return dict(previous)
    return dict.fromkeys(LEDGER_ENDPOINTS, server_clock)
