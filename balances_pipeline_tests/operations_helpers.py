"""Helpers of test_operations.py: a `dagster dev` under test, its runs, the warehouse, Chromium.

`Operations` is what the module's `ops` fixture yields: the simulator, `dagster dev`
(`dagster_dev_process.DagsterDev`), the webhook receiver and the BALANCES_HOME they share.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.simulator import SimulatorServer
from balances_pipeline.storage.layout import Layout
from balances_pipeline_tests.dagster_dev_process import DagsterDev, WebhookReceiver

RUN_TIMEOUT_SECONDS = 180
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class Operations:
    server: SimulatorServer
    dev: DagsterDev
    webhook: WebhookReceiver
    layout: Layout
    keys: dict[str, str]
    sync_at: dict[str, str]  # each practice's daily sync time, local


# --- runs and the warehouse ------------------------------------------------------------


def query(ops: Operations, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(ops.layout.warehouse_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def run_status(ops: Operations, run_id: str) -> str:
    return ops.dev.client().get_run_status(run_id).value


def wait_for_runs(
    ops: Operations, run_ids: list[str], timeout: float = RUN_TIMEOUT_SECONDS
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while True:
        statuses = {run_id: run_status(ops, run_id) for run_id in run_ids}
        if all(status in FINISHED for status in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"runs not finished in {timeout} s: {statuses}\n{ops.dev.log_tail()}")
        time.sleep(1)


def sync(ops: Operations, practice_id: str) -> str:
    run_id = ops.dev.launch_sync(practice_id)
    status = wait_for_runs(ops, [run_id])[run_id]
    assert status == "SUCCESS", failure_details(ops, run_id)
    return run_id


def failure_details(ops: Operations, run_id: str) -> str:
    messages = [m for m in ops.dev.run_messages(run_id) if m]
    return f"run {run_id}:\n" + "\n".join(messages[-30:])


def published_balances(ops: Operations, practice_id: str) -> dict[str, object]:
    rows = query(
        ops,
        "SELECT account_id, balance_total FROM account_balances WHERE practice_id = ?",
        [practice_id],
    )
    return dict(rows)


def assert_matches_source(ops: Operations, practice_id: str) -> None:
    as_of = query(
        ops, "SELECT DISTINCT as_of_date FROM account_balances WHERE practice_id = ?",
        [practice_id],
    )
    assert len(as_of) == 1, f"{practice_id}: {as_of}"
    report = ops.server.aging_report(practice_id, as_of[0][0])
    published = published_balances(ops, practice_id)
    assert len(published) == len(report), practice_id
    assert published == {str(row["PatNum"]): row["BalTotal"] for row in report}, practice_id


def ensure_published(ops: Operations, practice_id: str) -> None:
    """Each test can run alone: sync the practice once if nothing is published yet."""
    if ops.layout.warehouse_path.exists() and published_balances(ops, practice_id):
        return
    sync(ops, practice_id)


SCHEDULES = """
query Schedules($location: String!, $repository: String!) {
  schedulesOrError(
    repositorySelector: {repositoryLocationName: $location, repositoryName: $repository}
  ) {
    __typename
    ... on Schedules {
      results { name cronSchedule executionTimezone scheduleState { status } }
    }
  }
}
"""

RUN_TIMES = """
query RunTimes($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status startTime endTime tags { key value } }
  }
}
"""

RUNS_WITH_TAG = """
query RunsWithTag($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def run_times(ops: Operations, run_id: str) -> tuple[float, float]:
    run = ops.dev.graphql(RUN_TIMES, {"runId": run_id})["runOrError"]
    return run["startTime"], run["endTime"]


# --- a real browser -------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
]


def chromium_binary() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")


def chromium(profile: Path, *args: str, budget_ms: int = 20000) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--virtual-time-budget={budget_ms}", *args],
        capture_output=True, text=True, timeout=120,
    )


def visible_text(dom: str) -> str:
    """The rendered page's text: scripts, styles and tags removed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def rendered_text(ops: Operations, profile: Path, path: str, expected: list[str]) -> str:
    """The page's rendered text once it shows `expected` (the UI is a JS app: the first
    HTML is an empty shell; its data arrives over GraphQL)."""
    text = ""
    for budget in (20000, 60000):
        done = chromium(profile, "--dump-dom", f"{ops.dev.url}{path}", budget_ms=budget)
        assert done.returncode == 0, done.stderr[-3000:]
        text = visible_text(done.stdout)
        if all(name in text for name in expected):
            return text
    missing = [name for name in expected if name not in text]
    pytest.fail(f"{path} does not show {missing}; rendered text: {text[:3000]}")



# --- waiting ----------------------------------------------------------------------------


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)

