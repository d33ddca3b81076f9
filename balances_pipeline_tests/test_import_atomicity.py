"""A staff change is all or nothing across practices, even when its process is SIGKILLed.

`balances override import` of a file touching two practices, killed at chosen points (in
its commit, before a publish, between a publish's commit and its symlink swap) and at
random times: each kill leaves either none of the file's events or all of them, and the
next command publishes whatever was committed, so the analyst views show all of them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.staff.overrides import build_request, set_overrides
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_dicts as query

BALANCES = str(Path(sys.executable).parent / "balances")
KILLPOINT = str(Path(__file__).with_name("killpoint_process.py"))
PRACTICES = ("alpha_dental", "beta_dental")
PER_PRACTICE = 4


@pytest.fixture
def two_practices(simulated, tmp_path):
    """alpha_dental and beta_dental synced; four accounts of each to override."""
    accounts = {}
    for practice_id in PRACTICES:
        sync_practice(simulated.practice(practice_id))
        accounts[practice_id] = [row["account_id"] for row in query(
            "SELECT account_id FROM account_balances WHERE practice_id = ?"
            " ORDER BY account_id LIMIT ?", [practice_id, PER_PRACTICE])]
    return simulated, accounts, tmp_path


def import_file(tmp_path: Path, accounts: dict[str, list[str]], batch: int) -> Path:
    """Batch `batch`: every account's patient portion set to 10 + batch."""
    path = tmp_path / f"batch{batch}.csv"
    lines = ["practice_id,account_id,patient_portion,insurance_portion,reason"]
    lines += [f"{practice_id},{account_id},{10 + batch}.00,,batch {batch}"
              for practice_id in PRACTICES for account_id in accounts[practice_id]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def committed(batch: int) -> list[tuple[str, str]]:
    """(practice, account) of the batch's `set` events in the working database."""
    with WorkingDatabase(layout()).connect() as con:
        return con.execute(
            "SELECT practice_id, account_id FROM override_events WHERE event = 'set'"
            " AND reason = ? ORDER BY ALL", [f"batch {batch}"]).fetchall()


def pending() -> list[tuple]:
    """The practices marked as still to be republished (none before the table existed)."""
    with WorkingDatabase(layout()).connect() as con:
        if not con.execute("SELECT count(*) FROM duckdb_tables()"
                           " WHERE table_name = 'pending_republishes'").fetchall()[0][0]:
            return []
        return con.execute("SELECT practice_id FROM pending_republishes").fetchall()


def everything(accounts: dict[str, list[str]]) -> list[tuple[str, str]]:
    return sorted((p, a) for p in PRACTICES for a in accounts[p])


def assert_all_or_nothing(batch: int, accounts: dict[str, list[str]]) -> bool:
    found = committed(batch)
    assert found in ([], everything(accounts)), f"batch {batch} half committed: {found}"
    return bool(found)


def assert_visible(batch: int, accounts: dict[str, list[str]]) -> None:
    """The analyst views show the batch, in every practice and every relation."""
    amount = Decimal(f"{10 + batch}.00")
    active = query("SELECT practice_id, account_id, reason, override_id FROM active_overrides"
                   " ORDER BY practice_id, account_id")
    assert [(r["practice_id"], r["account_id"], r["reason"]) for r in active] == [
        (p, a, f"batch {batch}") for p, a in everything(accounts)
    ]
    rows = query("SELECT practice_id, account_id, patient_portion, override_id"
                 " FROM outstanding_balances WHERE is_overridden ORDER BY ALL")
    assert [(r["practice_id"], r["account_id"], r["patient_portion"], r["override_id"])
            for r in rows] == [
        (r["practice_id"], r["account_id"], amount, r["override_id"]) for r in active
    ]
    events = query("SELECT practice_id, account_id FROM override_events WHERE event = 'set'"
                   " AND reason = ? ORDER BY ALL", [f"batch {batch}"])
    assert [(e["practice_id"], e["account_id"]) for e in events] == everything(accounts)
    for practice_id in PRACTICES:
        [summary] = query("SELECT overridden_account_count FROM aging_summary"
                          " WHERE practice_id = ?", [practice_id])
        assert summary["overridden_account_count"] == PER_PRACTICE
    assert pending() == []


def run_until_paused(arguments: list[str], point: str, times: int) -> subprocess.Popen:
    """Start the command under killpoint_process.py; return once it is paused at `point`."""
    process = subprocess.Popen(
        [sys.executable, KILLPOINT, point, str(times), *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))
    reader.start()
    reader.join(timeout=120)
    if not line or not line[0].startswith("paused at"):
        process.kill()
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"never paused at {point} {times}: {line} {stderr[-2000:]}")
    return process


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def balances(*arguments: str) -> subprocess.CompletedProcess:
    done = subprocess.run([BALANCES, *arguments], capture_output=True, text=True,
                          timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr
    return done


# Each kill point, and the command run after the kill (a staff command of one of the
# practices, the override list, the rebuild): every one completes what the kill left.
KILLS = [
    ("commit", 1, ("override", "list")),  # inside the one transaction: nothing committed
    ("publish", 1, ("override", "list", "--all")),  # committed, nothing published yet
    ("swap", 1, ("account", "show", "--practice", "alpha_dental", "--account", "{alpha}")),
    ("commit", 3, ("override", "list", "--practice", "beta_dental")),
    ("publish", 3, ("warehouse", "rebuild")),  # one practice published, not the other
    ("swap", 3, ("override", "list", "--practice", "alpha_dental")),
    ("commit", 5, ("account", "show", "--practice", "beta_dental", "--account", "{beta}")),
    ("commit", 7, ("override", "list")),  # both published, the marks not all cleared
]


def test_a_killed_import_leaves_nothing_or_everything(two_practices) -> None:
    simulated, accounts, tmp_path = two_practices
    visible_batch = None
    for batch, (point, times, then) in enumerate(KILLS, start=1):
        csv_file = import_file(tmp_path, accounts, batch)
        process = run_until_paused(
            ["override", "import", str(csv_file), "--actor", "kim"], point, times)
        kill(process)
        if assert_all_or_nothing(batch, accounts):
            visible_batch = batch
        done = balances(*(part.format(alpha=accounts["alpha_dental"][0],
                                      beta=accounts["beta_dental"][0]) for part in then))
        assert "Traceback" not in done.stderr
        assert_all_or_nothing(batch, accounts)
        if visible_batch is not None:
            assert_visible(visible_batch, accounts)
    assert visible_batch == len(KILLS), "the last kill points are all after the commit"


def test_a_kill_after_the_commit_is_completed_by_the_next_staff_change(two_practices) -> None:
    simulated, accounts, tmp_path = two_practices
    process = run_until_paused(
        ["override", "import", str(import_file(tmp_path, accounts, 1)), "--actor", "kim"],
        "publish", 1)
    kill(process)
    assert committed(1) == everything(accounts)
    assert sorted(pending()) == [(p,) for p in PRACTICES]
    assert query("SELECT * FROM active_overrides") == []  # committed, not published yet
    # A staff change of one account of alpha (as the launchpad job makes it): alpha's
    # pending republish comes first, so the new override replaces batch 1's there.
    account_id = accounts["alpha_dental"][0]
    practices = simulated.practices
    set_overrides(layout(), practices, [build_request(
        practices, "alpha_dental", account_id, "99.00", None, "later", "lee")])
    [row] = query("SELECT patient_portion FROM outstanding_balances"
                  " WHERE practice_id = 'alpha_dental' AND account_id = ?", [account_id])
    assert row["patient_portion"] == Decimal("99.00")
    replaced = query("SELECT count(*) AS n FROM override_events WHERE event = 'replaced'"
                     " AND practice_id = 'alpha_dental' AND account_id = ?", [account_id])
    assert replaced[0]["n"] == 1
    assert pending() == [("beta_dental",)]
    # Any `balances` staff command publishes every practice's pending changes first.
    done = balances("block", "set", "--practice", "alpha_dental", "--account", account_id,
                    "--reason", "dispute", "--actor", "lee")
    assert "interrupted command had committed (beta_dental)" in done.stderr
    assert pending() == []
    assert len(query("SELECT * FROM active_overrides WHERE reason = 'batch 1'")) == (
        2 * PER_PRACTICE - 1)
    assert len(query("SELECT * FROM account_blocks")) == 1


@pytest.mark.operations
def test_an_import_killed_at_random_times_is_all_or_nothing(two_practices) -> None:
    """The real console script, SIGKILLed at random moments of its run (seeded, bounded)."""
    simulated, accounts, tmp_path = two_practices
    started = time.monotonic()
    balances("override", "import", str(import_file(tmp_path, accounts, 0)), "--actor", "kim")
    duration = time.monotonic() - started
    assert_visible(0, accounts)
    chooser = random.Random(20240607)
    visible_batch = 0
    for batch in range(1, 9):
        process = subprocess.Popen(
            [BALANCES, "override", "import", str(import_file(tmp_path, accounts, batch)),
             "--actor", "kim"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=os.environ,
        )
        time.sleep(chooser.uniform(0.3 * duration, 1.0 * duration))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if assert_all_or_nothing(batch, accounts):
            visible_batch = batch
        balances("override", "list")
        assert_visible(visible_batch, accounts)
