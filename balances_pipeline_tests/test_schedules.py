"""Per-practice schedules in local time: evaluated as the daemon would, across a DST change."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DefaultScheduleStatus, RunRequest, SkipReason, build_schedule_context
from dagster._utils.schedules import cron_string_iterator

from balances_pipeline.config import load_practices
from balances_pipeline.definitions import build_definitions
from balances_pipeline.settings import Settings
from balances_pipeline_tests.conftest import practice_entry, write_practices_file

URL = "http://127.0.0.1:9/api/v1"


@pytest.fixture
def definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_practices_file(tmp_path / "p.yaml", [
        practice_entry("denver_daily", URL, timezone="America/Denver",
                       sync={"frequency": "daily", "at": "05:00"}),
        practice_entry("ny_hourly", URL, timezone="America/New_York",
                       sync={"frequency": "hourly", "minute": 15}),
        practice_entry("sydney_cron", URL, timezone="Australia/Sydney",
                       sync={"frequency": "cron", "cron": "30 6-18/3 * * 1-5"}),
        practice_entry("london_default", URL, timezone="Europe/London"),
    ])
    monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(path))
    return build_definitions(settings_for(path)), load_practices(path)


def settings_for(path: Path) -> Settings:
    return replace(Settings.from_env(), practices_file=path)


def ticks(schedule, start: datetime, end: datetime) -> list[datetime]:
    """The ticks the daemon would evaluate between start and end (Dagster's own iterator)."""
    found = []
    for tick in cron_string_iterator(start.timestamp(), schedule.cron_schedule,
                                     schedule.execution_timezone):
        if tick > end:
            return found
        found.append(tick)
    return found


def evaluate(defs, schedule, when: datetime):
    with build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        return schedule.evaluate_tick(context)


def local(zone: str, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone))


def test_one_running_schedule_per_practice(definitions) -> None:
    defs, practices = definitions
    schedules = {schedule.name: schedule for schedule in defs.schedules}
    assert set(schedules) == {f"sync_{practice_id}" for practice_id in practices.ids}
    for practice in practices.practices:
        schedule = schedules[f"sync_{practice.id}"]
        assert schedule.execution_timezone == practice.timezone
        assert schedule.default_status == DefaultScheduleStatus.RUNNING
        assert schedule.job_name == "practice_sync_job"


def test_daily_fires_at_five_local_across_the_dst_change(definitions) -> None:
    defs, _ = definitions
    schedule = defs.get_schedule_def("sync_denver_daily")
    # 2026-03-08 is the day Denver moves from MST (UTC-7) to MDT (UTC-6).
    found = ticks(
        schedule, local("America/Denver", 2026, 3, 6, 12), local("America/Denver", 2026, 3, 10, 12)
    )
    assert [t.astimezone(ZoneInfo("America/Denver")).strftime("%m-%d %H:%M") for t in found] == [
        "03-07 05:00", "03-08 05:00", "03-09 05:00", "03-10 05:00",
    ]
    assert [t.astimezone(ZoneInfo("UTC")).hour for t in found] == [12, 11, 11, 11]
    for tick in found:
        result = evaluate(defs, schedule, tick)
        assert [r.partition_key for r in result.run_requests] == ["denver_daily"]


def test_hourly_fires_every_hour_at_its_minute_through_the_dst_change(definitions) -> None:
    defs, _ = definitions
    schedule = defs.get_schedule_def("sync_ny_hourly")
    # 2026-11-01: New York falls back from EDT to EST; 01:15 happens twice.
    start = local("America/New_York", 2026, 11, 1, 0, 0)
    found = ticks(schedule, start, start + timedelta(hours=4))
    assert [t.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") for t in found] == [
        "00:15", "01:15", "01:15", "02:15", "03:15",
    ]
    for tick in found:
        assert evaluate(defs, schedule, tick).run_requests[0].partition_key == "ny_hourly"


def test_cron_in_its_own_time_zone_and_weekdays_only(definitions) -> None:
    defs, _ = definitions
    schedule = defs.get_schedule_def("sync_sydney_cron")
    # Friday 2026-10-02 to Monday 2026-10-05 (Sydney starts daylight saving on 10-04).
    found = ticks(
        schedule, local("Australia/Sydney", 2026, 10, 2), local("Australia/Sydney", 2026, 10, 5, 23)
    )
    labels = [t.astimezone(ZoneInfo("Australia/Sydney")).strftime("%a %H:%M") for t in found]
    expected = [f"{day} {hour:02d}:30" for day in ("Fri", "Mon") for hour in (6, 9, 12, 15, 18)]
    assert labels == expected


def test_a_tick_at_another_time_requests_nothing(definitions) -> None:
    defs, _ = definitions
    daily = defs.get_schedule_def("sync_denver_daily")
    for when in (local("America/Denver", 2026, 3, 8, 6, 0), local("UTC", 2026, 3, 8, 5, 0)):
        result = evaluate(defs, daily, when)
        assert result.run_requests == [] or result.run_requests is None
        assert "is not a tick" in result.skip_message
    at_five = evaluate(defs, daily, local("America/Denver", 2026, 3, 8, 5, 0))
    assert isinstance(at_five.run_requests[0], RunRequest)
    assert not isinstance(at_five, SkipReason)


def test_default_is_daily_at_five(definitions) -> None:
    defs, _ = definitions
    schedule = defs.get_schedule_def("sync_london_default")
    assert schedule.cron_schedule == "0 5 * * *"
    assert schedule.execution_timezone == "Europe/London"


def test_editing_the_file_changes_the_schedules_without_code_changes(tmp_path) -> None:
    path = write_practices_file(tmp_path / "p.yaml", [
        practice_entry("editable", URL, sync={"frequency": "daily", "at": "05:00"})])
    schedule = build_definitions(settings_for(path)).get_schedule_def("sync_editable")
    assert schedule.cron_schedule == "0 5 * * *"
    write_practices_file(path, [
        practice_entry("editable", URL, sync={"frequency": "hourly", "minute": 40})])
    schedule = build_definitions(settings_for(path)).get_schedule_def("sync_editable")
    assert schedule.cron_schedule == "40 * * * *"
