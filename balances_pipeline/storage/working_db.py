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

In the DuckLake layout (`Layout.lake`) the working tables are the lake's
`warehouse.pipeline` schema (`storage/lake_schema.py`), each unit of work holds the lake's
one-writer lock across machines instead of the file lock (`storage/lake_lock.py`), one
attached DuckDB per process gives each unit a cursor, and `transaction_retrying` runs a
unit again after a conflict the lock did not prevent (a writer outside the pipeline).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TypeVar

import duckdb
from filelock import FileLock

from balances_pipeline import schema
from balances_pipeline.storage import duck, lake
from balances_pipeline.storage.lake_lock import lake_writer
from balances_pipeline.storage.lake_schema import prepare_lake
from balances_pipeline.storage.layout import Layout, secure_private

LOCK_TIMEOUT_SECONDS = 600
T = TypeVar("T")


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


# Inside `reusing_connections()` (a run syncing many practices): a connection, and the file
# lock, are kept between units of work for at most this long while in use, and closed
# after this long without one, so another process waits at most about their sum.
REUSE_MAX_HOLD_SECONDS = 1.0
REUSE_IDLE_SECONDS = 0.2
# After a hold that reached its maximum, the file is left free this long (a waiting
# process polls its lock every 0.05 s), so a busy run cannot keep it from others.
REUSE_YIELD_SECONDS = 0.1


class _SharedConnection:
    """The working database's one connection of this process while connections are
    reused; `mutex` serializes its units of work across threads."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.mutex = threading.RLock()
        # Not thread-local: the idle timer's thread releases what a worker thread took.
        self.file_lock = FileLock(layout.locks_dir / "working.lock",
                                  timeout=LOCK_TIMEOUT_SECONDS, thread_local=False)
        self.con: duckdb.DuckDBPyConnection | None = None
        self.opened_at = 0.0
        self.timer: threading.Timer | None = None
        self.migrated = False
        self.depth = 0  # units in progress (a unit may call another in the same thread)
        self.free_until = 0.0

    def open(self) -> duckdb.DuckDBPyConnection:
        self.depth += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.con is None:
            wait = self.free_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.file_lock.acquire()
            try:
                self.con = duck.connect(self.layout.duckdb, self.layout.working_db_path)
                secure_private(self.layout.working_db_path)
                if not self.migrated:
                    prepare(self.con)
                    self.migrated = True
            except BaseException:
                self.depth -= 1
                self.close()
                raise
            self.opened_at = time.monotonic()
        return self.con

    def done(self) -> None:
        """After a unit of work: close now if held long enough, else after a short idle."""
        self.depth -= 1
        if self.depth > 0 or self.con is None:
            return
        if time.monotonic() - self.opened_at >= REUSE_MAX_HOLD_SECONDS:
            self.close()
            self.free_until = time.monotonic() + REUSE_YIELD_SECONDS
            return
        self.timer = threading.Timer(REUSE_IDLE_SECONDS, self._close_if_idle)
        self.timer.daemon = True
        self.timer.start()

    def _close_if_idle(self) -> None:
        with self.mutex:
            if self.depth == 0:
                self.close()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.con is not None:
            try:
                self.con.close()
            finally:
                self.con = None
                self.file_lock.release()
        elif self.file_lock.is_locked:
            self.file_lock.release()


_shared: dict[Path, _SharedConnection] = {}
_reuse_depth = 0
_reuse_guard = threading.Lock()


@contextmanager
def reusing_connections() -> Iterator[None]:
    """Within: units of work of this process share one working-database connection, kept
    open across units for at most `REUSE_MAX_HOLD_SECONDS` (and closed after
    `REUSE_IDLE_SECONDS` without one), instead of opening one per unit (attaching the file,
    taking its lock and checkpointing it at the end, a few ms each time, and a practice's
    sync has about fifteen units). For runs that sync many practices; other processes
    still get the file between holds."""
    global _reuse_depth
    with _reuse_guard:
        _reuse_depth += 1
    try:
        yield
    finally:
        with _reuse_guard:
            _reuse_depth -= 1
            shared = list(_shared.values()) if _reuse_depth == 0 else []
            if _reuse_depth == 0:
                _shared.clear()
        for connection in shared:
            with connection.mutex:
                connection.close()


def _shared_connection(layout: Layout) -> _SharedConnection | None:
    with _reuse_guard:
        if _reuse_depth == 0:
            return None
        return _shared.setdefault(layout.working_db_path, _SharedConnection(layout))


# Lakes this process found (or made) ready: every `WorkingDatabase` of the process shares
# it, so the check costs one unit per process, not one per step.
_prepared_lakes: set = set()


class WorkingDatabase:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.working_db_path
        self._lock = FileLock(layout.locks_dir / "working.lock", timeout=LOCK_TIMEOUT_SECONDS)
        self._migrated = False

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short unit of work on the working database, under the cross-process lock."""
        if self.layout.lake is not None:
            with self._lake_cursor() as con:
                yield con
            return
        shared = _shared_connection(self.layout)
        if shared is not None:
            with shared.mutex:
                con = shared.open()
                try:
                    yield con
                finally:
                    shared.done()
            return
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

    def ensure_lake(self) -> None:
        """Create the lake's tables if it has none (once per process and lake)."""
        settings_lake = self.layout.lake
        if settings_lake in _prepared_lakes:
            return
        with lake_writer(settings_lake, self.layout.locks_dir), lake.CONNECTIONS.cursor(
            self.layout.duckdb, settings_lake, schema=lake.ANALYST_SCHEMA
        ) as con:
            prepare_lake(con, [(version, name) for version, name, _ in _migrations()])
        _prepared_lakes.add(settings_lake)

    @contextmanager
    def _lake_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.ensure_lake()
        with lake_writer(self.layout.lake, self.layout.locks_dir), lake.CONNECTIONS.cursor(
            self.layout.duckdb, self.layout.lake, schema=lake.WORKING_SCHEMA
        ) as con:
            yield con

    def transaction_retrying(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work` in one transaction; in the DuckLake layout run again (bounded) when its
        commit conflicts with another worker's. `work` must only write through `con`."""
        def attempt() -> T:
            with self.transaction() as con:
                return work(con)

        return lake.retry_conflicts(attempt) if self.layout.lake is not None else attempt()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            # A COMMIT that fails ends the transaction itself (DuckLake: a conflict).
            con.execute("COMMIT")
