"""The DuckLake's tables and views, derived from `schema.py` like the local layout's.

`warehouse.pipeline` holds the working tables (no primary keys or sequences: DuckLake has
neither; the code writes them with DELETE then INSERT, and numbers rows with
`sequence_counters`), the source aging report each publish keeps, and
`schema_migrations`. `warehouse.main` is what analysts read: one table per published
relation (`DATA_RELATIONS`, `balance_history`) with exactly its contract's columns, and a
view per relation kept in the pipeline's state (`sync_runs`, `override_events`, ...) and
per derived view (`active_overrides`, `override_conflicts`).

A new lake is created whole in one transaction (two workers creating it at once: one
wins, the other's retry finds it). A lake created by an earlier release that lacks a
migration of this one is refused with a one-line error: each migration needs its DuckLake
form here before the release that adds it can run on a lake.
"""

from __future__ import annotations

import duckdb

from balances_pipeline import schema
from balances_pipeline.schema import (
    ANALYST_RELATIONS,
    DATA_RELATIONS,
    DERIVED_VIEWS,
    HISTORY_RELATIONS,
    STATE_RELATIONS,
    STG_AGING_REPORT,
    WORKING_SEQUENCES,
    WORKING_TABLES,
    quoted,
    select_list,
)
from balances_pipeline.schema_model import VARCHAR, Column, Relation
from balances_pipeline.settings import LakeError
from balances_pipeline.storage.lake import ALIAS, ANALYST_SCHEMA, WORKING_SCHEMA, retry_conflicts
from balances_pipeline.storage.sequences import COUNTERS_TABLE
from balances_pipeline.storage.sql_files import load_sql

# The source's own aging report of each practice's last publish (the ledger-vs-report
# check reads it), with the practice it came from in front.
SOURCE_AGING_REPORT = Relation(
    "source_aging_report",
    (Column("practice", VARCHAR, nullable=False), *STG_AGING_REPORT.columns),
)
# Published relations stored as tables (every practice's rows), by name.
PUBLISHED_TABLES = (*DATA_RELATIONS, *HISTORY_RELATIONS)


def _table_sql(relation: Relation, schema_name: str, *, analyst: bool = False) -> str:
    columns = relation.analyst_columns if analyst else relation.columns
    body = ",\n  ".join(
        f"{quoted(column.name)} {column.type}{'' if column.nullable else ' NOT NULL'}"
        for column in columns
    )
    return f"CREATE TABLE {ALIAS}.{schema_name}.{relation.name} (\n  {body}\n)"


def lake_schema_sql() -> list[str]:
    """Every statement that creates a new lake."""
    working = f"{ALIAS}.{WORKING_SCHEMA}"
    statements = [f"CREATE SCHEMA IF NOT EXISTS {working}"]
    statements += [_table_sql(table, WORKING_SCHEMA) for table in WORKING_TABLES]
    statements.append(_table_sql(SOURCE_AGING_REPORT, WORKING_SCHEMA))
    statements.append(f"CREATE TABLE {working}.{COUNTERS_TABLE} (name VARCHAR NOT NULL,"
                      " value BIGINT NOT NULL)")
    statements.append(_table_sql(schema.SCHEMA_MIGRATIONS, WORKING_SCHEMA))
    statements += [
        _table_sql(ANALYST_RELATIONS[name], ANALYST_SCHEMA, analyst=True)
        for name in PUBLISHED_TABLES
    ]
    statements += [
        f"CREATE VIEW {ALIAS}.{ANALYST_SCHEMA}.{name} AS SELECT {select_list(name)}"  # noqa: S608
        f" FROM {working}.{name}"
        for name in STATE_RELATIONS
    ]
    # The derived views read `override_events`: the analyst view of it, in `main`.
    statements += [
        f"CREATE VIEW {ALIAS}.{ANALYST_SCHEMA}.{view} AS {load_sql(view)}"
        for view in DERIVED_VIEWS
    ]
    return statements


def _exists(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?"
        " AND table_name = ?",
        [ALIAS, WORKING_SCHEMA, schema.SCHEMA_MIGRATIONS.name],
    ).fetchall()[0][0] > 0


def _create(con: duckdb.DuckDBPyConnection, migrations: list[tuple[int, str]]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        if not _exists(con):
            # Views bind their unqualified names in the schema they are created in.
            con.execute(f"USE {ALIAS}.{ANALYST_SCHEMA}")
            for statement in lake_schema_sql():
                con.execute(statement)
            for name in WORKING_SEQUENCES:
                con.execute(f"INSERT INTO {ALIAS}.{WORKING_SCHEMA}.{COUNTERS_TABLE}"  # noqa: S608
                            " VALUES (?, 0)", [name])
            for version, name in migrations:
                con.execute(
                    f"INSERT INTO {ALIAS}.{WORKING_SCHEMA}.schema_migrations"  # noqa: S608
                    " (version, name, applied_at) VALUES (?, ?, current_timestamp)",
                    [version, name],
                )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def prepare_lake(con: duckdb.DuckDBPyConnection, migrations: list[tuple[int, str]]) -> None:
    """Create the lake's tables if it has none; refuse a lake this release cannot read."""
    retry_conflicts(lambda: _create(con, migrations))
    applied = {row[0] for row in con.execute(
        f"SELECT version FROM {ALIAS}.{WORKING_SCHEMA}.schema_migrations"  # noqa: S608
    ).fetchall()}
    missing = [version for version, _ in migrations if version not in applied]
    if missing:
        raise LakeError(
            f"the DuckLake's schema predates migration {missing[0]:04d}, which has no DuckLake"
            " form in this release; upgrade it before running this release on it"
        )
