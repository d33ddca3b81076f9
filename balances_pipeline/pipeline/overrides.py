"""Overrides: what this sync does to staff corrections, then `outstanding_balances`.

`reconcile_overrides` compares each active override's base values with the newly synced
portions (superseded / expired events), keeping every override whose account the sync could
not read; `build_outstanding_balances` applies the ones that stay active. Both run in the
sync's DuckDB connection with the inputs registered as tables.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from balances_pipeline.storage.override_store import (
    SYNC_ACTOR,
    OverrideEvent,
    new_event_id,
    now,
)
from balances_pipeline.storage.sql_files import create_table_from_sql, load_sql


def has_unidentified_rejects(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether a rejected row of this sync could not be tied to an account."""
    return bool(con.execute(
        "SELECT count(*) FROM rejected_accounts WHERE account_id IS NULL"
    ).fetchall()[0][0])


def reconcile_overrides(
    con: duckdb.DuckDBPyConnection, active: pa.Table, sync_id: str,
    *, one_row_per_account: bool = True,
) -> list[OverrideEvent]:
    """Events for the active overrides this sync supersedes or expires.

    Reads `account_balances` and `rejected_accounts` (balances.py) from `con`: an override
    whose account this sync could not read (a rejected row of it, or of an account that
    could not be identified) is neither superseded nor expired.
    """
    con.register("overrides_in", active)
    try:
        rows = con.execute(
            load_sql("override_reconciliation"), {"one_row_per_account": one_row_per_account}
        ).fetchall()
    finally:
        con.unregister("overrides_in")
    at = now()
    return [
        OverrideEvent(
            event_id=new_event_id(), override_id=row[0], practice_id=row[1], account_id=row[2],
            event=row[3], patient_portion=row[4], insurance_portion=row[5],
            base_patient_portion=row[6], base_insurance_portion=row[7], reason=None,
            actor=SYNC_ACTOR, created_at=at, sync_id=sync_id, synced_patient_portion=row[8],
            synced_insurance_portion=row[9],
        )
        for row in rows
    ]


def still_active(active: pa.Table, ended: list[OverrideEvent]) -> pa.Table:
    gone = {event.override_id for event in ended}
    keep = [i for i, oid in enumerate(active.column("override_id").to_pylist()) if oid not in gone]
    return active.take(pa.array(keep, type=pa.int64()))


def build_outstanding_balances(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any], active: pa.Table
) -> int:
    con.register("overrides_in", active)
    try:
        return create_table_from_sql(con, "outstanding_balances", "outstanding_balances", params)
    finally:
        con.unregister("overrides_in")
