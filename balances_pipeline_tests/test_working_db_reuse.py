"""A run syncing many practices shares one working-database connection between units of
work (`reusing_connections`), and still lets other processes in: the file lock is held at
most `REUSE_MAX_HOLD_SECONDS` while units keep coming and released after
`REUSE_IDLE_SECONDS` without one."""

from __future__ import annotations

import threading
import time

import pytest
from filelock import FileLock, Timeout

from balances_pipeline.settings import layout_from_env
from balances_pipeline.storage import working_db
from balances_pipeline.storage.working_db import WorkingDatabase, reusing_connections


def other_process_lock(layout) -> FileLock:
    # A FileLock object of its own takes a lock of its own, as another process's would.
    return FileLock(layout.locks_dir / "working.lock", timeout=0)


@pytest.fixture
def layout(balances_home):
    found = layout_from_env().ensure()
    with WorkingDatabase(found).connect():  # created and migrated before the tests
        pass
    return found


def test_units_share_one_connection_and_release_it_when_idle(layout) -> None:
    database = WorkingDatabase(layout)
    with reusing_connections():
        with database.connect() as first:
            first.execute("SELECT 1")
        with WorkingDatabase(layout).transaction() as second:
            assert second is first  # no new DuckDB open between units
            with database.connect() as nested:  # a unit inside a unit, same thread
                assert nested is first
        with pytest.raises(Timeout):
            other_process_lock(layout).acquire()
        time.sleep(working_db.REUSE_IDLE_SECONDS * 3)
        lock = other_process_lock(layout)
        lock.acquire()  # idle: released
        lock.release()
        with database.connect() as third:
            assert third is not first  # opened again
    lock = other_process_lock(layout)
    lock.acquire()  # the context closed it
    lock.release()


def test_a_busy_run_still_lets_others_in(layout, monkeypatch) -> None:
    monkeypatch.setattr(working_db, "REUSE_MAX_HOLD_SECONDS", 0.3)
    stop = threading.Event()

    def busy() -> None:
        with reusing_connections():
            while not stop.is_set():
                with WorkingDatabase(layout).connect() as con:
                    con.execute("SELECT count(*) FROM sync_runs").fetchall()

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        time.sleep(0.1)
        waited = time.monotonic()
        lock = FileLock(layout.locks_dir / "working.lock", timeout=10)
        lock.acquire()
        waited = time.monotonic() - waited
        lock.release()
    finally:
        stop.set()
        worker.join(timeout=30)
    assert waited < 5  # at most about one hold, never the whole run


def test_without_the_context_every_unit_opens_its_own(layout) -> None:
    database = WorkingDatabase(layout)
    with database.connect() as first:
        pass
    lock = other_process_lock(layout)
    lock.acquire()  # released at once
    lock.release()
    with database.connect() as second:
        assert second is not first
