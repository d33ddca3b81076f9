"""A failed sync is alerted however it was started (fault: a sync run with `dagster asset
materialize` failed while the daemon ran with `BALANCES_ALERT_WEBHOOK_URL` set, and no alert
came: the run failure sensor saw only the runs of its own code location).

`dagster dev` (webserver, daemon, code server) runs with a webhook receiver; a sync started
from the command line, against the same instance (`DAGSTER_HOME`), fails on bad
credentials. The daemon's sensor must post its alert, and log its line.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline.storage.layout import Layout
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    write_practices_file,
)
from balances_pipeline_tests.dagster_dev_process import DagsterDev, WebhookReceiver, dagster_dev_env
from balances_pipeline_tests.operations_helpers import RUNS_WITH_TAG, wait_until

PRACTICES = {"gamma_dental": 60, "delta_dental": 40}
DAGSTER = str(Path(sys.executable).parent / "dagster")
SENSOR_TICK = "Checking for new runs for sensor: report_failed_syncs"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gql")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterDev, WebhookReceiver,
                                                                    dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("cli_alerts")
    keys = {DEVELOPER_KEY_ENV: secrets.token_hex(16)}
    sim_practices = []
    for index, (practice_id, accounts) in enumerate(PRACTICES.items()):
        key = secrets.token_hex(16)
        keys[f"TEST_{practice_id.upper()}_CUSTOMER_KEY"] = key
        sim_practices.append(SimPractice(practice_id, key, accounts=accounts, seed=500 + index))
    home = Layout((tmp / "balances_home").resolve()).ensure()
    with SimulatorServer(sim_practices, keys[DEVELOPER_KEY_ENV]) as server, \
            WebhookReceiver() as webhook:
        # Daily at a time twelve hours away in UTC: no schedule ticks during the test.
        entries = [
            practice_entry(practice_id, server.url, timezone="UTC",
                           sync={"frequency": "daily", "at": "00:00"},
                           source={"max_retries": 0})
            for practice_id in PRACTICES
        ]
        practices_file = write_practices_file(tmp / "practices.yaml", entries)
        env = dagster_dev_env(keys, home.home, practices_file, webhook.url,
                              tmp / "dagster_home")
        process = DagsterDev(tmp / "dagster_home", env, tmp / "dagster_dev.log")
        try:
            process.start()
            yield process, webhook, env
        finally:
            process.stop()


def test_a_failed_sync_started_from_the_command_line_is_alerted(dev) -> None:
    process, webhook, env = dev
    practice_id = "gamma_dental"
    # The sensor reports failures after its first evaluation: wait for it.
    wait_until(lambda: SENSOR_TICK in process.log_text(), 120, "the sensor's first tick",
               interval=1)

    # The command line, against the same instance, with a customer key the PMS refuses.
    bad_env = {**env, f"TEST_{practice_id.upper()}_CUSTOMER_KEY": "not-the-key"}
    done = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions",
         "--select", "*", "--partition", practice_id],
        env=bad_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0, "the sync was meant to fail"

    runs = process.graphql(RUNS_WITH_TAG, {"key": "dagster/partition", "value": practice_id})
    [run] = runs["runsOrError"]["results"]
    assert run["status"] == "FAILURE"
    run_id = run["runId"]

    def alerted() -> dict | None:
        for alert in webhook.alerts():
            if alert.get("kind") == "sync_failed" and alert.get("run_id") == run_id:
                return alert
        return None

    alert = wait_until(alerted, 120, "the sync_failed webhook post", interval=1)
    assert alert["practice_id"] == practice_id
    assert alert["error_class"]
    assert set(alert) == {"kind", "practice_id", "run_id", "error_class", "at"}
    line = f"sync_failed: practice={practice_id} run={run_id} error_class={alert['error_class']}"
    wait_until(lambda: line in process.log_text(), 30, "the sensor's log line")
    for body in webhook.raw():
        assert b"not-the-key" not in body
    assert [a["run_id"] for a in webhook.alerts() if a.get("kind") == "sync_failed"] == [run_id]
