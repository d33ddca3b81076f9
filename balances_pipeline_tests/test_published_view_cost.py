"""What the analyst views' snapshot choice costs, on a warehouse of a few hundred practices.

Today's views (before published names carried snapshot ids) read
`published/current/*/<relation>.parquet`; the views now read the `@<snapshot_id>` names and
keep each practice's newest file (one materialized scan, then a semi-join on the newest
name per practice). The same snapshots serve both, the pipeline's own `<relation>.parquet`
names being still there. Figures are printed,
never asserted (performance is measured, not tested); the results must be the same.

Three states: every practice published once; every practice republished with new
outstanding_balances (a staff change: account_balances carried over keeps its name, the
others are aliased for the grace period); every practice synced again (every relation
aliased: the worst case, until the sweep).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import duckdb

from balances_pipeline.schema import select_list
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.layout import Layout
from balances_pipeline_tests.published_files import publish

PRACTICES = 300
RELATIONS = ("account_balances", "outstanding_balances", "aging_summary")
QUERIES = {
    "count accounts": "SELECT count(*) FROM account_balances",
    "totals per practice": "SELECT practice_id, sum(balance_total), count(*)"
                           " FROM account_balances GROUP BY ALL ORDER BY ALL",
    "join balances and outstanding": (
        "SELECT count(*), sum(a.balance_total - o.patient_portion) FROM account_balances a"
        " JOIN outstanding_balances o USING (practice_id, account_id)"
    ),
    "one practice": "SELECT sum(balance_total), count(*) FROM outstanding_balances"
                    " WHERE practice_id = 'practice_0007'",
    "aging summary": "SELECT * FROM aging_summary ORDER BY practice_id",
}


def todays_views(layout: Layout) -> duckdb.DuckDBPyConnection:
    """An in-memory database with the views as they were defined before this change."""
    con = duckdb.connect()
    for relation in RELATIONS:
        pattern = sql_literal(f"{layout.current_dir}/*/{relation}.parquet")
        con.execute(
            f"CREATE VIEW {relation} AS SELECT\n  {select_list(relation)}\n"  # noqa: S608
            f"FROM read_parquet({pattern}, union_by_name = true)"
        )
    return con


def timed(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, list]:
    """The best of a few runs, in milliseconds, and the rows."""
    rows = con.execute(sql).fetchall()
    best, started, runs = float("inf"), time.perf_counter(), 0
    while runs < 3 or (time.perf_counter() - started < 1.0 and runs < 20):
        begin = time.perf_counter()
        con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - begin)
        runs += 1
    return best * 1000, rows


def test_the_views_cost_against_todays_views(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "balances_home").ensure()
    ensure_analyst_warehouse(layout)
    sizes = random.Random(7).choices(range(500, 5001), k=PRACTICES)
    started = time.monotonic()
    for index, rows in enumerate(sizes):
        publish(layout, f"practice_{index:04d}", rows)
    built = time.monotonic() - started
    today = todays_views(layout)
    new = duckdb.connect(str(layout.warehouse_path), read_only=True)
    figures: dict[str, list[float]] = {name: [] for name in QUERIES}
    try:
        for name, sql in QUERIES.items():
            today_ms, today_rows = timed(today, sql)
            new_ms, new_rows = timed(new, sql)
            assert new_rows == today_rows, name
            figures[name] += [today_ms, new_ms]
        new.close()
        for relations in (("outstanding_balances", "aging_summary"), RELATIONS):
            for index, rows in enumerate(sizes):
                publish(layout, f"practice_{index:04d}", rows, relations=relations)
            new = duckdb.connect(str(layout.warehouse_path), read_only=True)
            for name, sql in QUERIES.items():
                figures[name].append(timed(new, sql)[0])
            new.close()
    finally:
        today.close()
        new.close()
    accounts = sum(sizes)
    print(f"\nview cost: {PRACTICES} practices, {accounts:,} accounts per relation"
          f" (built in {built:.0f} s); best of runs, ms")
    print(f"{'query':32s} {'today':>8s} {'new':>8s} {'ratio':>6s}"
          f" {'+staff change':>14s} {'ratio':>6s} {'+sync':>8s} {'ratio':>6s}")
    for name, (old, steady, staff, synced) in figures.items():
        print(f"{name:32s} {old:8.1f} {steady:8.1f} {steady / old:6.2f}"
              f" {staff:14.1f} {staff / old:6.2f} {synced:8.1f} {synced / old:6.2f}")
