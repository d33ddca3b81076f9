"""The as-of date: the practice-local date when the sync's extract step starts."""

from __future__ import annotations

from datetime import date, datetime

from balances_pipeline.config import Practice


def resolve_as_of(practice: Practice, started_at: datetime, fixed: date | None = None) -> date:
    """`fixed` when given (`BALANCES_AS_OF`: tests, backfills of past dates), else the
    practice-local date of `started_at`."""
    return fixed if fixed is not None else started_at.astimezone(practice.zone).date()
