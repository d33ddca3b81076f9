"""Pipeline connections (`storage/duck.py`): files attached to one DuckDB database per
thread, behaving as connections of their own did: a file's tables as the default, a file
released (checkpointed, unlocked) by its last connection's close, in-memory databases
apart from each other, one attachment per file whatever thread opens it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.storage import duck


@pytest.fixture
def settings(tmp_path: Path) -> duck.DuckSettings:
    return duck.DuckSettings(memory_limit="64MB", temp_directory=tmp_path / "spill")


def test_a_file_s_tables_are_the_connection_s_own(settings: duck.DuckSettings,
                                                  tmp_path: Path) -> None:
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    a = duck.connect(settings, first)
    b = duck.connect(settings, second)
    a.execute("CREATE TABLE t AS SELECT 1 AS n")
    b.execute("CREATE TABLE t AS SELECT 2 AS n")
    assert a.execute("SELECT n FROM t").fetchall() == [(1,)]
    assert b.execute("SELECT n FROM t").fetchall() == [(2,)]
    assert a.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name ="
                     " current_database()").fetchall() == [(1,)]
    a.close()
    b.close()
    with duckdb.connect(str(first), read_only=True) as plain:
        assert plain.execute("SELECT n FROM t").fetchall() == [(1,)]


def test_the_last_close_checkpoints_and_releases_the_file(settings: duck.DuckSettings,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "data.duckdb"
    one, two = duck.connect(settings, path), duck.connect(settings, path)
    one.execute("CREATE TABLE t AS SELECT range AS n FROM range(1000)")
    one.close()
    # Still attached for the second connection: another process cannot take it.
    other = [sys.executable, "-c",
             f"import duckdb; duckdb.connect({str(path)!r}).close()"]
    assert subprocess.run(other, capture_output=True).returncode != 0
    assert two.execute("SELECT count(*) FROM t").fetchall() == [(1000,)]
    two.close()
    assert not path.with_suffix(".duckdb.wal").exists()
    assert subprocess.run(other, capture_output=True).returncode == 0
    two.close()  # closing again is harmless


def test_a_closed_connection_refuses_work(settings: duck.DuckSettings,
                                          tmp_path: Path) -> None:
    con = duck.connect(settings, tmp_path / "x.duckdb")
    con.close()
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")


def test_in_memory_connections_are_apart(settings: duck.DuckSettings) -> None:
    a, b = duck.connect(settings), duck.connect(settings)
    a.execute("CREATE TABLE t AS SELECT 1 AS n")
    b.execute("CREATE TABLE t AS SELECT 2 AS n")
    assert a.execute("SELECT n FROM t").fetchall() == [(1,)]
    a.close()
    assert b.execute("SELECT n FROM t").fetchall() == [(2,)]
    b.close()


def test_threads_share_one_attachment_of_a_file(settings: duck.DuckSettings,
                                                tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    main = duck.connect(settings, path)
    main.execute("CREATE TABLE t (n INTEGER)")
    errors: list[BaseException] = []

    def insert(number: int) -> None:
        try:
            con = duck.connect(settings, path)
            try:
                con.execute("INSERT INTO t VALUES (?)", [number])
            finally:
                con.close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert main.execute("SELECT list_sort(list(n)) FROM t").fetchall() == [(list(range(8)),)]
    main.close()


def test_a_file_being_detached_holds_up_only_its_own_opens(
    settings: duck.DuckSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last close checkpoints the file (a second for a big ledger). Meanwhile other
    # files open freely; the same file opens once the detach is over, with its data.
    big, other = tmp_path / "big.duckdb", tmp_path / "other.duckdb"
    checkpointing, go_on = threading.Event(), threading.Event()
    detach = duck._detach

    def slow_detach(attached: object) -> None:
        if getattr(attached, "path", None) == str(big.resolve()):
            checkpointing.set()
            assert go_on.wait(10)
        detach(attached)  # type: ignore[arg-type]

    monkeypatch.setattr(duck, "_detach", slow_detach)
    con = duck.connect(settings, big)
    con.execute("CREATE TABLE t AS SELECT range AS n FROM range(1000)")
    closer = threading.Thread(target=con.close)
    closer.start()
    assert checkpointing.wait(10)
    with duck.connect(settings, other) as elsewhere:  # not held up by the detach
        assert elsewhere.execute("SELECT 1").fetchall() == [(1,)]
    reopened: list[object] = []
    opener = threading.Thread(target=lambda: reopened.append(duck.connect(settings, big)))
    opener.start()
    opener.join(0.3)
    assert opener.is_alive() and reopened == []  # waits for the detach to finish
    go_on.set()
    closer.join(10)
    opener.join(10)
    again = reopened[0]
    assert again.execute("SELECT count(*) FROM t").fetchall() == [(1000,)]  # type: ignore[attr-defined]
    again.close()  # type: ignore[attr-defined]
    assert str(big.resolve()) not in {**duck._files, **duck._detaching}


def test_other_settings_on_an_open_file_are_refused(settings: duck.DuckSettings,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    con = duck.connect(settings, path)
    other = duck.DuckSettings(memory_limit="128MB", temp_directory=tmp_path / "other")
    with pytest.raises(duckdb.ConnectionException, match="other DuckDB settings"):
        duck.connect(other, path)
    con.close()
    duck.connect(other, path).close()  # once released, any settings
