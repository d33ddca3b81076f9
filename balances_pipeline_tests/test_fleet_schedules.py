"""Schedules that tick together launch one run: practices grouped by (cron, time zone), each
group contiguous in the partition order, its tick requesting the group's range."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, build_schedule_context

from balances_pipeline.config import load_practices
from balances_pipeline.definitions import build_definitions
from balances_pipeline.defs.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    partition_order,
    practice_partitions,
)
from balances_pipeline.settings import Settings
from balances_pipeline_tests.conftest import practice_entry, write_practices_file

URL = "http://127.0.0.1:9/api/v1"
DAILY_5 = {"frequency": "daily", "at": "05:00"}
HOURLY = {"frequency": "hourly", "minute": 15}


def build(tmp_path: Path, monkeypatch):
    # File order interleaves the groups; the partition order makes each contiguous.
    path = write_practices_file(tmp_path / "p.yaml", [
        practice_entry("chi_a", URL, timezone="America/Chicago", sync=DAILY_5),
        practice_entry("ny_hourly_a", URL, timezone="America/New_York", sync=HOURLY),
        practice_entry("chi_b", URL, timezone="America/Chicago", sync=DAILY_5),
        practice_entry("denver_daily", URL, timezone="America/Denver", sync=DAILY_5),
        practice_entry("ny_hourly_b", URL, timezone="America/New_York", sync=HOURLY),
        practice_entry("chi_c", URL, timezone="America/Chicago", sync=DAILY_5),
    ])
    monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(path))
    settings = replace(Settings.from_env(), practices_file=path)
    return build_definitions(settings), load_practices(path)


def evaluate(defs, name: str, when: datetime):
    with build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        return defs.get_schedule_def(name).evaluate_tick(context)


def test_groups_are_contiguous_in_the_partition_order(tmp_path, monkeypatch) -> None:
    _, practices = build(tmp_path, monkeypatch)
    expected = ["chi_a", "chi_b", "chi_c", "ny_hourly_a", "ny_hourly_b", "denver_daily"]
    assert partition_order(practices) == expected
    assert practice_partitions(practices).get_partition_keys() == expected


def test_one_schedule_per_group_and_a_lone_practice_keeps_its_own(tmp_path, monkeypatch):
    defs, _ = build(tmp_path, monkeypatch)
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"sync_chi_a_to_chi_c", "sync_ny_hourly_a_to_ny_hourly_b",
                              "sync_denver_daily"}
    chicago = schedules["sync_chi_a_to_chi_c"]
    assert (chicago.cron_schedule, chicago.execution_timezone) == ("0 5 * * *",
                                                                   "America/Chicago")
    assert all(s.default_status == DefaultScheduleStatus.RUNNING for s in schedules.values())


def test_a_group_tick_requests_its_range_in_one_run(tmp_path, monkeypatch) -> None:
    defs, _ = build(tmp_path, monkeypatch)
    at_five = datetime(2026, 3, 8, 5, 0, tzinfo=ZoneInfo("America/Chicago"))  # DST day
    [request] = evaluate(defs, "sync_chi_a_to_chi_c", at_five).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("chi_a", "chi_c")
    assert request.partition_key is None and request.tags["balances/trigger"] == "schedule"
    hourly = datetime(2026, 11, 1, 1, 15, tzinfo=ZoneInfo("America/New_York"))
    [request] = evaluate(defs, "sync_ny_hourly_a_to_ny_hourly_b", hourly).run_requests
    assert request.partition_key_range.start == "ny_hourly_a"
    assert request.partition_key_range.end == "ny_hourly_b"
    [lone] = evaluate(defs, "sync_denver_daily",
                      datetime(2026, 3, 8, 5, tzinfo=ZoneInfo("America/Denver"))).run_requests
    assert lone.partition_key == "denver_daily"


def test_the_tick_guard_still_holds_for_a_group(tmp_path, monkeypatch) -> None:
    defs, _ = build(tmp_path, monkeypatch)
    not_a_tick = datetime(2026, 3, 8, 6, 0, tzinfo=ZoneInfo("America/Chicago"))
    result = evaluate(defs, "sync_chi_a_to_chi_c", not_a_tick)
    assert not result.run_requests
    assert "is not a tick of practice chi_a (nor of its group of 3)" in result.skip_message
