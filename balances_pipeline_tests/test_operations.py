"""The operational side, end to end in real processes (issue 3).

One `dagster dev` (webserver + daemon + code server) is shared by the module: it serves
eight simulated practices with a temporary `DAGSTER_HOME` (the repository's `dagster.yaml`
with faster run-monitoring intervals, see `dagster_dev_process.TEST_INSTANCE_OVERRIDES`).
Runs are launched through the GraphQL API; the UI is read by a headless Chromium; a
crashed run is a real SIGKILL of its worker process; failure alerts reach a webhook served
by the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest

from balances_pipeline.simulator import Faults, SimPractice, SimulatorServer
from balances_pipeline.storage.layout import Layout
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    write_practices_file,
)
from balances_pipeline_tests.dagster_dev_process import (
    LOCATION_NAME,
    REPOSITORY,
    REPOSITORY_NAME,
    DagsterDev,
    WebhookReceiver,
    dagster_dev_env,
)
from balances_pipeline_tests.operations_helpers import (
    RUN_TIMES,
    RUNS_WITH_TAG,
    SCHEDULES,
    Operations,
    assert_matches_source,
    chromium,
    ensure_published,
    failure_details,
    query,
    rendered_text,
    run_status,
    run_times,
    wait_for_runs,
    wait_until,
)

# Eight practices in different time zones (accounts kept small: 2 cores run all of them).
PRACTICES = {
    "alpha_dental": ("America/Chicago", 300),
    "beta_dental": ("America/New_York", 120),
    "gamma_dental": ("America/Los_Angeles", 60),
    "delta_dental": ("America/Denver", 150),
    "epsilon_dental": ("America/Phoenix", 90),
    "zeta_dental": ("Pacific/Honolulu", 200),
    "eta_dental": ("America/Anchorage", 80),
    "theta_dental": ("Europe/London", 100),
}
ASSETS = ["source_extract", "account_balances", "outstanding_balances", "aging_summary"]
SOURCE_LATENCY_SECONDS = 1.0  # per request, in the load test
ARTIFACTS = REPOSITORY / "test-artifacts"

# dagster-graphql's client still calls gql with arguments gql deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gql")


def _off_hours(zone: str) -> str:
    """A daily sync time twelve hours away, so that no schedule ticks during the tests."""
    later = datetime.now(ZoneInfo(zone)) + timedelta(hours=12)
    return later.strftime("%H:%M")


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operations]:
    tmp = tmp_path_factory.mktemp("operations")
    keys = {DEVELOPER_KEY_ENV: secrets.token_hex(16)}
    sim_practices = []
    for index, (practice_id, (_, accounts)) in enumerate(PRACTICES.items()):
        key = secrets.token_hex(16)
        keys[f"TEST_{practice_id.upper()}_CUSTOMER_KEY"] = key
        sim_practices.append(SimPractice(practice_id, key, accounts=accounts, seed=300 + index))
    home = Layout((tmp / "balances_home").resolve()).ensure()
    sync_at = {practice_id: _off_hours(zone) for practice_id, (zone, _) in PRACTICES.items()}
    with SimulatorServer(sim_practices, keys[DEVELOPER_KEY_ENV]) as server, \
            WebhookReceiver() as webhook:
        entries = [
            practice_entry(
                practice_id, server.url, timezone=zone,
                sync={"frequency": "daily", "at": sync_at[practice_id]},
                source={"max_retries": 3},
            )
            for practice_id, (zone, _) in PRACTICES.items()
        ]
        practices_file = write_practices_file(tmp / "practices.yaml", entries)
        env = dagster_dev_env(keys, home.home, practices_file, webhook.url,
                              tmp / "dagster_home")
        dev = DagsterDev(tmp / "dagster_home", env, tmp / "dagster_dev.log")
        try:
            dev.start()
            print(f"dagster dev up in {dev.startup_seconds:.1f} s on {dev.url}")
            yield Operations(server, dev, webhook, home, keys, sync_at)
        finally:
            dev.stop()  # the whole process tree, whatever happened
            if dev.log_path.exists():  # kept for a look after a failure in CI
                ARTIFACTS.mkdir(exist_ok=True)
                shutil.copyfile(dev.log_path, ARTIFACTS / "operations-dagster-dev.log")


# --- 1. the webserver and its GraphQL API ----------------------------------------------------


def test_a_sync_launched_through_graphql_publishes_the_practice(ops: Operations) -> None:
    started = time.monotonic()
    run_id = ops.dev.launch_sync("beta_dental")
    status = wait_for_runs(ops, [run_id])[run_id]
    print(f"one sync through GraphQL: {time.monotonic() - started:.1f} s")
    assert status == "SUCCESS", failure_details(ops, run_id)

    assert_matches_source(ops, "beta_dental")
    runs = query(
        ops, "SELECT status, dagster_run_id FROM sync_runs WHERE practice_id = 'beta_dental'"
    )
    assert ("success", run_id) in runs
    # Only the requested partition ran: no other practice was touched by this run.
    others = query(
        ops, "SELECT DISTINCT practice_id FROM sync_runs WHERE dagster_run_id = ?", [run_id]
    )
    assert others == [("beta_dental",)]
    run = ops.dev.graphql(RUN_TIMES, {"runId": run_id})["runOrError"]
    assert {"key": "dagster/partition", "value": "beta_dental"} in run["tags"]


def test_every_practice_has_a_running_schedule_in_its_time_zone(ops: Operations) -> None:
    schedules = ops.dev.graphql(
        SCHEDULES, {"location": LOCATION_NAME, "repository": REPOSITORY_NAME}
    )["schedulesOrError"]["results"]
    found = {s["name"]: s for s in schedules}
    assert set(found) == {f"sync_{practice_id}" for practice_id in PRACTICES}
    for practice_id, (zone, _) in PRACTICES.items():
        schedule = found[f"sync_{practice_id}"]
        assert schedule["executionTimezone"] == zone
        # Running as deployed: nobody has to switch schedules on in the UI.
        assert schedule["scheduleState"]["status"] == "RUNNING"
        hour, minute = (int(part) for part in ops.sync_at[practice_id].split(":"))
        assert schedule["cronSchedule"] == f"{minute} {hour} * * *"


# --- 2. a real browser on the UI -------------------------------------------------------------


def test_the_ui_shows_the_assets_and_the_schedules_in_a_real_browser(
    ops: Operations, tmp_path: Path
) -> None:
    ensure_published(ops, "beta_dental")
    # What the "Join the Dagster community" dialog's Skip button does, so that it does not
    # cover the screenshot.
    assert ops.dev.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    profile = tmp_path / "chromium-profile"
    started = time.monotonic()

    text = rendered_text(ops, profile, "/assets", ASSETS)
    assert "balances_pipeline" in text  # the code location
    assert "One row per account, as synced" in text  # the asset's description

    schedules = [f"sync_{practice_id}" for practice_id in PRACTICES]
    sensors = ["report_failed_syncs", "report_stale_practices"]
    rendered_text(ops, profile, "/automation", schedules + sensors)

    # A schedule's page shows its practice's time zone.
    schedule_page = "/locations/balances_pipeline/schedules/sync_zeta_dental"
    rendered_text(ops, profile, schedule_page, ["sync_zeta_dental", "Pacific/Honolulu"])

    ARTIFACTS.mkdir(exist_ok=True)
    for name, path in [("assets", "/assets"), ("automation", "/automation")]:
        shot = ARTIFACTS / f"dagster-ui-{name}.png"
        shot.unlink(missing_ok=True)
        done = chromium(
            profile, f"--screenshot={shot}", "--window-size=1400,900", f"{ops.dev.url}{path}"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    print(f"browser checks: {time.monotonic() - started:.1f} s")


# --- 3. load: every practice at once, an analyst querying throughout ------------------------

ANALYST = str(Path(__file__).with_name("analyst_process.py"))


def test_eight_practices_sync_at_once_while_an_analyst_queries(
    ops: Operations, tmp_path: Path
) -> None:
    ensure_published(ops, "beta_dental")  # the analyst opens an existing warehouse
    stop_file, out = tmp_path / "stop", tmp_path / "analyst.json"
    analyst = subprocess.Popen(
        [sys.executable, ANALYST, str(ops.layout.warehouse_path), str(stop_file),
         str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "connected", analyst.stderr.read()
        # A practice's PMS answers slowly, as over the internet: syncs are mostly waiting.
        for practice_id in PRACTICES:
            ops.server.set_faults(practice_id, Faults(slow_seconds=SOURCE_LATENCY_SECONDS))
        started = time.monotonic()
        run_ids = {practice_id: ops.dev.launch_sync(practice_id) for practice_id in PRACTICES}
        launched = time.monotonic() - started
        statuses = wait_for_runs(ops, list(run_ids.values()))
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the analyst also queries after the last publish
    finally:
        ops.server.clear_faults()
        stop_file.touch()
        analyst.wait(timeout=60)
    print(f"{len(run_ids)} syncs: launched in {launched:.1f} s, all finished in {elapsed:.1f} s")

    failed = {p: failure_details(ops, r) for p, r in run_ids.items() if statuses[r] != "SUCCESS"}
    assert not failed, failed
    assert analyst.returncode == 0, analyst.stderr.read()
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert len(report["seen"]) > 10, "the analyst hardly queried during the syncs"

    # They went through the run queue together, not one after the other.
    times = [run_times(ops, run_id) for run_id in run_ids.values()]
    edges = sorted([(start, 1) for start, _ in times] + [(end, -1) for _, end in times])
    in_progress = [0]
    for _, step in edges:
        in_progress.append(in_progress[-1] + step)
    print(f"at most {max(in_progress)} syncs in progress at once")
    assert max(in_progress) >= 2, times

    for practice_id, run_id in run_ids.items():
        assert_matches_source(ops, practice_id)
        assert ("success",) in query(
            ops, "SELECT status FROM sync_runs WHERE dagster_run_id = ?", [run_id]
        )

    # Never half a practice, never a mix of two syncs: every query saw, for each practice,
    # exactly one complete sync.
    accounts = dict(query(ops, "SELECT sync_id, accounts FROM sync_runs WHERE status = 'success'"))
    final = {row[0]: row[1] for row in report["seen"][-1]}
    assert set(final) == set(PRACTICES)
    for rows in report["seen"]:
        practices = [row[0] for row in rows]
        assert len(practices) == len(set(practices)), f"a query saw a mix of syncs: {rows}"
        for _practice_id, sync_id, count in rows:
            assert sync_id in accounts, f"published data of sync {sync_id}, not a successful sync"
            assert accounts[sync_id] == int(count), rows
    for practice_id, run_id in run_ids.items():
        sync_id = query(
            ops, "SELECT sync_id FROM sync_runs WHERE dagster_run_id = ?", [run_id]
        )[0][0]
        assert final[practice_id] == sync_id, f"{practice_id}: the analyst's last query"


# --- 4. fault: a run worker killed mid-sync --------------------------------------------------


def test_a_killed_run_keeps_the_previous_data_is_reported_and_retried(ops: Operations) -> None:
    practice_id = "gamma_dental"
    ensure_published(ops, practice_id)
    before = query(
        ops, "SELECT * FROM account_balances WHERE practice_id = ? ORDER BY account_id",
        [practice_id],
    )
    summary_before = query(
        ops, "SELECT * FROM aging_summary WHERE practice_id = ?", [practice_id]
    )
    assert before and summary_before

    ops.server.set_faults(practice_id, Faults(slow_seconds=20))
    staging = ops.layout.staging_dir(practice_id)
    try:
        run_id = ops.dev.launch_sync(practice_id)
        wait_until(lambda: run_status(ops, run_id) == "STARTED", 90, "the run to start")
        wait_until(
            lambda: staging.is_dir() and any(staging.iterdir()), 90,
            "the extract to write its staging area",
        )
        pid = wait_until(lambda: ops.dev.run_worker_pid(run_id), 30, "the worker's pid")
        worker = psutil.Process(pid)
        assert worker in ops.dev.descendants(), "the pid is not a process of dagster dev"
        # It is the process extracting this practice: it holds the staging database open.
        wait_until(
            lambda: any(f.path.startswith(str(staging)) for f in worker.open_files()), 10,
            "the worker to hold the staging database open",
        )
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        # The code server notices the dead worker; the run is marked failed.
        wait_until(
            lambda: run_status(ops, run_id) == "FAILURE", 90, "the killed run to be FAILURE",
            interval=0.5,
        )
        print(f"killed run marked FAILURE after {time.monotonic() - killed_at:.1f} s")
        # The previous sync is still what everybody reads.
        assert query(
            ops, "SELECT * FROM account_balances WHERE practice_id = ? ORDER BY account_id",
            [practice_id],
        ) == before
        assert query(
            ops, "SELECT * FROM aging_summary WHERE practice_id = ?", [practice_id]
        ) == summary_before
    finally:
        ops.server.clear_faults(practice_id)

    # The failure sensor reports the run: a webhook post with ids and an error class only.
    def reported() -> dict | None:
        for alert in ops.webhook.alerts():
            if alert.get("kind") == "sync_failed" and alert.get("run_id") == run_id:
                return alert
        return None

    alert = wait_until(reported, 90, "the sync_failed webhook post", interval=1)
    line = f"sync_failed: practice={practice_id} run={run_id} error_class={alert['error_class']}"
    wait_until(lambda: line in ops.dev.log_text(), 30, "the sensor's log line")
    assert alert["practice_id"] == practice_id
    assert alert["error_class"]
    assert set(alert) == {"kind", "practice_id", "run_id", "error_class", "at"}
    for body in ops.webhook.raw():
        for name, secret in ops.keys.items():
            assert secret.encode() not in body, f"the webhook received {name}"
        assert b"Gamma Dental" not in body  # never a practice's name

    # run_retries (dagster.yaml) retries a crashed run once; with the source healthy again,
    # the retry succeeds without any manual cleanup.
    def retry_run() -> dict | None:
        runs = ops.dev.graphql(
            RUNS_WITH_TAG, {"key": "dagster/parent_run_id", "value": run_id}
        )["runsOrError"]["results"]
        return runs[0] if runs else None

    retry = wait_until(retry_run, 90, "run_retries to launch a retry", interval=1)
    assert {"key": "dagster/partition", "value": practice_id} in retry["tags"]
    status = wait_for_runs(ops, [retry["runId"]])[retry["runId"]]
    assert status == "SUCCESS", failure_details(ops, retry["runId"])

    assert_matches_source(ops, practice_id)
    statuses = dict(
        query(
            ops, "SELECT dagster_run_id, status FROM sync_runs WHERE practice_id = ?",
            [practice_id],
        )
    )
    assert statuses[retry["runId"]] == "success"
    assert statuses.get(run_id) == "failed", statuses  # the dead sync, marked abandoned
    assert list(staging.iterdir()) == [], "the dead sync's staging area was not cleaned"
    # Only the killed run was reported: the retry's success is not an alert.
    failed_alerts = [a for a in ops.webhook.alerts() if a.get("kind") == "sync_failed"]
    assert [a["run_id"] for a in failed_alerts] == [run_id]
