"""Balances: map the staged source rows to `account_balances`, and record discrepancies."""

from __future__ import annotations

from typing import Any

import duckdb

from balances_pipeline.warehouse.sql_files import create_table_from_sql


def build_account_balances(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> int:
    return create_table_from_sql(con, "account_balances", "account_balances", params)


def find_discrepancies(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> int:
    return create_table_from_sql(con, "balance_discrepancies", "balance_discrepancies", params)
