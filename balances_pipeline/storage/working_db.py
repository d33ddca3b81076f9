"""The pipeline's working database: state shared by every process, written in short steps.

DuckDB lets one process at a time open a file for writing, and any open (even read-only)
blocks a writer in another process. Every access therefore goes through `connect()`,
which holds a cross-process file lock for the duration of one short unit of work and
closes the connection afterwards. Dagster pools only coordinate runs of one instance;
this lock also covers the `balances` CLI and runs under another `DAGSTER_HOME`.

Its tables are declared in `schema.py` (`WORKING_TABLES`). A new database is created from
that declaration and stamped with every migration; a database of an earlier release
applies its pending numbered migrations (`migrations/NNNN_name.sql`, each in its own
transaction). A change to a working table therefore takes both: a new migration for
existing databases, and the change in `schema.py` for new ones. `test_schema.py` checks
that a database migrated from 0001 and one created from `schema.py` are the same. Column
order can differ between the two: write working tables by column name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import duckdb
from filelock import FileLock

from balances_pipeline import schema
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


def _record(con: duckdb.DuckDBPyConnection, version: int, name: str) -> None:
    con.execute(
        "INSERT INTO schema_migrations (version, name, applied_at)"
        " VALUES (?, ?, current_timestamp)",
        [version, name],
    )


def _is_empty(con: duckdb.DuckDBPyConnection) -> bool:
    """No table but `schema_migrations`, no sequence: a database this release creates."""
    tables = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        " AND table_name <> ?",
        [schema.SCHEMA_MIGRATIONS.name],
    ).fetchall()[0][0]
    sequences = con.execute(
        "SELECT count(*) FROM duckdb_sequences() WHERE database_name = current_database()"
    ).fetchall()[0][0]
    return tables == 0 and sequences == 0


def create_from_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create a new working database from `schema.py`, stamped with every migration (its
    tables are what the migrations would have built: `test_schema.py` checks it)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for statement in schema.working_schema_sql():
            con.execute(statement)
        for version, name, _ in _migrations():
            _record(con, version, name)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def apply_migrations(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> list[int]:
    """Apply the numbered migrations the database does not have yet (up to `upto`), each
    in its own transaction. Returns the versions applied."""
    con.execute(schema.SCHEMA_MIGRATIONS.create_sql(if_not_exists=True))
    applied = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    done = []
    for version, name, sql in _migrations():
        if version in applied or (upto is not None and version > upto):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            _record(con, version, name)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        done.append(version)
    return done


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the database to the current schema: create it, or migrate it."""
    con.execute(schema.SCHEMA_MIGRATIONS.create_sql(if_not_exists=True))
    stamped = con.execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0]
    if stamped == 0 and _is_empty(con):
        create_from_schema(con)
    else:
        apply_migrations(con)


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
                    prepare(con)
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
