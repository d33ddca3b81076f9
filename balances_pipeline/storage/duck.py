"""DuckDB connections of the pipeline, with a memory budget.

Without a limit DuckDB's buffer pool grows with the data (a big ledger's upsert and aging
took 700 MB); with one, joins and aggregates spill to `pipeline/tmp` under the pipeline's
home instead, so a sync's memory stays about constant whatever the practice's size.
`BALANCES_DUCKDB_MEMORY_LIMIT` (default 64MB) sets the budget (read in `settings.py`).
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import duckdb

THREADS = 2


@dataclass(frozen=True)
class DuckSettings:
    memory_limit: str
    temp_directory: Path

    def config(self) -> dict[str, str]:
        return {
            "memory_limit": self.memory_limit,
            "temp_directory": str(self.temp_directory),
            "threads": str(THREADS),
            "preserve_insertion_order": "false",
        }


def connect(settings: DuckSettings, path: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write pipeline connection: to the file `path`, or to a database of its own in
    memory when `path` is None; either attached to this thread's instance (`_Instance`)."""
    if path is None:  # this thread's own: no other thread can reach it
        attached = _Attached(_thread_instance(settings), None)
        attached.users = 1
        return _connection(attached)
    key = os.path.realpath(path)
    while True:
        with _files_guard:
            detaching = _detaching.get(key)
            if detaching is None:
                attached = _files.get(key)
                if attached is None:
                    attached = _Attached(_thread_instance(settings), key)
                    _files[key] = attached
                elif attached.instance.settings != settings:
                    raise duckdb.ConnectionException(
                        f"{Path(key).name} is open in this process with other DuckDB settings"
                    )
                attached.users += 1
                break
        detaching.wait()  # the file's last connection is closing: attach it afresh after
    return _connection(attached)


def _connection(attached: _Attached) -> duckdb.DuckDBPyConnection:
    try:
        with attached.instance.lock:
            cursor = attached.instance.root.cursor()
        cursor.execute(f"USE {attached.alias}")
    except BaseException:
        _release(attached)
        raise
    return cast(duckdb.DuckDBPyConnection, FileConnection(cursor, attached))


class _Instance:
    """An in-memory DuckDB database with the pipeline's settings, to which the files this
    thread opens are attached. Starting a DuckDB database costs some 20-25 ms on these
    machines and attaching a file to a running one 2-9 ms; a sync opens a dozen files
    (staging, working database, history, snapshot files), and a run of many practices
    that many per practice. One per thread, so that the memory budget and the thread
    setting of one extract thread are not another's; one per settings (tests use
    several homes)."""

    def __init__(self, settings: DuckSettings) -> None:
        self.settings = settings
        self.root = duckdb.connect(":memory:", config=settings.config())
        self.names = itertools.count(1)
        self.lock = threading.Lock()  # statements on `root` (ATTACH, DETACH), one at a time


class _Attached:
    """A file (or with no path a new in-memory database) attached to an instance under a
    name of its own, while `users` connections use it. Every connection of this process
    to the file goes through the same attachment, whatever thread opens it: two DuckDB
    databases on one file in one process would not exclude each other."""

    def __init__(self, instance: _Instance, path: str | None) -> None:
        self.instance = instance
        self.path = path
        self.alias = f"{'file' if path else 'memory'}_{next(instance.names)}"
        self.users = 0
        with instance.lock:
            instance.root.execute(f"ATTACH {sql_literal(path or ':memory:')} AS {self.alias}")


_files: dict[str, _Attached] = {}
_detaching: dict[str, threading.Event] = {}  # files whose last connection is closing
_files_guard = threading.Lock()
_instances = threading.local()


def _forget_parent_instances() -> None:
    """In a forked child: the parent's DuckDB databases are not the child's to use."""
    global _files_guard, _instances
    _files.clear()
    _detaching.clear()
    _files_guard = threading.Lock()
    _instances = threading.local()


os.register_at_fork(after_in_child=_forget_parent_instances)


def _thread_instance(settings: DuckSettings) -> _Instance:
    mine: dict[DuckSettings, _Instance] = _instances.__dict__.setdefault("by_settings", {})
    if settings not in mine:
        mine[settings] = _Instance(settings)
    return mine[settings]


def _release(attached: _Attached) -> None:
    """One user fewer; the last detaches the file (DuckDB checkpoints it then: a second for
    a big ledger, so outside `_files_guard`, where other threads open their files)."""
    if attached.path is None:
        attached.users -= 1  # this thread's own database: no other thread shares it
        if attached.users == 0:
            _detach(attached)
        return
    with _files_guard:
        attached.users -= 1
        if attached.users > 0:
            return
        if _files.get(attached.path) is attached:
            del _files[attached.path]
        detached = _detaching[attached.path] = threading.Event()
    try:
        _detach(attached)
    finally:
        with _files_guard:
            del _detaching[attached.path]
        detached.set()


def _detach(attached: _Attached) -> None:
    with attached.instance.lock:
        attached.instance.root.execute(f"DETACH {attached.alias}")


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal (for statements that take no parameters: ATTACH,
    COPY ... TO, table functions' arguments)."""
    return "'" + text.replace("'", "''") + "'"


class FileConnection:
    """A connection to one attached file (its default database): a DuckDB cursor of the
    instance, with `close` releasing the file. Everything else is the cursor's."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, attached: _Attached) -> None:
        self._cursor: duckdb.DuckDBPyConnection | None = cursor
        self._attached = attached

    def __getattr__(self, name: str) -> Any:
        if self._cursor is None:
            raise duckdb.ConnectionException("Connection already closed!")
        return getattr(self._cursor, name)

    def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is None:
            return
        try:
            cursor.close()
        finally:
            _release(self._attached)

    def __enter__(self) -> FileConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # a connection left open still lets the file go
        try:
            self.close()
        except Exception:  # noqa: S110 - at interpreter exit nothing is left to tell
            pass
