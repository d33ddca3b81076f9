"""A practice's published data in the DuckLake layout: replaced in a publish's transaction,
and checked out to local Parquet files for the steps that read what is published.

The pipeline's steps read and write a practice's relations as `<relation>.parquet` files in
a directory (`storage/snapshots.py`). In the DuckLake layout a publish loads the files of
the new snapshot directory into the lake's tables, replacing the practice's rows, inside
the transaction that commits its state (`storage/publish.py`); a relation the snapshot
does not carry keeps its rows. Reading what is published (`SnapshotStore.current_dir`)
exports the practice's rows, read in one transaction, to a private directory of this
worker (`pipeline/checkouts/<practice>/`), so the same steps run in both layouts.
"""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import date
from pathlib import Path

import duckdb

from balances_pipeline.schema import DATA_RELATIONS, select_list
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.lake import ALIAS, ANALYST_SCHEMA, WORKING_SCHEMA
from balances_pipeline.storage.lake_schema import SOURCE_AGING_REPORT
from balances_pipeline.storage.layout import PRIVATE_DIR_MODE, Layout

CHECKOUT_MAX_AGE_SECONDS = 900
SOURCE_FILE = f"{SOURCE_AGING_REPORT.name}.parquet"


def _table(relation: str) -> str:
    if relation == SOURCE_AGING_REPORT.name:
        return f"{ALIAS}.{WORKING_SCHEMA}.{relation}"
    return f"{ALIAS}.{ANALYST_SCHEMA}.{relation}"


def replace_practice_rows(con: duckdb.DuckDBPyConnection, practice_id: str,
                          snapshot_dir: Path) -> list[str]:
    """Inside the publish's transaction: each relation file of `snapshot_dir` replaces the
    practice's rows of its table. Returns the relations replaced."""
    replaced = []
    for relation in DATA_RELATIONS:
        path = snapshot_dir / f"{relation}.parquet"
        if path.exists():
            table = _table(relation)
            con.execute(f"DELETE FROM {table} WHERE practice_id = ?", [practice_id])  # noqa: S608
            con.execute(
                f"INSERT INTO {table} SELECT {select_list(relation)} FROM read_parquet(?)"  # noqa: S608
                " WHERE practice_id = ?",
                [str(path), practice_id],
            )
            replaced.append(relation)
    path = snapshot_dir / SOURCE_FILE
    if path.exists():
        table = _table(SOURCE_AGING_REPORT.name)
        con.execute(f"DELETE FROM {table} WHERE practice = ?", [practice_id])  # noqa: S608
        con.execute(f"INSERT INTO {table} SELECT ? AS practice, * FROM read_parquet(?)",  # noqa: S608
                    [practice_id, str(path)])
        replaced.append(SOURCE_AGING_REPORT.name)
    return replaced


def published_snapshot_id(con: duckdb.DuckDBPyConnection, practice_id: str) -> str | None:
    rows = con.execute(
        f"SELECT snapshot_id FROM {ALIAS}.{WORKING_SCHEMA}.published_snapshots"  # noqa: S608
        " WHERE practice_id = ?", [practice_id],
    ).fetchall()
    return rows[0][0] if rows else None


def checkout(layout: Layout, con: duckdb.DuckDBPyConnection, practice_id: str) -> Path | None:
    """The practice's published relations as `<relation>.parquet` files in a new private
    directory (None: never published), read in one transaction."""
    folder = layout.pipeline_dir / "checkouts" / practice_id
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    _remove_old(folder)
    con.execute("BEGIN TRANSACTION")
    try:
        snapshot_id = published_snapshot_id(con, practice_id)
        if snapshot_id is None:
            return None
        directory = folder / f"{snapshot_id}.{uuid.uuid4().hex[:8]}"
        directory.mkdir(mode=PRIVATE_DIR_MODE)
        for relation in DATA_RELATIONS:
            con.execute(
                f"COPY (SELECT * FROM {_table(relation)} WHERE practice_id = ?)"  # noqa: S608
                f" TO {sql_literal(str(directory / f'{relation}.parquet'))}"
                " (FORMAT parquet, COMPRESSION zstd)",
                [practice_id],
            )
        con.execute(
            f"COPY (SELECT * EXCLUDE (practice) FROM {_table(SOURCE_AGING_REPORT.name)}"  # noqa: S608
            f" WHERE practice = ?) TO {sql_literal(str(directory / SOURCE_FILE))}"
            " (FORMAT parquet, COMPRESSION zstd)",
            [practice_id],
        )
        return directory
    finally:
        con.execute("COMMIT")


def _remove_old(folder: Path) -> None:
    now = time.time()
    for old in folder.iterdir():
        try:
            if now - old.stat().st_mtime > CHECKOUT_MAX_AGE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            continue


def write_history_day(con: duckdb.DuckDBPyConnection, practice_id: str, snapshot_dir: Path,
                      as_of: date, oldest: date) -> None:
    """Inside a transaction: the snapshot's outstanding balances as the practice's day
    `as_of` of `balance_history`, and its days before `oldest` dropped."""
    table = f"{ALIAS}.{ANALYST_SCHEMA}.balance_history"
    con.execute(f"DELETE FROM {table} WHERE practice_id = ? AND snapshot_date = ?",  # noqa: S608
                [practice_id, as_of])
    con.execute(
        f"INSERT INTO {table} SELECT {select_list('balance_history', 'q')} FROM"  # noqa: S608
        " (SELECT *, as_of_date AS snapshot_date FROM read_parquet(?)) AS q",
        [str(snapshot_dir / "outstanding_balances.parquet")],
    )
    con.execute(f"DELETE FROM {table} WHERE practice_id = ? AND snapshot_date < ?",  # noqa: S608
                [practice_id, oldest])
