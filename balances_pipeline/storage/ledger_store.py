"""Ledger mode: the practice's raw ledger, upserted by source keys, and its cursors.

The raw rows (one per source key: an extract never repeats a key) live in one DuckDB
file per practice (`pipeline/ledger/<practice>.duckdb`),
opened only under the practice's publish lock, so a big practice's upserts never hold the
shared working database. Cursors and the last full-refresh date are in the working
database, committed with the publish. The ledger is committed first: if a process dies in
between, the next incremental sync reads the same window again, and upserts by key are
idempotent.

The file records the sync whose rows it last took (`ledger_meta`). In the DuckLake layout
the file is the worker's own: a practice's next sync may run on another machine, whose
file (if any) missed the rows of syncs that ran elsewhere. An incremental read is then
only correct if this worker's file took the practice's last successful sync; otherwise
the sync reads everything (`LedgerStore.holds`, `pipeline/extract.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from balances_pipeline import schema
from balances_pipeline.storage import duck
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.layout import Layout, secure_private
from balances_pipeline.storage.sql_files import load_sql


@dataclass(frozen=True)
class LedgerTable:
    """A raw-ledger table: the columns and source key of the staging table it upserts."""

    relation: schema.Relation
    staging_table: str
    # Columns not kept as staged: column -> the SQL expression kept instead.
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return self.relation.name

    @property
    def key(self) -> str:
        if self.relation.source_key is None:
            raise ValueError(f"{self.table} declares no source key")
        return self.relation.source_key

    @property
    def kept_columns(self) -> str:
        """The select list reading the staging table into this one."""
        return ", ".join(
            f"{self.kept[name]} AS {name}" if name in self.kept else name
            for name in self.relation.names
        )


# Minimum necessary: only the account holder's (guarantor's) name is kept, never the names
# of the other patients of the family.
GUARANTOR_NAMES_ONLY = {"display_name": "CASE WHEN pat_num = guarantor_id THEN display_name END"}

LEDGER_TABLES = tuple(
    LedgerTable(relation, staging_table,
                GUARANTOR_NAMES_ONLY if staging_table == schema.STG_PATIENTS.name else {})
    for staging_table, relation in schema.LEDGER_TABLES.items()
)


def read_refresh_state(
    con: duckdb.DuckDBPyConnection, practice_id: str
) -> tuple[date | None, dict[str, datetime]]:
    """(date of the last full refresh, cursor per endpoint) of the practice."""
    refreshed = con.execute(
        "SELECT last_full_as_of FROM ledger_refreshes WHERE practice_id = ?", [practice_id]
    ).fetchall()
    cursors = dict(con.execute(
        "SELECT endpoint, cursor_at FROM ledger_cursors WHERE practice_id = ?", [practice_id]
    ).fetchall())
    return (refreshed[0][0] if refreshed else None), cursors


def record_refresh(
    con: duckdb.DuckDBPyConnection, practice_id: str, full: bool, as_of: date,
    cursors: dict[str, datetime],
) -> None:
    """Commit the cursors (and a full refresh's date) with the publish."""
    for endpoint, cursor in cursors.items():
        con.execute("DELETE FROM ledger_cursors WHERE practice_id = ? AND endpoint = ?",
                    [practice_id, endpoint])
        con.execute(
            "INSERT INTO ledger_cursors (practice_id, endpoint, cursor_at) VALUES (?, ?, ?)",
            [practice_id, endpoint, cursor],
        )
    if full:
        con.execute("DELETE FROM ledger_refreshes WHERE practice_id = ?", [practice_id])
        con.execute(
            "INSERT INTO ledger_refreshes (practice_id, last_full_as_of) VALUES (?, ?)",
            [practice_id, as_of],
        )


_META = "ledger_meta"


class LedgerStore:
    def __init__(self, layout: Layout, practice_id: str) -> None:
        folder = layout.pipeline_dir / "ledger"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / f"{practice_id}.duckdb"
        self.duckdb = layout.duckdb

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duck.connect(self.duckdb, self.path)
        secure_private(self.path)
        for table in LEDGER_TABLES:
            con.execute(table.relation.create_sql(if_not_exists=True))
        con.execute(f"CREATE TABLE IF NOT EXISTS {_META} (last_sync_id VARCHAR)")
        return con

    def last_sync_id(self) -> str | None:
        """The sync whose rows this file last took (None: no file, or none yet)."""
        if not self.path.exists():
            return None
        con = self._connect()
        try:
            rows = con.execute(f"SELECT last_sync_id FROM {_META}").fetchall()  # noqa: S608
        finally:
            con.close()
        return rows[0][0] if rows else None

    def holds(self, sync_id: str | None) -> bool:
        """Does this file hold the ledger as of `sync_id` (the practice's last success)?"""
        return sync_id is not None and self.last_sync_id() == sync_id

    def apply_and_age(
        self, staging_path: Path, full: bool, params: dict[str, Any]
    ) -> dict[str, int]:
        """Upsert the staged rows (a full refresh replaces every table, so rows deleted in
        the source go), then age the whole ledger into the staging database's
        `account_balances`. Call with the staging database closed."""
        con = self._connect()
        try:
            con.execute(f"ATTACH {sql_literal(str(staging_path))} AS stg")
            con.execute("BEGIN TRANSACTION")
            for table in LEDGER_TABLES:
                # Upsert by source key without a key index (an index of millions of keys
                # would have to stay in memory): drop the rows being replaced, insert.
                if full:
                    con.execute(f"DELETE FROM {table.table}")  # noqa: S608
                else:
                    con.execute(
                        f"DELETE FROM {table.table} WHERE {table.key} IN"  # noqa: S608
                        f" (SELECT {table.key} FROM stg.{table.staging_table})"
                    )
                con.execute(
                    f"INSERT INTO {table.table} BY NAME"  # noqa: S608
                    f" SELECT {table.kept_columns} FROM stg.{table.staging_table}"
                )
            con.execute(f"DELETE FROM {_META}")  # noqa: S608
            con.execute(f"INSERT INTO {_META} VALUES (?)", [params["sync_id"]])  # noqa: S608
            con.execute("COMMIT")
            counts = {
                table.table: con.execute(
                    f"SELECT count(*) FROM {table.table}"  # noqa: S608
                ).fetchall()[0][0]
                for table in LEDGER_TABLES
            }
            # Rejected rows name a patient (or, for /patients, a guarantor): as accounts.
            con.execute(
                "CREATE OR REPLACE TEMP VIEW rejected_accounts AS"
                " SELECT DISTINCT coalesce(CAST(p.guarantor_id AS VARCHAR), r.account_id)"
                " AS account_id FROM stg.stg_rejected_rows AS r"
                " LEFT JOIN ledger_patients AS p ON CAST(p.pat_num AS VARCHAR) = r.account_id"
                " AND r.endpoint <> '/patients' WHERE r.account_id IS NOT NULL"
            )
            aging = load_sql("ledger_account_balances")
            # One thread for the aging statement: with two, DuckDB 1.5.5's window, joins
            # and aggregates over a 100,000-account ledger (3.8M entries) held more than
            # the 64 MB budget at once and failed; alone it fits (about 2 s slower there).
            # Its allocator hands back what a large free releases at once rather than
            # keeping up to 512 MB of it cached (the statement alone, replayed at 100,000
            # accounts: 10 MB less peak RSS).
            # (Settings of the thread's DuckDB instance, which outlives this connection.)
            con.execute("SET threads = 1")
            con.execute("SET allocator_bulk_deallocation_flush_threshold = '1MB'")
            try:
                con.execute(
                    f"CREATE OR REPLACE TABLE stg.account_balances AS {aging}",  # noqa: S608
                    _used(params, aging),
                )
            finally:
                con.execute(f"SET threads = {duck.THREADS}")
                con.execute("RESET allocator_bulk_deallocation_flush_threshold")
            future_sql = load_sql("ledger_future_entries")
            future = con.execute(future_sql, _used(params, future_sql)).fetchall()[0][0]
            counts["future_entries"] = future
            con.execute("DETACH stg")
        finally:
            con.close()
        return counts



def _used(params: dict[str, Any], sql: str) -> dict[str, Any]:
    return {key: value for key, value in params.items() if f"${key}" in sql}
