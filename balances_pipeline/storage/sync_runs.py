"""`sync_runs`: one row per sync attempt, in the working database.

A running sync is in one of three phases: `extracting` (reading the source into its
staging file), `extracted` (waiting to be published), `publishing`. A row left `running`
by a dead process is failed by the next sync of the practice (`abandon_unfinished`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import duckdb

ABANDONED = "abandoned: the sync stopped before finishing (killed or crashed)"
SUPERSEDED = "superseded: a newer sync started before this extract was published"


@dataclass(frozen=True)
class SyncCounts:
    accounts: int | None = None
    rows_extracted: int | None = None
    rows_rejected: int | None = None
    requests: int | None = None
    retries: int | None = None
    pages: int | None = None


@dataclass(frozen=True)
class WaitingExtract:
    sync_id: str
    as_of_date: date
    started_at: datetime
    staging_file: str
    counts: SyncCounts
    mode: str = "full"


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
        " source_mode, started_at, status, phase) VALUES (?, ?, ?, ?, ?, ?, ?, 'running',"
        " 'extracting')",
        [sync_id, practice_id, dagster_run_id, as_of_date, mode, source_mode, started_at],
    )


def abandon_unfinished(
    con: duckdb.DuckDBPyConnection, practice_id: str, phases: tuple[str, ...]
) -> list[str]:
    """Fail the practice's `running` rows in these phases, returning their staging files.

    Call only while holding the lock that every live sync in those phases holds (the
    extract lock for `extracting`/`extracted`, the publish lock for `publishing`).
    """
    # SELECT, then UPDATE (the same transaction): DuckLake has no UPDATE ... RETURNING.
    unfinished = "WHERE practice_id = ? AND status = 'running' AND list_contains(?, phase)"
    rows = con.execute(
        f"SELECT staging_file FROM sync_runs {unfinished}",  # noqa: S608
        [practice_id, list(phases)],
    ).fetchall()
    if rows:
        con.execute(
            "UPDATE sync_runs SET status = 'failed', finished_at = current_timestamp,"  # noqa: S608
            " error = CASE WHEN phase = 'extracted' THEN ? ELSE ? END,"
            " error_class = CASE WHEN phase = 'extracted' THEN 'Superseded' ELSE 'Abandoned'"
            f" END {unfinished}",
            [SUPERSEDED, ABANDONED, practice_id, list(phases)],
        )
    return [row[0] for row in rows if row[0]]


def last_success_id(con: duckdb.DuckDBPyConnection, practice_id: str) -> str | None:
    rows = con.execute(
        "SELECT sync_id FROM sync_runs WHERE practice_id = ? AND status = 'success'"
        " ORDER BY started_at DESC LIMIT 1",
        [practice_id],
    ).fetchall()
    return rows[0][0] if rows else None


def live_staging_files(con: duckdb.DuckDBPyConnection, practice_id: str) -> set[str]:
    rows = con.execute(
        "SELECT staging_file FROM sync_runs WHERE practice_id = ? AND status = 'running'"
        " AND staging_file IS NOT NULL",
        [practice_id],
    ).fetchall()
    return {row[0] for row in rows}


def mark_extracted(
    con: duckdb.DuckDBPyConnection, sync_id: str, counts: SyncCounts, staging_file: str
) -> None:
    con.execute(
        "UPDATE sync_runs SET phase = 'extracted', rows_extracted = ?, rows_rejected = ?,"
        " requests = ?, retries = ?, pages = ?, staging_file = ? WHERE sync_id = ?",
        [counts.rows_extracted, counts.rows_rejected, counts.requests, counts.retries,
         counts.pages, staging_file, sync_id],
    )


def claim_waiting_extract(
    con: duckdb.DuckDBPyConnection, practice_id: str
) -> WaitingExtract | None:
    """The practice's newest extract waiting to be published, now marked `publishing`."""
    rows = con.execute(
        "SELECT sync_id, as_of_date, started_at, staging_file, rows_extracted, rows_rejected,"
        " requests, retries, pages, mode FROM sync_runs"
        " WHERE practice_id = ? AND status = 'running' AND phase = 'extracted'"
        " ORDER BY started_at DESC LIMIT 1",
        [practice_id],
    ).fetchall()
    if not rows:
        return None
    row = rows[0]
    con.execute("UPDATE sync_runs SET phase = 'publishing' WHERE sync_id = ?", [row[0]])
    return WaitingExtract(
        sync_id=row[0], as_of_date=row[1], started_at=row[2], staging_file=row[3],
        counts=SyncCounts(rows_extracted=row[4], rows_rejected=row[5], requests=row[6],
                          retries=row[7], pages=row[8]),
        mode=row[9],
    )


def finish(
    con: duckdb.DuckDBPyConnection,
    sync_id: str,
    *,
    status: str,
    counts: SyncCounts,
    finished_at: datetime,
    error: str | None = None,
    error_class: str | None = None,
    fresh_until: datetime | None = None,
    snapshot_id: str | None = None,
) -> None:
    """Record the end of a sync; counts left as None keep what the row already has."""
    con.execute(
        "UPDATE sync_runs SET status = ?, phase = NULL, finished_at = ?,"
        " accounts = coalesce(?, accounts), rows_extracted = coalesce(?, rows_extracted),"
        " rows_rejected = coalesce(?, rows_rejected), requests = coalesce(?, requests),"
        " retries = coalesce(?, retries), pages = coalesce(?, pages), error = ?,"
        " error_class = ?, fresh_until = ?, snapshot_id = ? WHERE sync_id = ?"
        # a published success is never turned into a failure afterwards
        " AND status <> 'success'",
        [
            status, finished_at, counts.accounts, counts.rows_extracted, counts.rows_rejected,
            counts.requests, counts.retries, counts.pages, error, error_class, fresh_until,
            snapshot_id, sync_id,
        ],
    )


