"""Test helpers: publish synthetic snapshots through the storage layer a sync uses.

`publish(layout, practice_id, rows)` writes a snapshot of `account_balances`,
`outstanding_balances` and `aging_summary` with `rows` accounts whose `sync_id` is the
snapshot's id (`SnapshotStore.create` → Parquet files → `point_to` → `prune`, under the
practice's publish lock), as `balances sync` would; `relations` picks which are written
(the others are carried over from the current snapshot, as a state-only republish does).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from balances_pipeline.schema import ANALYST_RELATIONS
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet

AS_OF = "2026-11-30"
SYNC_RELATIONS = ("account_balances", "outstanding_balances", "aging_summary")


def select_rows(relation: str, values: dict[str, str], rows: int) -> str:
    """A query with every analyst column of `relation`: `values` where given, else NULL."""
    columns = ", ".join(
        f"{values.get(column.name, 'NULL')} AS {column.name}"
        for column in ANALYST_RELATIONS[relation].analyst_columns
    )
    return f"SELECT {columns} FROM range({rows})"  # noqa: S608


def write_relations(
    directory: Path, practice_id: str, rows: int, relations: tuple[str, ...] = SYNC_RELATIONS,
    as_of: str = AS_OF,
) -> None:
    con = duckdb.connect()
    try:
        values = {
            "practice_id": "$1", "account_id": "range::VARCHAR",
            "account_name": "'Holder ' || range", "as_of_date": f"DATE '{as_of}'",
            "synced_at": "now()", "sync_id": "$2", "source_mode": "'aging_report'",
            "balance_total": "(range % 997)::DECIMAL(14, 2)",
            "patient_portion": "(range % 97)::DECIMAL(14, 2)", "account_count": str(rows),
        }
        for relation in relations:
            count = (1 if rows else 0) if relation == "aging_summary" else rows
            query = select_rows(relation, values, count)
            params = [practice_id, directory.name] if "$2" in query else [practice_id]
            copy_to_parquet(con, relation, query, directory / f"{relation}.parquet", params)
    finally:
        con.close()


def publish(
    layout: Layout, practice_id: str, rows: int, relations: tuple[str, ...] = SYNC_RELATIONS,
    as_of: str = AS_OF,
) -> Path:
    """Publish a snapshot of the practice; returns its directory."""
    store = SnapshotStore(layout)
    with practice_lock(layout, practice_id):
        directory = store.create(practice_id)
        write_relations(directory, practice_id, rows, relations, as_of)
        store.carry_over(practice_id, directory,
                         [f"{name}.parquet" for name in SYNC_RELATIONS])
        store.point_to(practice_id, directory)
        store.prune(practice_id)
    return directory
