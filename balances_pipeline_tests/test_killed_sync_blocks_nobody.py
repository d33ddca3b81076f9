"""A sync killed at any step blocks no other sync (fault: a `dagster asset materialize` run
SIGKILLed during its transform-and-publish step kept a Dagster pool slot, and with a limit
of one every later sync of every practice waited for it).

Publishing is serialized by per-practice file locks only, which the OS releases when a
process dies. Each test runs `dagster asset materialize` with a `DAGSTER_HOME` holding the
repository's `dagster.yaml`, pauses it at one step of a sync (`dagster_pause_process.py`),
SIGKILLs its whole process group, and then syncs another practice and the same one, each
within a bounded time and with no manual clean-up. Until the same practice syncs again, its
previous data stays what analysts read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_query as query
from balances_pipeline_tests.dagster_dev_process import REPOSITORY

DAGSTER = str(Path(sys.executable).parent / "dagster")
PAUSE = str(Path(__file__).with_name("dagster_pause_process.py"))
KILLED, OTHER = "alpha_dental", "beta_dental"
# A run that waits for anything held by the killed one (a pool slot, a lock) fails here.
RUN_TIMEOUT_SECONDS = 240
PAUSE_TIMEOUT_SECONDS = 240


def materialize_arguments(practice_id: str) -> list[str]:
    return ["asset", "materialize", "-m", "balances_pipeline.definitions", "--select", "*",
            "--partition", practice_id]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(mode=0o700)
    shutil.copyfile(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def materialize(practice_id: str) -> float:
    """Sync the practice with `dagster asset materialize`; the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [DAGSTER, *materialize_arguments(practice_id)], capture_output=True, text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return time.monotonic() - started


def kill_at(point: str, practice_id: str) -> None:
    run = subprocess.Popen(
        [sys.executable, PAUSE, point, *materialize_arguments(practice_id)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + PAUSE_TIMEOUT_SECONDS
        for line in run.stdout:
            if line.strip() == f"paused at {point}":
                break
            assert time.monotonic() < deadline, f"never paused at {point}"
        else:
            pytest.fail(f"the run ended before {point}: {run.stderr.read()[-4000:]}")
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL


def balances(practice_id: str) -> list[tuple]:
    return query("SELECT * FROM account_balances WHERE practice_id = ? ORDER BY account_id",
                 [practice_id])


def assert_matches_source(simulated, practice_id: str) -> None:
    as_of = query("SELECT DISTINCT as_of_date FROM account_balances WHERE practice_id = ?",
                  [practice_id])[0][0]
    report = simulated.server.aging_report(practice_id, as_of)
    rows = query("SELECT account_id, balance_total FROM account_balances WHERE practice_id = ?",
                 [practice_id])
    assert dict(rows) == {str(row["PatNum"]): row["BalTotal"] for row in report}


@pytest.mark.parametrize("point", ["extract", "between", "publish", "swap"])
def test_a_sync_killed_at_any_step_blocks_no_sync(simulated, dagster_home, point) -> None:
    sync_practice(simulated.practice(KILLED))
    simulated.server.advance_clock(2, KILLED)  # the killed sync would publish other figures
    before = balances(KILLED)
    summary_before = query("SELECT * FROM aging_summary WHERE practice_id = ?", [KILLED])

    kill_at(point, KILLED)

    # Nothing of the killed sync is what analysts read.
    assert balances(KILLED) == before
    assert query("SELECT * FROM aging_summary WHERE practice_id = ?", [KILLED]) == summary_before
    other = materialize(OTHER)
    assert_matches_source(simulated, OTHER)
    assert balances(KILLED) == before  # syncing another practice does not touch it
    same = materialize(KILLED)
    print(f"killed at {point}: then {OTHER} synced in {other:.1f} s, {KILLED} in {same:.1f} s")
    assert_matches_source(simulated, KILLED)
    assert balances(KILLED) != before

    statuses = query("SELECT status, error FROM sync_runs WHERE practice_id = ?"
                     " ORDER BY started_at", [KILLED])
    if point == "swap":
        # Committed before the kill: a success, rolled forward by the next sync.
        assert [s for s, _ in statuses] == ["success", "success", "success"]
    else:
        assert [s for s, _ in statuses] == ["success", "failed", "success"]
        assert statuses[1][1].startswith(("abandoned", "superseded")), statuses[1][1]
    # The dead sync's staging file (patient rows) is gone once the practice synced again:
    # one killed while extracting goes with the next extraction, one killed while
    # publishing with the next publish.
    assert list(layout().staging_dir(KILLED).iterdir()) == []
