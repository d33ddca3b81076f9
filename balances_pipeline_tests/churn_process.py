"""Publish churn and analyst readers in processes of their own, for tests and measurements.

    python churn_process.py writer HOME SECONDS OUT PRACTICE...
    python churn_process.py reader HOME SECONDS OUT

A writer publishes snapshots of its practices in turn for SECONDS, through the storage
layer a sync uses (`SnapshotStore.create` → Parquet files → `point_to` → `prune`, under the
practice's publish lock, and the day's `balance_history` file), as fast as it can. Every
snapshot's rows carry its id as `sync_id` and its row count is a function of that id
(`expected_rows`); about one snapshot in six of the `MAY_BE_EMPTY` practices has no rows.
A reader opens `warehouse.duckdb` read-only once and runs, for SECONDS, the join analysts
run plus per-practice counts of the other views. Both write a JSON report to OUT: the
writer its publish count, the reader every query's result and every error.

`CHURN_GRACE_SECONDS`, `CHURN_SWEEP_SECONDS` and `CHURN_MAX_DEFER_SECONDS` shorten the alias
grace period, the sweep interval and the deferral while the warehouse is open (measurements
of what unlinking aliases costs readers; the tests use the product's values).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import duckdb

from balances_pipeline.schema import ANALYST_RELATIONS
from balances_pipeline.storage import duck, snapshots
from balances_pipeline.storage.history import write_history
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet

AS_OF = date(2026, 11, 30)
PUBLISH_INTERVAL_SECONDS = 0.5  # per writer

JOIN = """
SELECT a.practice_id, a.sync_id, o.sync_id, count(*), sum(o.balance_total)
FROM account_balances a JOIN outstanding_balances o USING (practice_id, account_id)
GROUP BY ALL ORDER BY ALL
"""
SUMMARY = "SELECT practice_id, count(*), min(account_count) FROM aging_summary GROUP BY ALL"
HISTORY = """
SELECT practice_id, snapshot_date, count(DISTINCT sync_id), count(*), min(sync_id)
FROM balance_history GROUP BY ALL
"""


# Practices whose snapshots may have no rows at all (about one in six); the others always
# have rows, so every query must show them.
MAY_BE_EMPTY = ("p_beta", "p_delta")


def expected_rows(practice_id: str, sync_id: str) -> int:
    """The number of accounts of a snapshot, from its id."""
    value = int(hashlib.sha256(sync_id.encode()).hexdigest()[:8], 16)
    if practice_id in MAY_BE_EMPTY and value % 6 == 0:
        return 0
    return 40 + value % 260


def _select(relation: str, values: dict[str, str], rows: str) -> str:
    """A query with every analyst column of `relation`: `values` where given, else NULL."""
    columns = ", ".join(
        f"{values.get(column.name, 'NULL')} AS {column.name}"
        for column in ANALYST_RELATIONS[relation].analyst_columns
    )
    return f"SELECT {columns} FROM range({rows})"  # noqa: S608


def _write_snapshot(con: duckdb.DuckDBPyConnection, directory: Path, practice_id: str) -> int:
    sync_id = directory.name
    rows = expected_rows(practice_id, sync_id)
    values = {
        "practice_id": "$1", "account_id": "range::VARCHAR", "account_name": "'Holder ' || range",
        "as_of_date": f"DATE '{AS_OF}'", "synced_at": "now()", "sync_id": "$2",
        "source_mode": "'aging_report'", "balance_total": "(range % 997)::DECIMAL(14, 2)",
        "account_count": str(rows),
    }
    for relation, count in (("account_balances", rows), ("outstanding_balances", rows),
                            ("aging_summary", 1 if rows else 0)):
        query = _select(relation, values, str(count))
        copy_to_parquet(con, relation, query, directory / f"{relation}.parquet",
                        [practice_id, sync_id] if "$2" in query else [practice_id])
    return rows


def publish_once(layout: Layout, con: duckdb.DuckDBPyConnection, practice_id: str) -> None:
    store = SnapshotStore(layout)
    with practice_lock(layout, practice_id):
        directory = store.create(practice_id)
        _write_snapshot(con, directory, practice_id)
        store.point_to(practice_id, directory)
        store.prune(practice_id)
        write_history(layout, practice_id, directory, AS_OF, 30)


def writer(layout: Layout, seconds: float, practices: list[str]) -> dict:
    con = duck.connect(layout.duckdb)
    published = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for practice_id in practices:
                started = time.monotonic()
                publish_once(layout, con, practice_id)
                published += 1
                # Churn far above production's, but within `MAX_ALIASED_SNAPSHOTS` per
                # practice and grace period, beyond which a switch drops aliases.
                time.sleep(max(0.0, PUBLISH_INTERVAL_SECONDS - (time.monotonic() - started)))
    finally:
        con.close()
    return {"published": published}


def reader(layout: Layout, seconds: float) -> dict:
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    results, errors = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            results.append({
                "join": [list(map(str, row)) for row in con.execute(JOIN).fetchall()],
                "summary": [list(map(str, row)) for row in con.execute(SUMMARY).fetchall()],
                "history": [list(map(str, row)) for row in con.execute(HISTORY).fetchall()],
            })
        except Exception as error:  # noqa: BLE001 - every error is what the test looks for
            errors.append(repr(error)[:500])
    con.close()
    return {"queries": len(results) + len(errors), "results": results, "errors": errors}


def main(argv: list[str]) -> int:
    role, home, seconds, out = argv[0], Path(argv[1]), float(argv[2]), Path(argv[3])
    if "CHURN_GRACE_SECONDS" in os.environ:
        snapshots.ALIAS_GRACE_SECONDS = float(os.environ["CHURN_GRACE_SECONDS"])
    if "CHURN_SWEEP_SECONDS" in os.environ:
        snapshots.SWEEP_INTERVAL_SECONDS = float(os.environ["CHURN_SWEEP_SECONDS"])
    if "CHURN_MAX_DEFER_SECONDS" in os.environ:
        snapshots.ALIAS_MAX_DEFER_SECONDS = float(os.environ["CHURN_MAX_DEFER_SECONDS"])
    layout = Layout(home)
    print("ready", flush=True)
    report = writer(layout, seconds, argv[4:]) if role == "writer" else reader(layout, seconds)
    out.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
