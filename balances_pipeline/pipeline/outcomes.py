"""What each step of a sync returns: plain values, for metadata, checks and callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from balances_pipeline.sources.clients import ReadFacts
from balances_pipeline.storage import sync_runs


@dataclass(frozen=True)
class ExtractResult:
    rows_extracted: int
    rows_rejected: int
    requests: int
    retries: int
    pages: int
    reread_after_duplicates: bool
    facts: ReadFacts | None = None  # sources of account balances: what the read learnt


@dataclass(frozen=True)
class ExtractOutcome:
    practice_id: str
    sync_id: str
    as_of_date: date
    started_at: datetime
    extract: ExtractResult
    duration_seconds: float
    # A file drop that found the file its last successful sync read: finished, nothing new
    unchanged: bool = False


@dataclass
class SyncOutcome:
    practice_id: str
    sync_id: str
    as_of_date: date
    started_at: datetime
    finished_at: datetime
    snapshot_id: str
    counts: sync_runs.SyncCounts
    accounts: int
    fresh_until: datetime
    summary: dict[str, Any]
    discrepancies: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    mode: str = "full"
    future_entries: int | None = None
