"""One schedule per practice, from its `sync` block, in its own time zone.

Each tick requests a run of that practice's partition only. Schedules start running as
soon as the code location loads (no manual toggle); edit the practices file and reload
the code location to change them.
"""

from datetime import datetime, timedelta

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._utils.schedules import get_next_cron_tick

from balances_pipeline.config import Practice, PracticesFile


def schedule_name(practice: Practice) -> str:
    return f"sync_{practice.id}"


def is_due(practice: Practice, when: datetime) -> bool:
    """True when `when` is one of the practice's ticks (local time, DST-aware)."""
    previous = when - timedelta(seconds=1)
    tick = get_next_cron_tick(practice.sync.cron_expression, previous, practice.timezone)
    return tick.timestamp() == when.timestamp()


def build_schedule(practice: Practice, job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
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
    practices: PracticesFile, job: UnresolvedAssetJobDefinition
) -> list[ScheduleDefinition]:
    return [build_schedule(practice, job) for practice in practices.practices]
