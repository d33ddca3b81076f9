"""The as-of date: the practice-local date when the sync's extract step starts."""

from __future__ import annotations

import os
from datetime import date, datetime

from balances_pipeline.config import Practice

AS_OF_ENV = "BALANCES_AS_OF"


class AsOfError(ValueError):
    pass


def resolve_as_of(practice: Practice, started_at: datetime) -> date:
    """`BALANCES_AS_OF` (yyyy-mm-dd) when set, else the practice-local date of `started_at`."""
    configured = os.environ.get(AS_OF_ENV)
    if configured:
        try:
            return date.fromisoformat(configured)
        except ValueError:
            raise AsOfError(f"{AS_OF_ENV}: expected yyyy-mm-dd, got {configured!r}") from None
    return started_at.astimezone(practice.zone).date()
