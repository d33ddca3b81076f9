"""Many practices in one Dagster run: a partition range synced by one run, each practice
isolated (its own sync, publish, sync_runs row, metadata and check results); one practice's
failure alone; retries within the practice; grouped schedules.

Real Dagster runs (`materialize` with the range tags, as `dagster asset materialize
--partition-range` and a grouped schedule's tick set them) against the simulator over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RetryPolicy,
    build_run_status_sensor_context,
    materialize,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from balances_pipeline.defs import sensors
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.fleet import FAILED_PRACTICES
from balances_pipeline.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.settings import Settings
from balances_pipeline.simulator import Faults
from balances_pipeline_tests.conftest import practice_entry, write_practices_file
from balances_pipeline_tests.conftest import warehouse_query as query
from balances_pipeline_tests.test_checks_per_practice import ALL_CHECKS, latest
from balances_pipeline_tests.webhook_double import webhook_receiver

PRACTICES = ["alpha_dental", "beta_dental", "gamma_dental"]
DAGSTER = str(Path(sys.executable).parent / "dagster")
FAST = RetryPolicy(max_retries=2, delay=0.01)


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def run_range(simulated, instance, first="alpha_dental", last="gamma_dental", policy=FAST):
    return materialize(
        build_sync_assets(practice_partitions(simulated.practices), retry_policy=policy),
        instance=instance, resources=resources_from(Settings.from_env()),
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last}, raise_on_error=False,
    )


def exact(simulated, practice_id: str) -> None:
    """The practice's published balances are the simulator's aging report, to the cent."""
    [(as_of,)] = query("SELECT DISTINCT as_of_date FROM account_balances WHERE practice_id = ?",
                       [practice_id])
    report = simulated.server.aging_report(practice_id, as_of)
    rows = query("SELECT account_id, balance_total FROM account_balances WHERE practice_id = ?",
                 [practice_id])
    assert dict(rows) == {str(row["PatNum"]): row["BalTotal"] for row in report}
    assert report


def sync_rows() -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for practice_id, status, run_id, sync_id, error_class in query(
        "SELECT practice_id, status, dagster_run_id, sync_id, error_class FROM sync_runs"
        " ORDER BY started_at"
    ):
        found.setdefault(practice_id, []).append((status, run_id, sync_id, error_class))
    return found


def materialization(instance, asset: str, practice_id: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[practice_id]), limit=1,
    ).records
    return records[0] if records else None


def test_a_range_of_practices_syncs_in_one_run_each_on_its_own(simulated, instance) -> None:
    result = run_range(simulated, instance)
    assert result.success
    rows = sync_rows()
    assert set(rows) == set(PRACTICES)
    for practice_id in PRACTICES:
        exact(simulated, practice_id)
        [(status, run_id, sync_id, _)] = rows[practice_id]
        assert (status, run_id) == ("success", result.run_id)
        # Its own materializations, with its own metadata, in its own partition.
        for asset in ("source_extract", "account_balances", "aging_summary",
                      "collection_targets"):
            record = materialization(instance, asset, practice_id)
            assert record is not None and record.run_id == result.run_id, (asset, practice_id)
            metadata = record.asset_materialization.metadata
            if asset != "collection_targets":
                assert metadata["sync_id"].value == sync_id, (asset, practice_id)
        accounts = materialization(instance, "account_balances", practice_id)
        assert accounts.asset_materialization.metadata["accounts"].value == query(
            "SELECT count(*) FROM account_balances WHERE practice_id = ?", [practice_id])[0][0]
        # Its own check results, about its own partition's materialization.
        for key in ALL_CHECKS:
            check = latest(instance, key, practice_id)
            assert check is not None and check.partition == practice_id, (key, practice_id)
            assert check.status == AssetCheckExecutionRecordStatus.SUCCEEDED, key
            target = check.event.asset_check_evaluation.target_materialization_data
            assert target.run_id == result.run_id
            assert target.storage_id == materialization(
                instance, key.asset_key.path[-1], practice_id).storage_id
    # One run: every step ran once, for every practice.
    steps = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START]
    assert sorted(steps) == ["collection_targets", "practice_balances", "source_extract"]


def failure_alerts(instance, run_id: str, monkeypatch) -> list[dict]:
    """What report_failed_syncs posts for the run (the daemon's call, made here)."""
    run = instance.get_run_by_id(run_id)
    assert run.status == DagsterRunStatus.FAILURE
    [failure] = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.RUN_FAILURE).records]
    with webhook_receiver() as (url, received):
        monkeypatch.setenv("BALANCES_ALERT_WEBHOOK_URL", url)
        context = build_run_status_sensor_context(
            sensor_name="report_failed_syncs", dagster_event=failure,
            dagster_instance=instance, dagster_run=run,
            resources=resources_from(Settings.from_env()),
        ).for_run_failure()
        sensors.report_failed_syncs(context)
    return received


