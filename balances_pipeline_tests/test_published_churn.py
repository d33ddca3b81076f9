"""Analysts' views under publish churn, in real processes (fault: `TProtocolException:
Invalid data` in an analyst's join while syncs, overrides and blocks published).

Writers publish snapshots of four practices as fast as they can, through the storage layer
a sync uses, while readers hold `warehouse.duckdb` open and join the views. DuckDB opens a
file when a query is bound and again when it is scanned: before published names carried
their snapshot id, a switch in between made a reader read one file's bytes with another
file's metadata (errors, and aborts of the reader's process), and the glob counted a
practice twice through the temporary symlink. Every query must now succeed and see, per
practice, one complete snapshot, and every practice that has rows (a view whose two scans
listed the files at different moments lost a practice).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from balances_pipeline.storage import duck
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.layout import Layout
from balances_pipeline_tests.churn_process import MAY_BE_EMPTY, expected_rows, publish_once

CHURN = str(Path(__file__).with_name("churn_process.py"))
CHURN_SECONDS = 20
# Practices shared by two writers exercise the publish lock as well as the readers.
WRITERS = [["p_alpha", "p_beta"], ["p_gamma", "p_delta"], ["p_alpha", "p_gamma"]]
READERS = 3


def _start(role: str, home: Path, out: Path, *practices: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, CHURN, role, str(home), str(CHURN_SECONDS), str(out), *practices],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _check_result(result: dict, always: set[str]) -> None:
    """One query's rows: each practice at most once, from one complete snapshot; the
    practices that always have rows, every time."""
    join = result["join"]
    practices = Counter(row[0] for row in join)
    assert max(practices.values(), default=1) == 1, f"a practice counted twice: {join}"
    assert always <= set(practices), f"a practice missing: {join}"
    for practice_id, balances_sync, outstanding_sync, rows, _total in join:
        # Each view is one whole snapshot; the two views of a query are two listings, so a
        # publish between them can pair two snapshots (accounts 0..n-1 in both: min).
        assert int(rows) == min(expected_rows(practice_id, balances_sync),
                                expected_rows(practice_id, outstanding_sync)), join
    summary = result["summary"]
    assert all(row[1] == "1" and int(row[2]) > 0 for row in summary), summary
    assert always <= {row[0] for row in summary}, f"a practice missing: {summary}"
    history = result["history"]
    for practice_id, _day, sync_ids, rows, sync_id in history:
        assert sync_ids == "1" and int(rows) == expected_rows(practice_id, sync_id), history
    assert always <= {row[0] for row in history}, f"a practice missing: {history}"


def test_readers_see_one_whole_snapshot_per_practice_under_churn(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "balances_home").ensure()
    ensure_analyst_warehouse(layout)
    practices = {p for practices in WRITERS for p in practices}
    con = duck.connect(layout.duckdb)
    try:
        for practice_id in sorted(practices):  # every practice is published before readers
            publish_once(layout, con, practice_id)
    finally:
        con.close()
    writers = [
        _start("writer", layout.home, tmp_path / f"writer{i}.json", *practices)
        for i, practices in enumerate(WRITERS)
    ]
    readers = [_start("reader", layout.home, tmp_path / f"reader{i}.json")
               for i in range(READERS)]
    started = time.monotonic()
    processes = writers + readers
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
        for process in processes:
            process.wait(timeout=CHURN_SECONDS + 120)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    elapsed = time.monotonic() - started
    # A reader killed by DuckDB (an abort on a file's bytes under another's metadata) or a
    # failed writer shows here.
    for process in processes:
        assert process.returncode == 0, process.stderr.read()[-3000:]

    published = sum(json.loads((tmp_path / f"writer{i}.json").read_text())["published"]
                    for i in range(len(WRITERS)))
    reports = [json.loads((tmp_path / f"reader{i}.json").read_text()) for i in range(READERS)]
    queries = sum(report["queries"] for report in reports)
    seen = {row[0] for report in reports for result in report["results"]
            for row in result["join"]}
    paired = sum(row[1] != row[2] for report in reports for result in report["results"]
                 for row in result["join"])
    print(f"{published} publishes and {queries} reader iterations (3 queries each) in"
          f" {elapsed:.0f} s; practices seen: {sorted(seen)}; joins pairing two snapshots"
          f" of a practice (a publish between the two views' listings): {paired}")
    assert [error for report in reports for error in report["errors"]] == []
    always = practices - set(MAY_BE_EMPTY)
    for report in reports:
        for result in report["results"]:
            _check_result(result, always)
    assert published > 50 and queries > 50, "hardly any churn"
    assert seen == practices
