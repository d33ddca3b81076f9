"""Dagster's retry layer: the extract step's `RetryPolicy`, through real runs.

urllib3 retries each request (`sources/http.py`); when the source stays unavailable through
those retries the extraction fails as transient and Dagster runs the step again, within
its `RetryPolicy`. Anything else (bad credentials, bad data) fails the step for good. The
policy's minute-long delay is injected here as a few milliseconds; every other part is
what production runs.
"""

from __future__ import annotations

import time

import pytest
from dagster import (
    AssetsDefinition,
    Backoff,
    DagsterEventType,
    DagsterInstance,
    Jitter,
    RetryPolicy,
    materialize,
)

from balances_pipeline.defs.assets import EXTRACT_RETRY_POLICY, build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.settings import Settings
from balances_pipeline.simulator import Faults
from balances_pipeline_tests.conftest import (
    SimulatedPractices,
    practice_entry,
    write_practices_file,
)
from balances_pipeline_tests.conftest import warehouse_query as query

PRACTICE = "gamma_dental"  # the smallest: its aging report is one page
FAST_POLICY = RetryPolicy(
    max_retries=2, delay=0.01, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


@pytest.fixture
def one_retry_per_request(simulated: SimulatedPractices) -> SimulatedPractices:
    """The practice with `max_retries: 1`: an extraction attempt gives up after two
    requests, and urllib3 waits nothing before a first retry."""
    entry = practice_entry(PRACTICE, simulated.server.url, source={"max_retries": 1})
    write_practices_file(simulated.practices_file, [entry])
    simulated.server.reset_request_log()
    return simulated


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def run_sync(simulated: SimulatedPractices, instance: DagsterInstance, policy: RetryPolicy):
    return materialize(
        build_sync_assets(practice_partitions(simulated.practices), retry_policy=policy),
        partition_key=PRACTICE,
        instance=instance,
        resources=resources_from(Settings.from_env()),
        raise_on_error=False,
    )


def step_events(result, step_key: str = "source_extract") -> list[str]:
    """The step's lifecycle, in order: STEP_START, STEP_UP_FOR_RETRY, STEP_RESTARTED, ..."""
    lifecycle = {
        DagsterEventType.STEP_START, DagsterEventType.STEP_UP_FOR_RETRY,
        DagsterEventType.STEP_RESTARTED, DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
    }
    return [
        event.event_type_value for event in result.all_events
        if event.step_key == step_key and event.event_type in lifecycle
    ]


def retry_causes(result) -> list[str]:
    """Why each retry was requested: the step's error, under Dagster's RetryRequested."""
    causes = []
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY:
            error = event.event_specific_data.error
            causes.append(error.cause.message if error.cause else error.message)
    return causes


def syncs() -> list[tuple]:
    return query(
        "SELECT status, error, requests, retries FROM sync_runs WHERE practice_id = ?"
        " ORDER BY started_at",
        [PRACTICE],
    )


def requests_seen(simulated: SimulatedPractices, expected: int) -> int:
    """Requests the simulator received (the practices file names only PRACTICE; a request
    with a wrong key is nobody's). It logs a request after answering it: give it a moment."""
    deadline = time.monotonic() + 2
    while simulated.server.request_count() < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return simulated.server.request_count()


def source_extract(assets: list[AssetsDefinition]) -> AssetsDefinition:
    [extract] = [a for a in assets if a.node_def.name == "source_extract"]
    return extract


def test_the_extract_step_has_the_production_policy_by_default(simulated) -> None:
    partitions = practice_partitions(simulated.practices)
    policy = source_extract(build_sync_assets(partitions)).op.retry_policy
    assert policy == EXTRACT_RETRY_POLICY
    assert (policy.max_retries, policy.delay, policy.backoff, policy.jitter) == (
        2, 60, Backoff.EXPONENTIAL, Jitter.PLUS_MINUS
    )
    injected = build_sync_assets(partitions, retry_policy=FAST_POLICY)
    assert source_extract(injected).op.retry_policy == FAST_POLICY
    others = [a for a in injected if a.node_def.name != "source_extract"]
    assert others and all(a.op.retry_policy is None for a in others)


def test_a_source_unavailable_for_two_attempts_is_retried_by_dagster(
    one_retry_per_request, instance
) -> None:
    simulated = one_retry_per_request
    # Two attempts of two requests each get a 503; the third attempt reads the page.
    simulated.server.set_faults(PRACTICE, Faults(server_error_next=4))
    result = run_sync(simulated, instance, FAST_POLICY)
    assert result.success
    assert step_events(result) == [
        "STEP_START", "STEP_UP_FOR_RETRY", "STEP_RESTARTED", "STEP_UP_FOR_RETRY",
        "STEP_RESTARTED", "STEP_SUCCESS",
    ]
    causes = retry_causes(result)
    assert len(causes) == 2
    for cause in causes:
        assert "gamma_dental: /reports/Aging offset 0: HTTP 503 after 1 retries" in cause
    assert requests_seen(simulated, 5) == 5
    assert [(status, requests, retries) for status, _, requests, retries in syncs()] == [
        ("failed", 2, 1), ("failed", 2, 1), ("success", 1, 0),
    ]
    assert query("SELECT count(*) FROM account_balances WHERE practice_id = ?", [PRACTICE])[0][0]


def test_a_source_down_through_every_attempt_fails_after_the_policys_retries(
    one_retry_per_request, instance
) -> None:
    simulated = one_retry_per_request
    simulated.server.set_faults(PRACTICE, Faults(server_error_next=1000))
    result = run_sync(simulated, instance, FAST_POLICY)
    assert not result.success
    assert step_events(result) == [
        "STEP_START", "STEP_UP_FOR_RETRY", "STEP_RESTARTED", "STEP_UP_FOR_RETRY",
        "STEP_RESTARTED", "STEP_FAILURE",
    ]
    assert requests_seen(simulated, 6) == 6  # 3 attempts x (1 request + 1 urllib3 retry)
    assert [status for status, *_ in syncs()] == ["failed"] * 3
    assert step_events(result, "practice_balances") == []  # never started


@pytest.mark.parametrize("cause", ["wrong key", "schema drift"])
def test_a_permanent_failure_is_not_retried_by_dagster(
    one_retry_per_request, instance, monkeypatch, cause
) -> None:
    simulated = one_retry_per_request
    if cause == "wrong key":
        monkeypatch.setenv("TEST_GAMMA_DENTAL_CUSTOMER_KEY", "not-the-key")  # 401
        expected_error = "authentication failed for practice"
    else:
        simulated.server.set_faults(PRACTICE, Faults(missing_field="BalTotal"))
        expected_error = "field 'BalTotal' missing from every row"
    result = run_sync(simulated, instance, FAST_POLICY)
    assert not result.success
    assert step_events(result) == ["STEP_START", "STEP_FAILURE"]
    assert requests_seen(simulated, 1) == 1  # one page, one request: no retry at any layer
    [(status, error, *_)] = syncs()
    assert status == "failed" and expected_error in error