def record_source_facts(
    con: duckdb.DuckDBPyConnection, sync_id: str, *, as_of_date: date | None,
    source_file: str | None, source_checksum: str | None,
) -> None:
    """What the read learnt: the source's own as-of date (it replaces the sync's), and the
    file a file drop read."""
    con.execute(
        "UPDATE sync_runs SET as_of_date = coalesce(?, as_of_date), source_file = ?,"
        " source_checksum = ? WHERE sync_id = ?",
        [as_of_date, source_file, source_checksum, sync_id],
    )


@dataclass(frozen=True)
class SourceFileSync:
    """The newest successful sync of a practice that read a file."""

    sync_id: str
    source_checksum: str
    accounts: int | None
    fresh_until: datetime | None


def latest_source_file(con: duckdb.DuckDBPyConnection, practice_id: str) -> SourceFileSync | None:
    rows = con.execute(
        "SELECT sync_id, source_checksum, accounts, fresh_until FROM sync_runs"
        " WHERE practice_id = ? AND status = 'success' AND source_checksum IS NOT NULL"
        " ORDER BY started_at DESC LIMIT 1",
        [practice_id],
    ).fetchall()
    return SourceFileSync(*rows[0]) if rows else None


def finish_unchanged(
    con: duckdb.DuckDBPyConnection, sync_id: str, counts: SyncCounts, previous: SourceFileSync
) -> None:
    """A file drop that found the file already read: a success in mode `unchanged` with
    the freshness of the sync that read it (the data is as old as that file)."""
    con.execute(
        "UPDATE sync_runs SET status = 'success', phase = NULL, mode = 'unchanged',"
        " finished_at = current_timestamp, accounts = ?, rows_extracted = ?,"
        " rows_rejected = ?, requests = ?, retries = ?, pages = ?, fresh_until = ?"
        " WHERE sync_id = ?",
        [previous.accounts, counts.rows_extracted, counts.rows_rejected, counts.requests,
         counts.retries, counts.pages, previous.fresh_until, sync_id],
    )


@dataclass(frozen=True)
class PublishedSync:
    sync_id: str
    as_of_date: date
    started_at: datetime
    counts: SyncCounts
    fresh_until: datetime | None


def latest_published(con: duckdb.DuckDBPyConnection, practice_id: str) -> PublishedSync | None:
    """The practice's newest successful sync (the one its published balances come from)."""
    rows = con.execute(
        "SELECT sync_id, as_of_date, started_at, accounts, rows_extracted, rows_rejected,"
        " requests, retries, pages, fresh_until FROM sync_runs"
        " WHERE practice_id = ? AND status = 'success' AND snapshot_id IS NOT NULL"
        " ORDER BY started_at DESC LIMIT 1",
        [practice_id],
    ).fetchall()
    if not rows:
        return None
    row = rows[0]
    return PublishedSync(
        sync_id=row[0], as_of_date=row[1], started_at=row[2],
        counts=SyncCounts(accounts=row[3], rows_extracted=row[4], rows_rejected=row[5],
                          requests=row[6], retries=row[7], pages=row[8]),
        fresh_until=row[9],
    )


# -- accepted drops: a person's confirmation that a practice's next sync may drop accounts --


@dataclass(frozen=True)
class DropAcceptance:
    """A row of `drop_acceptances` (pipeline/collapse_guard.py)."""

    acceptance_id: str
    practice_id: str
    reason: str
    actor: str
    accepted_at: datetime


def record_drop_acceptance(con: duckdb.DuckDBPyConnection, acceptance: DropAcceptance) -> None:
    con.execute(
        "INSERT INTO drop_acceptances (acceptance_id, practice_id, reason, actor, accepted_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [acceptance.acceptance_id, acceptance.practice_id, acceptance.reason,
         acceptance.actor, acceptance.accepted_at],
    )


def use_drop_acceptances(
    con: duckdb.DuckDBPyConnection, practice_id: str, *, sync_id: str, used_at: datetime,
    accounts: int, previous_accounts: int | None,
) -> list[DropAcceptance]:
    """Mark the practice's waiting acceptances used by `sync_id` (each is used once),
    returning them, oldest first."""
    rows = con.execute(
        "SELECT acceptance_id, practice_id, reason, actor, accepted_at FROM drop_acceptances"
        " WHERE practice_id = ? AND used_at IS NULL",
        [practice_id],
    ).fetchall()
    if rows:
        con.execute(
            "UPDATE drop_acceptances SET used_by_sync_id = ?, used_at = ?, accounts = ?,"
            " previous_accounts = ? WHERE practice_id = ? AND used_at IS NULL",
            [sync_id, used_at, accounts, previous_accounts, practice_id],
        )
    return sorted((DropAcceptance(*row) for row in rows), key=lambda a: a.accepted_at)
