"""Overrides: apply staff corrections to the synced balances (`outstanding_balances`)."""

from __future__ import annotations

from typing import Any

import duckdb

from balances_pipeline.warehouse.sql_files import create_table_from_sql


def build_outstanding_balances(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> int:
    return create_table_from_sql(con, "outstanding_balances", "outstanding_balances", params)
