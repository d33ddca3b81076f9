"""One schedule per practice, from its `sync` block, in its own time zone.

Each tick requests a run of that practice's partition only. Schedules start running as
soon as the code location loads (no manual toggle); edit the practices file and reload
the code location to change them.
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


def schedule_name(practice: Practice) -> str:
    return f"sync_{practice.id}"


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


def build_schedule(practice: Practice, job: Any) -> ScheduleDefinition:
    def request_sync(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        when = context.scheduled_execution_time
        if when is not None and not is_due(practice, when):
            return SkipReason(f"{when.isoformat()} is not a tick of practice {practice.id}")
        return RunRequest(partition_key=practice.id, tags={"balances/trigger": "schedule"})

    return ScheduleDefinition(
        name=schedule_name(practice),
        cron_schedule=practice.sync.cron_expression,
        execution_timezone=practice.timezone,
        job=job,
        execution_fn=request_sync,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Sync {practice.id} ({practice.sync.frequency}, {practice.timezone})",
    )


def build_schedules(
    practices: PracticesFile, job: Any
) -> list[ScheduleDefinition]:
    return [build_schedule(practice, job) for practice in practices.practices]
