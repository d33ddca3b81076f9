"""The SQL transforms, one `.sql` file per relation they build, in `sql/`."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import duckdb


@cache
def load_sql(name: str) -> str:
    return (resources.files("balances_pipeline") / "sql" / f"{name}.sql").read_text(
        encoding="utf-8"
    )


def create_table_from_sql(
    con: duckdb.DuckDBPyConnection, table: str, sql_name: str, params: dict[str, Any]
) -> int:
    """`CREATE OR REPLACE TABLE table AS <sql file>` with only the parameters it uses."""
    sql = load_sql(sql_name)
    used = {key: value for key, value in params.items() if f"${key}" in sql}
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {sql}", used)  # noqa: S608
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]  # noqa: S608
