"""Bad input and transient faults, through real Dagster runs against the simulator."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, materialize

from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.settings import Settings
from balances_pipeline.simulator import Faults
from balances_pipeline_tests.conftest import SimulatedPractices
from balances_pipeline_tests.conftest import warehouse_query as query

# Each test runs in both layouts: on this machine, and the warehouse on DuckLake.
pytestmark = pytest.mark.usefixtures("both_layouts")


def run_sync(simulated: SimulatedPractices, practice_id: str, instance: DagsterInstance):
    practices = simulated.practices
    return materialize(
        build_sync_assets(practice_partitions(practices)),
        partition_key=practice_id,
        instance=instance,
        resources=resources_from(Settings.from_env()),
        raise_on_error=False,
    )


def failure_message(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.error.message


def published(practice_id: str) -> list[tuple]:
    return query(
        "SELECT * FROM account_balances WHERE practice_id = ? ORDER BY account_id", [practice_id]
    )


def runs(practice_id: str) -> list[tuple]:
    return query(
        "SELECT status, error, requests, retries, rows_rejected FROM sync_runs"
        " WHERE practice_id = ? ORDER BY started_at",
        [practice_id],
    )


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def test_missing_env_var_fails_that_practice_only(simulated, instance, monkeypatch) -> None:
    monkeypatch.delenv("TEST_BETA_DENTAL_CUSTOMER_KEY")
    failed = run_sync(simulated, "beta_dental", instance)
    ok = run_sync(simulated, "alpha_dental", instance)
    assert not failed.success and ok.success
    message = failure_message(failed)
    assert "TEST_BETA_DENTAL_CUSTOMER_KEY" in message and "beta_dental" in message
    assert runs("beta_dental")[0][:2] == (
        "failed", "practice beta_dental: environment variable TEST_BETA_DENTAL_CUSTOMER_KEY"
        " is not set",
    )
    assert published("beta_dental") == [] and len(published("alpha_dental")) > 0


def test_wrong_key_is_not_retried(simulated, instance, monkeypatch) -> None:
    monkeypatch.setenv("TEST_ALPHA_DENTAL_CUSTOMER_KEY", "not-the-key")
    simulated.server.reset_request_log()
    result = run_sync(simulated, "alpha_dental", instance)
    assert not result.success
    assert "authentication failed for practice alpha_dental" in failure_message(result)
    assert len(simulated.server.requests) == 1
    status, error, *_ = runs("alpha_dental")[0]
    assert status == "failed" and error.startswith(
        "authentication failed for practice alpha_dental (HTTP 401: ")  # what the server said
    assert "not-the-key" not in error


def test_throttling_and_server_errors_are_retried_and_counted(simulated, instance) -> None:
    simulated.server.set_faults(
        "gamma_dental", Faults(rate_limit_next=1, retry_after_seconds=1, server_error_next=1)
    )
    result = run_sync(simulated, "gamma_dental", instance)
    assert result.success
    [(status, error, requests, retries, rejected)] = runs("gamma_dental")
    assert (status, error, retries, rejected) == ("success", None, 2, 0)
    accounts = len(published("gamma_dental"))
    pages = accounts // 100 + 1
    assert requests == pages + 2
    materialization = result.asset_materializations_for_node("source_extract")[0]
    assert materialization.metadata["retries"].value == 2


def test_a_malformed_row_is_rejected_and_the_sync_succeeds(simulated, instance) -> None:
    simulated.server.set_faults("alpha_dental", Faults(malformed_rows=1))
    result = run_sync(simulated, "alpha_dental", instance)
    assert result.success
    [(endpoint, row_key, reason, raw)] = query(
        "SELECT endpoint, row_key, reason, raw FROM rejected_rows"
    )
    assert endpoint.endswith("reports/Aging") and "Bal_0_30" in reason
    assert json.loads(raw)["Bal_0_30"] == "12.3.4"
    assert row_key not in {row[1] for row in published("alpha_dental")}
    assert runs("alpha_dental")[0][4] == 1


def test_too_many_bad_rows_fail_and_keep_the_previous_data(simulated, instance) -> None:
    assert run_sync(simulated, "alpha_dental", instance).success
    before = published("alpha_dental")
    simulated.server.set_faults("alpha_dental", Faults(malformed_rows=10))
    result = run_sync(simulated, "alpha_dental", instance)
    assert not result.success
    assert "rows rejected" in failure_message(result)
    assert published("alpha_dental") == before
    statuses = [run[0] for run in runs("alpha_dental")]
    assert statuses == ["success", "failed"]
    assert query("SELECT count(*) FROM rejected_rows")[0][0] == 10


def test_schema_drift_fails_naming_the_field(simulated, instance) -> None:
    assert run_sync(simulated, "beta_dental", instance).success
    before = published("beta_dental")
    simulated.server.set_faults("beta_dental", Faults(missing_field="BalTotal"))
    result = run_sync(simulated, "beta_dental", instance)
    assert not result.success
    assert "'BalTotal'" in failure_message(result)
    assert published("beta_dental") == before


def test_rows_shifting_between_pages_are_never_double_counted(simulated, instance) -> None:
    simulated.server.set_faults("alpha_dental", Faults(duplicate_rows=True))
    result = run_sync(simulated, "alpha_dental", instance)
    assert not result.success
    assert "returned twice" in failure_message(result)
    assert published("alpha_dental") == []


def test_no_secret_and_no_name_in_the_event_log(simulated, instance) -> None:
    simulated.server.set_faults("alpha_dental", Faults(malformed_rows=1, rate_limit_next=1))
    assert run_sync(simulated, "alpha_dental", instance).success
    as_of = query("SELECT max(as_of_date) FROM account_balances")[0][0]
    names = [row["patName"] for row in simulated.server.aging_report("alpha_dental", as_of)]
    assert len(names) > 50
    log_text = "\n".join(
        record.to_json() if hasattr(record, "to_json") else str(record)
        for record in instance.all_logs(instance.get_runs()[0].run_id)
    )
    run_config = json.dumps(instance.get_runs()[0].run_config)
    tags = json.dumps(instance.get_runs()[0].tags)
    for secret in simulated.keys.values():
        assert secret not in log_text and secret not in run_config and secret not in tags
    for name in names:
        assert name not in log_text
    assert "alpha_dental" in log_text