def test_one_practice_with_a_wrong_key_fails_alone_and_is_alerted(
    simulated, instance, monkeypatch
) -> None:
    monkeypatch.setenv("TEST_BETA_DENTAL_CUSTOMER_KEY", "not-the-key")
    result = run_range(simulated, instance)
    assert not result.success
    rows = sync_rows()
    for practice_id in ("alpha_dental", "gamma_dental"):
        exact(simulated, practice_id)
        assert [row[:2] for row in rows[practice_id]] == [("success", result.run_id)]
        assert materialization(instance, "collection_targets", practice_id) is not None
        assert latest(instance, ALL_CHECKS[0], practice_id).status == (
            AssetCheckExecutionRecordStatus.SUCCEEDED)
    [(status, run_id, _, error_class)] = rows["beta_dental"]
    assert (status, run_id) == ("failed", result.run_id) and error_class
    assert query("SELECT count(*) FROM account_balances WHERE practice_id = 'beta_dental'") == [
        (0,)]
    # No check result and no last-step materialization for the failed practice; the first
    # steps' materializations say it failed (dagster materializes a step's whole range).
    for key in ALL_CHECKS:  # planned for the range, never evaluated for beta
        assert latest(instance, key, "beta_dental").status == (
            AssetCheckExecutionRecordStatus.PLANNED), key
    assert materialization(instance, "collection_targets", "beta_dental") is None
    extract = materialization(instance, "source_extract", "beta_dental")
    assert extract.asset_materialization.metadata["sync_status"].value == "failed"
    # The last step fails, naming it: the run is FAILED.
    [step_failure] = [e for e in result.all_events if e.event_type ==
                      DagsterEventType.STEP_FAILURE]
    assert step_failure.step_key == "collection_targets"
    data = step_failure.step_failure_data.user_failure_data
    assert json.loads(data.metadata[FAILED_PRACTICES].value) == {"beta_dental": error_class}
    assert "1 of 3 practices failed in this run: beta_dental" in data.description
    # Alerted like any failed sync: one alert, for the failed practice, with the run id.
    alerts = failure_alerts(instance, result.run_id, monkeypatch)
    assert [(a["kind"], a["practice_id"], a["run_id"], a["error_class"]) for a in alerts] == [
        ("sync_failed", "beta_dental", result.run_id, error_class)]


def test_a_transient_failure_is_retried_within_its_practice_only(simulated, instance) -> None:
    # Every practice with `max_retries: 1`: an attempt gives up after two requests.
    write_practices_file(simulated.practices_file, [
        practice_entry(pid, simulated.server.url, source={"max_retries": 1}) for pid in PRACTICES
    ])
    # gamma's source answers 503 to the first attempt's two requests, then recovers.
    simulated.server.set_faults("gamma_dental", Faults(server_error_next=2))
    result = run_range(simulated, instance)
    assert result.success
    rows = sync_rows()
    assert [row[0] for row in rows["gamma_dental"]] == ["failed", "success"]
    assert [row[0] for row in rows["alpha_dental"]] == ["success"]  # not re-run
    assert [row[0] for row in rows["beta_dental"]] == ["success"]
    assert all(row[1] == result.run_id for r in rows.values() for row in r)
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []  # never a Dagster step retry: it would re-run every practice
    for practice_id in PRACTICES:
        exact(simulated, practice_id)


def test_dagster_asset_materialize_partition_range_is_one_run(
    simulated, tmp_path, monkeypatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    done = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions", "--select",
         "*", "--partition-range", "alpha_dental...gamma_dental"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = sync_rows()
    [run_id] = {row[1] for r in rows.values() for row in r}
    assert {pid: [row[0] for row in r] for pid, r in rows.items()} == {
        pid: ["success"] for pid in PRACTICES}
    for practice_id in PRACTICES:
        exact(simulated, practice_id)
    with DagsterInstance.get() as instance:
        assert len(instance.get_run_records()) == 1
        for practice_id in PRACTICES:
            for key in ALL_CHECKS:
                record = latest(instance, key, practice_id)
                assert record is not None and record.run_id == run_id, (key, practice_id)
