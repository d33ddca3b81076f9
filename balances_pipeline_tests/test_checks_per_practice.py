"""Asset checks are partitioned by practice: each practice keeps its own check results.

Real Dagster runs on a real (ephemeral or $DAGSTER_HOME) instance; the results are read
back from the instance per partition, as the UI reads them: the latest execution of a
check in a partition, and the check's partition statuses (AssetCheckState).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    build_sensor_context,
    materialize,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
    AssetCheckExecutionResolvedStatus,
)

from balances_pipeline.defs import sensors
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.checks import (
    BUCKETS_SUM_TO_TOTAL,
    CHECKS,
    FRESH,
    PATIENT_PORTION_MATCHES_SOURCE,
    build_check_specs,
)
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.settings import Settings

DAGSTER = str(Path(sys.executable).parent / "dagster")
PORTION = AssetCheckKey(AssetKey("account_balances"), PATIENT_PORTION_MATCHES_SOURCE)
BUCKETS = AssetCheckKey(AssetKey("account_balances"), BUCKETS_SUM_TO_TOTAL)
FRESHNESS = AssetCheckKey(AssetKey("aging_summary"), FRESH)
ALL_CHECKS = [AssetCheckKey(AssetKey(check["asset"]), check["name"]) for check in CHECKS]


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def sync(simulated, practice_id: str, instance: DagsterInstance):
    result = materialize(
        build_sync_assets(practice_partitions(simulated.practices)),
        partition_key=practice_id, instance=instance,
        resources=resources_from(Settings.from_env()),
    )
    assert result.success
    return result


def latest(instance: DagsterInstance, key: AssetCheckKey, practice_id: str):
    """The latest execution of the check in the practice's partition."""
    return instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=practice_id)
    ).get(key)


def statuses(instance: DagsterInstance, simulated, key: AssetCheckKey) -> dict[str, set[str]]:
    """The check's partition statuses, as the UI shows them: status -> practice ids."""
    state = instance.event_log_storage.get_asset_check_state(
        [(key, practice_partitions(simulated.practices))]
    )[key]
    wanted = {AssetCheckExecutionResolvedStatus.SUCCEEDED: "passed",
              AssetCheckExecutionResolvedStatus.FAILED: "failed"}
    return {wanted[status]: set(subset.subset_value.get_partition_keys())
            for status, subset in state.subsets.items() if status in wanted}


def test_every_check_is_partitioned_like_the_assets(simulated) -> None:
    partitions = practice_partitions(simulated.practices)
    specs = build_check_specs(partitions)
    assert {spec.key for spec in specs} == set(ALL_CHECKS)
    assert all(spec.partitions_def == partitions for spec in specs)
    [balances] = [a for a in build_sync_assets(partitions) if a.node_def.name ==
                  "practice_balances"]
    assert {spec.key for spec in balances.check_specs} == set(ALL_CHECKS)
    assert all(spec.partitions_def == partitions for spec in balances.check_specs)


def test_a_failed_check_of_one_practice_is_not_replaced_by_another_s_sync(
    simulated, instance
) -> None:
    # alpha_dental's source reports one account's patient portion 0.05 off.
    runtime = simulated.server.runtime("alpha_dental")
    report = runtime.aging

    def off_by_five_cents(as_of):
        rows = [dict(row) for row in report(as_of)]
        rows[0]["PatientPortion"] = Decimal(str(rows[0]["PatientPortion"])) + Decimal("0.05")
        return rows

    runtime.aging = off_by_five_cents
    alpha = sync(simulated, "alpha_dental", instance)
    beta = sync(simulated, "beta_dental", instance)

    for result, practice_id in ((alpha, "alpha_dental"), (beta, "beta_dental")):
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {key.name for key in ALL_CHECKS}
        assert {e.partition for e in evaluations} == {practice_id}
    alpha_portion = latest(instance, PORTION, "alpha_dental")
    beta_portion = latest(instance, PORTION, "beta_dental")
    assert alpha_portion.status == AssetCheckExecutionRecordStatus.FAILED
    assert alpha_portion.partition == "alpha_dental"
    evaluation = alpha_portion.event.asset_check_evaluation
    assert evaluation.metadata["accounts_failing"].value == 1
    assert beta_portion.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert statuses(instance, simulated, PORTION) == {
        "failed": {"alpha_dental"}, "passed": {"beta_dental"}
    }
    assert statuses(instance, simulated, BUCKETS) == {
        "failed": set(), "passed": {"alpha_dental", "beta_dental"}
    }
    # Each practice's result is about its own partition's materialization.
    assert evaluation.target_materialization_data.run_id == alpha.run_id


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.value = now

    def now(self, tz=None) -> datetime:
        return self.value


def test_a_stale_practice_stays_failed_when_another_practice_syncs(
    simulated, instance, monkeypatch
) -> None:
    gamma = sync(simulated, "gamma_dental", instance)
    [summary] = [m for m in gamma.asset_materializations_for_node("practice_balances")
                 if m.asset_key == AssetKey("aging_summary")]
    fresh_until = datetime.fromisoformat(summary.metadata["fresh_until"].value)
    monkeypatch.setattr(sensors, "datetime", _Clock(fresh_until + timedelta(minutes=1)))
    resources = resources_from(Settings.from_env())
    result = sensors.report_stale_practices(
        build_sensor_context(resources=resources, instance=instance)
    )
    [evaluation] = result.asset_events
    assert (evaluation.partition, evaluation.passed) == ("gamma_dental", False)
    assert evaluation.target_materialization_data.run_id == gamma.run_id
    for event in result.asset_events:  # what the sensor daemon does with them
        instance.report_runless_asset_event(event)

    sync(simulated, "alpha_dental", instance)  # the next practice's sync

    overall = instance.get_latest_asset_check_evaluation_record(FRESHNESS)
    assert (overall.partition, overall.status) == (
        "alpha_dental", AssetCheckExecutionRecordStatus.SUCCEEDED
    )
    assert latest(instance, FRESHNESS, "gamma_dental").status == (
        AssetCheckExecutionRecordStatus.FAILED
    )
    assert statuses(instance, simulated, FRESHNESS) == {
        "failed": {"gamma_dental"}, "passed": {"alpha_dental"}
    }

    sync(simulated, "gamma_dental", instance)  # gamma syncs again: fresh again
    assert statuses(instance, simulated, FRESHNESS) == {
        "failed": set(), "passed": {"alpha_dental", "gamma_dental"}
    }


def test_dagster_asset_materialize_select_all_records_the_partition_s_checks(
    simulated, tmp_path, monkeypatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for practice_id in ("beta_dental", "gamma_dental"):
        done = subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions",
             "--select", "*", "--partition", practice_id],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "PreviewWarning" not in done.stderr
    with DagsterInstance.get() as instance:
        for practice_id in ("beta_dental", "gamma_dental"):
            for key in ALL_CHECKS:
                record = latest(instance, key, practice_id)
                assert record is not None, (key, practice_id)
                assert record.partition == practice_id
                assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, key
        assert statuses(instance, simulated, FRESHNESS) == {
            "failed": set(), "passed": {"beta_dental", "gamma_dental"}
        }
