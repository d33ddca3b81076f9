"""Numbers for the working tables' `sequence` columns, in both layouts.

On this machine a DuckDB sequence numbers them. DuckLake has no sequences, so in the
DuckLake layout each one is a row of `sequence_counters`, raised by an UPDATE inside the
caller's transaction: two transactions taking numbers at once both delete that row's old
version, a logical conflict DuckLake refuses to commit twice, so no number is ever given
out twice (the loser is retried: `lake.retry_conflicts`).
"""

from __future__ import annotations

import duckdb

from balances_pipeline.storage.lake import ALIAS

COUNTERS_TABLE = "sequence_counters"


def in_lake(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT current_database()").fetchall()[0][0] == ALIAS


def next_sequence(con: duckdb.DuckDBPyConnection, name: str) -> int:
    if not in_lake(con):
        return con.execute("SELECT nextval(?)", [name]).fetchall()[0][0]
    con.execute(f"UPDATE {COUNTERS_TABLE} SET value = value + 1 WHERE name = ?", [name])  # noqa: S608
    rows = con.execute(f"SELECT value FROM {COUNTERS_TABLE} WHERE name = ?", [name]).fetchall()  # noqa: S608
    if len(rows) != 1:
        raise RuntimeError(f"sequence counter {name} is missing from the lake")
    return rows[0][0]
