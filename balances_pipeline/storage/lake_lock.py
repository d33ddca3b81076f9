"""One writer at a time on the lake, across every worker: a Postgres advisory lock.

DuckLake's concurrency is optimistic: a commit that inserts into a table another commit
deleted from since it began is refused (measured here with DuckDB 1.5.5: "attempting to
insert into table ... but another transaction has deleted from it"), and the pipeline's
state tables are updated by every sync (`sync_runs`, `published_snapshots`, ...). Rather
than retry every unit of work, each one takes this lock, the lake's equivalent of the
local layout's `working.lock`: held for one short unit (milliseconds; a publish, a second
or so), never while extracting, and never by analysts, who read without it.

The lock is a session-level `pg_advisory_lock` on a connection of its own to the catalog's
database, so a worker that dies loses it with its connection: a killed sync blocks nobody.
A catalog that is not Postgres (a DuckDB or SQLite file: one machine) uses a file lock
beside it instead. Units of one process nest (a re-entrant count), and its threads take
turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from balances_pipeline.settings import LakeSettings

# pg_advisory_lock's key: any constant 64-bit number, the same for every worker.
LOCK_KEY = 0x62616C616E636573  # "balances"
POSTGRES_PREFIX = "postgres:"
LOCK_TIMEOUT_SECONDS = 600


class LockStats:
    """This process's use of the lock (the benchmark of docs/scaling.md reads it)."""

    def __init__(self) -> None:
        self.units = 0
        self.wait_seconds = 0.0
        self.held_seconds = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"units": self.units, "wait_seconds": self.wait_seconds,
                "held_seconds": self.held_seconds}


STATS = LockStats()


class _ProcessLock:
    def __init__(self, lake: LakeSettings, fallback_dir: Path) -> None:
        self.lake = lake
        self.mutex = threading.RLock()
        self.depth = 0
        self.connection = None
        self.taken_at = 0.0
        self.file_lock = (None if lake.catalog.startswith(POSTGRES_PREFIX)
                          else FileLock(fallback_dir / "lake-writer.lock",
                                        timeout=LOCK_TIMEOUT_SECONDS, thread_local=False))

    def acquire(self) -> None:
        asked = time.monotonic()
        self.mutex.acquire()
        try:
            if self.depth == 0:
                self._take()
                self.taken_at = time.monotonic()
                STATS.units += 1
                STATS.wait_seconds += self.taken_at - asked
            self.depth += 1
        except BaseException:
            self.mutex.release()
            raise

    def release(self) -> None:
        try:
            self.depth -= 1
            if self.depth == 0:
                STATS.held_seconds += time.monotonic() - self.taken_at
                self._give_back()
        finally:
            self.mutex.release()

    def _take(self) -> None:
        if self.file_lock is not None:
            self.file_lock.acquire()
            return
        import psycopg2  # dagster-postgres's driver

        if self.connection is None or self.connection.closed:
            conninfo = self.lake.catalog[len(POSTGRES_PREFIX):]
            self.connection = psycopg2.connect(conninfo, application_name="balances-lake-lock")
            self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])

    def _give_back(self) -> None:
        if self.file_lock is not None:
            self.file_lock.release()
            return
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        except Exception:
            # The session is gone, and its lock with it: start a new one next time.
            self.connection.close()
            self.connection = None
            raise


_locks: dict[LakeSettings, _ProcessLock] = {}
_guard = threading.Lock()


@contextmanager
def lake_writer(lake: LakeSettings, fallback_dir: Path) -> Iterator[None]:
    """Hold the lake's one-writer lock for one unit of work."""
    with _guard:
        lock = _locks.setdefault(lake, _ProcessLock(lake, fallback_dir))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
