"""The override store: append-only `override_events` in the working database.

Rows are only ever inserted. Which override is active, and which are waiting for review,
is derived from the events (`sql/active_overrides.sql`, `sql/override_conflicts.sql`).
"""

from __future__ import annotations

import uuid
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa

from balances_pipeline.schema import OVERRIDE_EVENTS
from balances_pipeline.storage.sequences import next_sequence
from balances_pipeline.storage.sql_files import load_sql

SYNC_ACTOR = "sync"


@dataclass(frozen=True)
class OverrideEvent:
    event_id: str
    override_id: str
    practice_id: str
    account_id: str
    event: str
    patient_portion: Decimal | None
    insurance_portion: Decimal | None
    base_patient_portion: Decimal | None
    base_insurance_portion: Decimal | None
    reason: str | None
    actor: str | None
    created_at: datetime
    sync_id: str | None = None
    synced_patient_portion: Decimal | None = None
    synced_insurance_portion: Decimal | None = None


def new_event_id() -> str:
    return f"ove_{uuid.uuid4().hex}"


def new_override_id() -> str:
    return f"ovr_{uuid.uuid4().hex[:16]}"


def now() -> datetime:
    return datetime.now(UTC)


EVENT_COLUMNS = [field.name for field in fields(OverrideEvent)]
# `OverrideEvent` is the domain object staff and syncs build (with defaults), kept written
# out for readability: its fields must be `override_events`' columns, in order, but for the
# `sequence` the insert assigns.
if EVENT_COLUMNS + ["sequence"] != list(OVERRIDE_EVENTS.names):
    raise TypeError("OverrideEvent's fields differ from override_events in schema.py")


def append_events(con: duckdb.DuckDBPyConnection, events: list[OverrideEvent]) -> None:
    """Insert events in order (inside the caller's transaction)."""
    placeholders = ", ".join("?" for _ in EVENT_COLUMNS)
    for event in events:
        con.execute(
            f"INSERT INTO override_events ({', '.join(EVENT_COLUMNS)}, sequence)"  # noqa: S608
            f" VALUES ({placeholders}, ?)",
            [*astuple(event), next_sequence(con, OVERRIDE_EVENTS.sequence)],
        )


def active_overrides(con: duckdb.DuckDBPyConnection, practice_id: str) -> pa.Table:
    return con.sql(
        f"SELECT * FROM ({load_sql('active_overrides')}) WHERE practice_id = $practice_id",  # noqa: S608
        params={"practice_id": practice_id},
    ).to_arrow_table()


def event_count(con: duckdb.DuckDBPyConnection, practice_id: str) -> int:
    """The practice's override events so far (they are only ever appended)."""
    return con.execute(
        "SELECT count(*) FROM override_events WHERE practice_id = ?", [practice_id]
    ).fetchall()[0][0]


def open_override_ids(
    con: duckdb.DuckDBPyConnection, practice_id: str, account_id: str
) -> list[tuple[str, str]]:
    """(override_id, state) of the account's active override and unresolved conflicts."""
    active = con.execute(
        f"SELECT override_id, 'active' FROM ({load_sql('active_overrides')})"  # noqa: S608
        " WHERE practice_id = ? AND account_id = ?",
        [practice_id, account_id],
    ).fetchall()
    conflicts = con.execute(
        f"SELECT override_id, 'conflict' FROM ({load_sql('override_conflicts')})"  # noqa: S608
        " WHERE practice_id = ? AND account_id = ?",
        [practice_id, account_id],
    ).fetchall()
    return [(row[0], row[1]) for row in active + conflicts]


def open_conflict_count(con: duckdb.DuckDBPyConnection, practice_id: str) -> int:
    return con.execute(
        f"SELECT count(*) FROM ({load_sql('override_conflicts')})"  # noqa: S608
        " WHERE practice_id = ?",
        [practice_id],
    ).fetchall()[0][0]


# --- Staff changes committed but not yet republished (`pending_republishes`) ---


def mark_pending(
    con: duckdb.DuckDBPyConnection, practice_ids: list[str], at: datetime
) -> None:
    """Record, inside the transaction that commits a staff change, that these practices
    must be republished. Their republish (`pipeline/recompute.republish_practice`) deletes
    the row; a row left by a killed command is completed by the practice's next publish."""
    for practice_id in practice_ids:
        con.execute("DELETE FROM pending_republishes WHERE practice_id = ?", [practice_id])
        con.execute(
            "INSERT INTO pending_republishes (practice_id, marked_at) VALUES (?, ?)",
            [practice_id, at],
        )


def pending_practices(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The practices whose committed staff changes are not republished yet, oldest first."""
    return [row[0] for row in con.execute(
        "SELECT practice_id FROM pending_republishes ORDER BY marked_at, practice_id"
    ).fetchall()]


def clear_pending(con: duckdb.DuckDBPyConnection, practice_id: str) -> None:
    con.execute("DELETE FROM pending_republishes WHERE practice_id = ?", [practice_id])
