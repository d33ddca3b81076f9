"""Summary: one aging row per practice, from the effective balances (`aging_summary`)."""

from __future__ import annotations

from typing import Any

import duckdb

from balances_pipeline.storage.sql_files import create_table_from_sql

BUCKETS = (
    "bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_91_120", "bucket_over_120",
    "bucket_over_90",
)


def build_aging_summary(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> dict[str, Any]:
    create_table_from_sql(con, "aging_summary", "aging_summary", params)
    cursor = con.execute("SELECT * FROM aging_summary")
    names = [column[0] for column in cursor.description]
    return dict(zip(names, cursor.fetchall()[0], strict=True))
