"""The pipeline's working database: state shared by every process, written in short steps.

DuckDB lets one process at a time open a file for writing, and any open (even read-only)
blocks a writer in another process. Every access therefore goes through `connect()`,
which holds a cross-process file lock for the duration of one short unit of work and
closes the connection afterwards. Dagster pools only coordinate runs of one instance;
this lock also covers the `balances` CLI and runs under another `DAGSTER_HOME`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import duckdb
from filelock import FileLock

from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import Layout, secure_private

LOCK_TIMEOUT_SECONDS = 600


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("balances_pipeline.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _apply_migrations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    applied = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, name, sql in _migrations():
        if version in applied:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, current_timestamp)", [version, name]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


class WorkingDatabase:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.working_db_path
        self._lock = FileLock(layout.locks_dir / "working.lock", timeout=LOCK_TIMEOUT_SECONDS)
        self._migrated = False

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short unit of work on the working database, under the cross-process lock."""
        with self._lock:
            con = duck.connect(self.layout.duckdb, self.path)
            secure_private(self.path)
            try:
                if not self._migrated:
                    _apply_migrations(con)
                    self._migrated = True
                yield con
            finally:
                con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
