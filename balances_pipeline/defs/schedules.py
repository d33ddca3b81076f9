"""Schedules from the practices' `sync` blocks, each in its practice's own time zone.

Practices that tick at the same moments (the same cron expression in the same time zone)
share one schedule, whose tick requests ONE run of their partition range (the partitions
are ordered so that each group is contiguous: `partitions.py`); a practice alone in its
group has its own `sync_<id>` schedule requesting its partition. A group's schedule is
named `sync_<first>_to_<last>`. Schedules start running as soon as the code location
loads (no manual toggle); edit the practices file and reload the code location to change
them.
"""

from datetime import datetime, timedelta
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
)

from balances_pipeline.config import Practice, PracticesFile
from balances_pipeline.cron import ticks_from
from balances_pipeline.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, sync_groups


def schedule_name(practice: Practice) -> str:
    return f"sync_{practice.id}"


def group_schedule_name(group: list[Practice]) -> str:
    if len(group) == 1:
        return schedule_name(group[0])
    return f"sync_{group[0].id}_to_{group[-1].id}"


def is_due(practice: Practice, when: datetime) -> bool:
    """True when `when` is one of the practice's ticks (local time, DST-aware).

    Walks Dagster's own tick iterator from a day before: `get_next_cron_tick` answers the
    first 01:15 again when asked just before the repeated 01:15 of a fall-back night.
    """
    ticks = ticks_from(when - timedelta(hours=25), practice.sync.cron_expression,
                       practice.timezone)
    for tick in ticks:
        if tick.timestamp() >= when.timestamp():
            return tick.timestamp() == when.timestamp()
    return False


def group_run_request(group: list[Practice], when: datetime | None) -> RunRequest | SkipReason:
    """The run a group's tick asks for: its one practice's partition, or its range.

    The guard is the practice's own (`is_due`): it reads only the cron expression and the
    time zone, which every practice of a group shares, so the first practice's answer is
    each's.
    """
    if when is not None and not is_due(group[0], when):
        of_group = f" (nor of its group of {len(group)})" if len(group) > 1 else ""
        return SkipReason(f"{when.isoformat()} is not a tick of practice {group[0].id}"
                          f"{of_group}")
    tags = {"balances/trigger": "schedule"}
    if len(group) == 1:
        return RunRequest(partition_key=group[0].id, tags=tags)
    return RunRequest(tags={**tags, RANGE_START_TAG: group[0].id, RANGE_END_TAG: group[-1].id})


def build_schedule(group: list[Practice] | Practice, job: Any) -> ScheduleDefinition:
    group = [group] if isinstance(group, Practice) else group
    first = group[0]

    def request_sync(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        return group_run_request(group, context.scheduled_execution_time)

    names = ", ".join(p.id for p in group)
    return ScheduleDefinition(
        name=group_schedule_name(group),
        cron_schedule=first.sync.cron_expression,
        execution_timezone=first.timezone,
        job=job,
        execution_fn=request_sync,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Sync {names} ({first.sync.frequency}, {first.timezone})"
        + (" in one run" if len(group) > 1 else ""),
    )


def build_schedules(
    practices: PracticesFile, job: Any
) -> list[ScheduleDefinition]:
    return [build_schedule(group, job) for group in sync_groups(practices)]
