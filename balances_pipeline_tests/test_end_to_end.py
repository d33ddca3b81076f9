"""End to end in real processes: the `dagster asset materialize` CLI, a killed sync, and an
analyst process holding `warehouse.duckdb` open for the whole duration of syncs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import Faults
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_query as query

DAGSTER = str(Path(sys.executable).parent / "dagster")


def materialize_command(practice_id: str) -> list[str]:
    return [
        DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions",
        "--select", "*", "--partition", practice_id,
    ]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home




def test_cli_materialize_syncs_one_practice(simulated, dagster_home) -> None:
    done = subprocess.run(
        materialize_command("beta_dental"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    as_of = query("SELECT DISTINCT as_of_date FROM account_balances")[0][0]
    report = simulated.server.aging_report("beta_dental", as_of)
    rows = query(
        "SELECT account_id, balance_total FROM account_balances WHERE practice_id = 'beta_dental'"
    )
    assert {account: total for account, total in rows} == {
        str(row["PatNum"]): row["BalTotal"] for row in report
    }
    assert query("SELECT practice_id, status FROM sync_runs") == [("beta_dental", "success")]
    assert query("SELECT count(*) FROM account_balances WHERE practice_id <> 'beta_dental'") == [
        (0,)
    ]


def test_a_killed_sync_leaves_the_previous_data(simulated, dagster_home) -> None:
    practice = simulated.practice("alpha_dental")
    first = sync_practice(practice)
    before = query("SELECT * FROM account_balances ORDER BY account_id")
    simulated.server.set_faults("alpha_dental", Faults(slow_seconds=30))
    worker = subprocess.Popen(
        materialize_command("alpha_dental"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    staging = layout().staging_dir("alpha_dental")
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(staging.iterdir())) and time.monotonic() < deadline:
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    assert staging.is_dir(), "the sync never reached extraction"
    time.sleep(0.5)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    assert query("SELECT * FROM account_balances ORDER BY account_id") == before
    simulated.server.clear_faults("alpha_dental")
    second = sync_practice(practice)
    statuses = query("SELECT sync_id, status, error FROM sync_runs ORDER BY started_at")
    assert [s[1] for s in statuses] == ["success", "failed", "success"]
    assert statuses[0][0] == first.sync_id and statuses[2][0] == second.sync_id
    assert statuses[1][2].startswith("abandoned")
    assert [p.name for p in staging.iterdir()] == []


ANALYST = str(Path(__file__).with_name("analyst_process.py"))


def test_an_analyst_holding_the_warehouse_never_blocks_a_sync(simulated, tmp_path) -> None:
    practice = simulated.practice("alpha_dental")
    first = sync_practice(practice)
    stop_file, out = tmp_path / "stop", tmp_path / "analyst.json"
    analyst = subprocess.Popen(
        [sys.executable, ANALYST, str(layout().warehouse_path), str(stop_file), str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "connected"
        simulated.server.advance_clock(3, "alpha_dental")
        outcomes = [sync_practice(practice) for _ in range(3)]
        time.sleep(0.3)
    finally:
        stop_file.touch()
        analyst.wait(timeout=60)
    report = json.loads(out.read_text())
    assert report["errors"] == []
    counts = {first.sync_id: first.accounts} | {o.sync_id: o.accounts for o in outcomes}
    seen = [[row[1:] for row in rows if row[0] == "alpha_dental"] for rows in report["seen"]]
    for rows in seen:
        assert len(rows) == 1, f"a query saw a mix of syncs: {rows}"
        sync_id, count = rows[0]
        assert counts[sync_id] == int(count)
    seen_ids = {rows[0][0] for rows in seen}
    assert first.sync_id in seen_ids and outcomes[-1].sync_id in seen_ids
    assert seen[-1][0][0] == outcomes[-1].sync_id
