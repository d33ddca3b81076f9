"""The rules of the published files' names, aliases and clean-up (storage/snapshots.py,
storage/history.py), and the analyst views over them (storage/analyst.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.schema import ANALYST_RELATIONS
from balances_pipeline.settings import SettingsError
from balances_pipeline.storage import published_names, snapshots
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.history import LEGACY_SNAPSHOT_ID, write_history
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.published_names import (
    glob_escape,
    parse_published_name,
    published_name,
)
from balances_pipeline.storage.snapshots import (
    ALIAS_GRACE_SECONDS,
    SnapshotStore,
    new_snapshot_id,
)
from balances_pipeline_tests.conftest import sync_practice, warehouse_query
from balances_pipeline_tests.published_files import publish, write_relations

PRACTICE = "alpha_dental"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "balances_home").ensure()
    ensure_analyst_warehouse(layout)
    return layout


def query(layout: Layout, sql: str) -> list[tuple]:
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def view_names(layout: Layout, practice_id: str = PRACTICE) -> dict[str, str]:
    """What a view's glob lists in the practice's directory now: name → content hash."""
    folder = layout.current_dir / practice_id
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir() if parse_published_name(path.name)
    }


def synced(layout: Layout, practice_id: str = PRACTICE) -> list[tuple]:
    return query(layout, "SELECT sync_id, count(*) FROM account_balances"  # noqa: S608
                         f" WHERE practice_id = '{practice_id}' GROUP BY ALL")


# --- names ----------------------------------------------------------------------------


def test_names_carry_the_snapshot_id_and_ids_increase_even_if_the_clock_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = new_snapshot_id()
    assert len(sid) == 29 and parse_published_name(published_name("aging_summary", sid)) == (
        published_names.PublishedName("aging_summary", sid, False)
    )
    empty = published_name("2026-11-30", sid, empty=True)
    assert empty == f"2026-11-30@{sid}.empty.parquet"
    assert parse_published_name(empty) == published_names.PublishedName("2026-11-30", sid, True)
    for name in ("aging_summary.parquet", ".retired", f".aging_summary@{sid}.parquet.x.tmp"):
        assert parse_published_name(name) is None
    later = f"{time.time_ns() + 3600 * 10**9:020d}-0000abcd"  # a clock an hour ahead
    monkeypatch.setattr(time, "time_ns", lambda: 5)
    assert new_snapshot_id(later) > later and new_snapshot_id(sid) > sid


def test_create_gives_each_snapshot_a_greater_id(layout: Layout) -> None:
    store = SnapshotStore(layout)
    ids = [store.create(PRACTICE).name for _ in range(20)]
    assert ids == sorted(ids) and len(set(ids)) == 20


def test_glob_escape_matches_only_the_path_itself() -> None:
    assert glob_escape("/h/a[x]b*c?d]e") == "/h/a[[]x]b[*]c[?]d]e"
    assert glob_escape("/plain/home") == "/plain/home"


# --- a switch ---------------------------------------------------------------------------


def test_a_switch_keeps_every_listed_path_with_its_content(layout: Layout) -> None:
    first = publish(layout, PRACTICE, 30)
    listed = view_names(layout)
    assert published_name("account_balances", first.name) in listed
    second = publish(layout, PRACTICE, 50)
    after = view_names(layout)
    # What a reader bound to the first snapshot listed is still there, byte for byte...
    assert {name: after[name] for name in listed} == listed
    # ... and the views read the second snapshot alone.
    assert synced(layout) == [(second.name, 50)]
    retired = json.loads((second / published_names.RETIRED_FILE).read_text())
    assert set(retired) == set(listed)


def test_a_file_carried_over_keeps_its_name(layout: Layout) -> None:
    first = publish(layout, PRACTICE, 30)
    # A state-only republish: account_balances carried over (the same file).
    second = publish(layout, PRACTICE, 40, relations=("outstanding_balances",))
    names = set(view_names(layout))
    assert published_name("account_balances", first.name) in names
    assert published_name("account_balances", second.name) not in names  # never read twice
    assert published_name("outstanding_balances", second.name) in names
    retired = json.loads((second / published_names.RETIRED_FILE).read_text())
    assert retired.keys() == {published_name("outstanding_balances", first.name)}
    assert synced(layout) == [(first.name, 30)]
    assert query(layout, "SELECT DISTINCT sync_id FROM outstanding_balances") == [(second.name,)]


def test_an_empty_or_missing_relation_hides_the_previous_rows(layout: Layout) -> None:
    publish(layout, PRACTICE, 30)
    publish(layout, "beta_dental", 20)
    empty = publish(layout, PRACTICE, 0)
    assert published_name("account_balances", empty.name, empty=True) in view_names(layout)
    assert query(layout, "SELECT practice_id, count(*) FROM account_balances GROUP BY ALL") == [
        ("beta_dental", 20)
    ]
    # A filter on another column must not reach the older snapshot's rows either.
    assert query(layout, "SELECT * FROM account_balances WHERE account_id = '7'"  # noqa: S608
                         f" AND practice_id = '{PRACTICE}'") == []
    # A relation the new snapshot lacks (written before, not carried over) shows nothing.
    store = SnapshotStore(layout)
    directory = store.create(PRACTICE)
    write_relations(directory, PRACTICE, 5, ("account_balances",))
    store.point_to(PRACTICE, directory)
    assert query(layout, "SELECT count(*) FROM outstanding_balances"  # noqa: S608
                         f" WHERE practice_id = '{PRACTICE}'") == [(0,)]
    assert synced(layout) == [(directory.name, 5)]


def test_a_view_keeps_the_newest_file_per_practice_and_never_a_hidden_entry(
    layout: Layout,
) -> None:
    first = publish(layout, PRACTICE, 30)
    second = publish(layout, PRACTICE, 10)
    # What point_to used to leave in current/ while switching: a hidden symlink.
    os.symlink(os.path.relpath(first, layout.current_dir),
               layout.current_dir / f".{PRACTICE}.0123.tmp")
    assert synced(layout) == [(second.name, 10)]
    assert not [p for p in layout.current_dir.iterdir()
                if p.name.startswith(".") and p.name != f".{PRACTICE}.0123.tmp"]
    assert SnapshotStore(layout).switch_dir.parent == layout.published_dir


def _parquet_scans(node: dict) -> int:
    """The read_parquet scans in a plan node of `EXPLAIN (FORMAT JSON)` and its children.
    A scan is one node however it is drawn: DuckDB 1.5 names it READ_PARQUET and also
    shows `Function: READ_PARQUET` in it, so the words in the text plan count it twice."""
    own = (node.get("name") == "READ_PARQUET"
           or node.get("extra_info", {}).get("Function") == "READ_PARQUET")
    return int(own) + sum(_parquet_scans(child) for child in node.get("children", []))


def test_each_view_lists_its_files_once_per_query(layout: Layout) -> None:
    """Two scans of one view would list the directory at two moments: a publish in between
    made a practice vanish (DuckDB rewrites `max(...) OVER (PARTITION BY ...)` into a
    self-join of two scans; the views use one materialized scan instead)."""
    publish(layout, PRACTICE, 3)
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        for relation in ANALYST_RELATIONS:
            for sql in (f"SELECT count(*) FROM {relation}",  # noqa: S608
                        f"SELECT practice_id, count(*) FROM {relation} GROUP BY ALL"):  # noqa: S608
                plan = json.loads(con.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()[0][1])
                assert sum(map(_parquet_scans, plan)) == 1, (relation, plan)
        # The count sees a second scan: the window the views do not use is one.
        window = con.execute(
            "EXPLAIN (FORMAT JSON) SELECT count(*) FROM (SELECT * FROM read_parquet(?,"
            " filename = true) QUALIFY filename = max(filename) OVER (PARTITION BY practice_id))",
            [f"{layout.current_dir}/*/*.parquet"],
        ).fetchall()[0][1]
        assert sum(map(_parquet_scans, json.loads(window))) == 2
    finally:
        con.close()


def test_the_views_columns_are_the_declaration(layout: Layout) -> None:
    publish(layout, PRACTICE, 3)
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        columns = [row[0] for row in con.execute("DESCRIBE account_balances").fetchall()]
    finally:
        con.close()
    assert "filename" not in columns
    from balances_pipeline.schema import ACCOUNT_BALANCES

    assert columns == [c.name for c in ACCOUNT_BALANCES.analyst_columns]


# --- clean-up -------------------------------------------------------------------------


def test_aliases_are_unlinked_only_after_the_grace_period(layout: Layout) -> None:
    first = publish(layout, PRACTICE, 30)
    second = publish(layout, PRACTICE, 50)
    alias = layout.current_dir / PRACTICE / published_name("account_balances", first.name)
    store = SnapshotStore(layout)
    now = time.time()
    store.sweep(now=now + ALIAS_GRACE_SECONDS / 2)
    assert alias.exists()
    store.sweep(now=now + ALIAS_GRACE_SECONDS + 5)
    assert not alias.exists()
    assert {parse_published_name(name).snapshot_id for name in view_names(layout)} == {
        second.name
    }
    assert json.loads((second / published_names.RETIRED_FILE).read_text()) == {}
    assert synced(layout) == [(second.name, 50)]


HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True);" \
       " print('open', flush=True); sys.stdin.read()"


def test_the_sweep_waits_while_a_session_holds_the_warehouse_open(layout: Layout) -> None:
    publish(layout, PRACTICE, 30)
    publish(layout, PRACTICE, 50)
    store = SnapshotStore(layout)
    later = time.time() + snapshots.SWEEP_INTERVAL_SECONDS + ALIAS_GRACE_SECONDS + 5
    session = subprocess.Popen([sys.executable, "-c", HOLD, str(layout.warehouse_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout.readline().strip() == "open"
        assert published_names.warehouse_in_use(layout.warehouse_path)
        assert not store.sweep_if_due(now=later)
        assert store.sweep_if_due(now=later + snapshots.ALIAS_MAX_DEFER_SECONDS)
    finally:
        session.communicate("", timeout=30)
    assert not published_names.warehouse_in_use(layout.warehouse_path)
    assert not store.sweep_if_due(now=later + snapshots.ALIAS_MAX_DEFER_SECONDS + 1)


def test_old_snapshot_directories_go_but_their_files_stay_for_readers(layout: Layout) -> None:
    first = publish(layout, PRACTICE, 30)
    for rows in (31, 32, 33):
        publish(layout, PRACTICE, rows)
    old = time.time() - snapshots.MIN_AGE_BEFORE_PRUNE_SECONDS - 10
    os.utime(first, (old, old))
    SnapshotStore(layout).prune(PRACTICE)
    assert not first.exists()
    alias = layout.current_dir / PRACTICE / published_name("account_balances", first.name)
    assert alias.exists()
    assert duckdb.sql("SELECT count(*) FROM read_parquet($1)", params=[str(alias)]).fetchall() == [
        (30,)
    ]


# --- balance_history --------------------------------------------------------------------


def history(layout: Layout) -> list[tuple]:
    return query(layout, "SELECT snapshot_date, sync_id, count(*) FROM balance_history"
                         " GROUP BY ALL ORDER BY ALL")


def test_history_files_are_added_never_rewritten(layout: Layout) -> None:
    day = date(2026, 11, 30)
    first = publish(layout, PRACTICE, 30)
    write_history(layout, PRACTICE, first, day, 30)
    folder = layout.history_dir / PRACTICE
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    second = publish(layout, PRACTICE, 40)
    write_history(layout, PRACTICE, second, day, 30)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert history(layout) == [(day, second.name, 40)]
    empty = publish(layout, PRACTICE, 0)
    write_history(layout, PRACTICE, empty, day, 30)
    assert history(layout) == []
    SnapshotStore(layout).sweep(now=time.time() + ALIAS_GRACE_SECONDS + 5)
    assert sorted(folder.iterdir()) == []


def test_history_retention_hides_a_day_at_once_and_unlinks_it_later(layout: Layout) -> None:
    days = [date(2026, 11, 26) + timedelta(days=n) for n in range(4)]
    for day in days:
        snapshot = publish(layout, PRACTICE, 10, as_of=day.isoformat())
        write_history(layout, PRACTICE, snapshot, day, 2)
    assert [row[0] for row in history(layout)] == days[1:]
    folder = layout.history_dir / PRACTICE
    assert any(p.name.startswith(days[0].isoformat()) for p in folder.iterdir())
    SnapshotStore(layout).sweep(now=time.time() + ALIAS_GRACE_SECONDS + 5)
    assert not any(p.name.startswith(days[0].isoformat()) for p in folder.iterdir())
    assert [row[0] for row in history(layout)] == days[1:]


# --- an earlier release's files -----------------------------------------------------------


def test_files_an_earlier_release_published_are_named_on_upgrade(layout: Layout) -> None:
    store = SnapshotStore(layout)
    directory = store.create(PRACTICE)
    write_relations(directory, PRACTICE, 12)
    os.symlink(os.path.relpath(directory, layout.current_dir), layout.current_dir / PRACTICE)
    folder = layout.history_dir / PRACTICE
    folder.mkdir()
    day = date(2026, 11, 30)  # the rows' as_of_date
    write_history(layout, PRACTICE, directory, day, 30)
    [written] = folder.iterdir()
    written.rename(folder / f"{day.isoformat()}.parquet")  # the earlier release's name
    assert synced(layout) == []
    ensure_analyst_warehouse(layout, force=True)
    assert synced(layout) == [(directory.name, 12)]
    assert [p.name for p in folder.iterdir()] == [published_name(day.isoformat(),
                                                                 LEGACY_SNAPSHOT_ID)]
    assert history(layout) == [(day, directory.name, 12)]


# --- a BALANCES_HOME with glob characters -------------------------------------------------


def test_a_home_with_glob_characters_reads_its_own_files(
    simulated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[x]` read as a glob matches `x`, `*` anything: the views of `home [x] *'s` would
    read a sibling home's files (or none). Escaped, they read their own."""
    decoy = Layout(tmp_path / "home x decoy's").ensure()
    ensure_analyst_warehouse(decoy)
    publish(decoy, "gamma_dental", 7)
    home = tmp_path / "home [x] *'s"
    monkeypatch.setenv("BALANCES_HOME", str(home))
    outcome = sync_practice(simulated.practice("gamma_dental"))
    assert warehouse_query(
        "SELECT sync_id, count(*) FROM account_balances GROUP BY ALL"
    ) == [(outcome.sync_id, outcome.accounts)]
    assert warehouse_query("SELECT count(*) FROM balance_history") == [(outcome.accounts,)]
    assert warehouse_query("SELECT practice_id, status FROM sync_runs") == [
        ("gamma_dental", "success")
    ]


def test_a_home_with_a_question_mark_is_refused_in_one_line(tmp_path: Path) -> None:
    """DuckDB itself cannot keep a database under a path with `?` (it reads it as the start
    of options): refused with the settings' one-line error, before anything is written."""
    with pytest.raises(SettingsError) as refused:
        Layout(tmp_path / "home?").ensure()
    assert "\n" not in str(refused.value) and "'?'" in str(refused.value)
    assert not (tmp_path / "home?").exists()
