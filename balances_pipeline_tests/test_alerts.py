"""Failure and staleness reporting: the webhook payload, and the staleness sensor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import build_sensor_context

from balances_pipeline.alerts import new_alert, post_alert
from balances_pipeline.defs import sensors
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.pipeline.freshness import stale_practices
from balances_pipeline.settings import Settings
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.webhook_double import webhook_receiver


def test_post_alert_sends_ids_and_error_class_only(monkeypatch) -> None:
    with webhook_receiver() as (url, received):
        alert = new_alert("sync_failed", "alpha_dental", "run-1", "AuthenticationError")
        assert post_alert(alert, url) is True
    assert received == [{
        "kind": "sync_failed", "practice_id": "alpha_dental", "run_id": "run-1",
        "error_class": "AuthenticationError", "at": alert.at,
    }]
    assert alert.line() == (
        "sync_failed: practice=alpha_dental run=run-1 error_class=AuthenticationError"
    )


def test_post_alert_without_url_or_with_a_failing_hook(monkeypatch, caplog) -> None:
    assert post_alert(new_alert("stale", "p1", None, "Stale"), None) is None
    with webhook_receiver(status=500) as (url, _):
        hook = url + "?token=hook-secret"
        assert post_alert(new_alert("stale", "p1", None, "Stale"), hook) is False
    assert "hook-secret" not in caplog.text


def test_stale_practices_only_past_fresh_until() -> None:
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    latest = {"a_one": now - timedelta(minutes=1), "b_two": now + timedelta(hours=1),
              "gone_practice": now - timedelta(days=3)}
    assert stale_practices(latest, ["a_one", "b_two", "never_synced"], now) == {
        "a_one": now - timedelta(minutes=1)
    }


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.value = now

    def now(self, tz=None) -> datetime:
        return self.value


def test_stale_sensor_fails_the_fresh_check_once_and_posts(simulated, monkeypatch) -> None:
    outcome = sync_practice(simulated.practice("gamma_dental"))
    clock = _Clock(outcome.fresh_until - timedelta(minutes=1))
    monkeypatch.setattr(sensors, "datetime", clock)  # time passing is what cannot run here
    with webhook_receiver() as (url, received):
        monkeypatch.setenv("BALANCES_ALERT_WEBHOOK_URL", url)
        resources = resources_from(Settings.from_env())
        fresh = sensors.report_stale_practices(
            build_sensor_context(resources=resources)
        )
        assert fresh.asset_events == [] and received == []
        clock.value = outcome.fresh_until + timedelta(minutes=1)
        stale = sensors.report_stale_practices(
            build_sensor_context(resources=resources, cursor=fresh.cursor)
        )
        again = sensors.report_stale_practices(
            build_sensor_context(resources=resources, cursor=stale.cursor)
        )
    [evaluation] = stale.asset_events
    assert (evaluation.check_name, evaluation.passed, evaluation.partition) == (
        "fresh", False, "gamma_dental"
    )
    assert [body["practice_id"] for body in received] == ["gamma_dental"]
    assert received[0]["kind"] == "stale" and again.asset_events == []


@pytest.mark.parametrize("frequency", ["daily", "hourly"])
def test_fresh_until_follows_the_frequency(simulated, frequency) -> None:
    practice = simulated.practice("gamma_dental").model_copy(
        update={"sync": simulated.practice("gamma_dental").sync.model_copy(
            update={"frequency": frequency})}
    )
    outcome = sync_practice(practice)
    expected = {"daily": timedelta(hours=26), "hourly": timedelta(hours=2)}[frequency]
    assert outcome.fresh_until - outcome.started_at == expected
