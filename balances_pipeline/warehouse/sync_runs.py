"""`sync_runs`: one row per sync attempt, in the working database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import duckdb

ABANDONED = "abandoned: the sync stopped before finishing (killed or crashed)"


@dataclass(frozen=True)
class SyncCounts:
    accounts: int | None = None
    rows_extracted: int | None = None
    rows_rejected: int | None = None
    requests: int | None = None
    retries: int | None = None


def start(
    con: duckdb.DuckDBPyConnection,
    *,
    sync_id: str,
    practice_id: str,
    dagster_run_id: str | None,
    as_of_date: date,
    mode: str,
    source_mode: str,
    started_at: datetime,
) -> None:
    con.execute(
        "INSERT INTO sync_runs (sync_id, practice_id, dagster_run_id, as_of_date, mode,"
        " source_mode, started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
        [sync_id, practice_id, dagster_run_id, as_of_date, mode, source_mode, started_at],
    )


def mark_abandoned(con: duckdb.DuckDBPyConnection, practice_id: str) -> list[str]:
    """Fail the practice's `running` rows: call only while holding its sync lock."""
    rows = con.execute(
        "UPDATE sync_runs SET status = 'failed', error = ?, finished_at = current_timestamp"
        " WHERE practice_id = ? AND status = 'running' RETURNING sync_id",
        [ABANDONED, practice_id],
    ).fetchall()
    return [row[0] for row in rows]


def finish(
    con: duckdb.DuckDBPyConnection,
    sync_id: str,
    *,
    status: str,
    counts: SyncCounts,
    finished_at: datetime,
    error: str | None = None,
    fresh_until: datetime | None = None,
    snapshot_id: str | None = None,
) -> None:
    con.execute(
        "UPDATE sync_runs SET status = ?, finished_at = ?, accounts = ?, rows_extracted = ?,"
        " rows_rejected = ?, requests = ?, retries = ?, error = ?, fresh_until = ?,"
        " snapshot_id = ? WHERE sync_id = ?",
        [
            status, finished_at, counts.accounts, counts.rows_extracted, counts.rows_rejected,
            counts.requests, counts.retries, error, fresh_until, snapshot_id, sync_id,
        ],
    )
