"""The Dagster code location: `balances_pipeline.definitions:defs`.

Practices (and so partitions and schedules) come from the practices file when the code
location loads: after editing the file, reload the code location.

A bad practices file (or environment variable) stops the load with its one-line message
and nothing else that is ours: no chained exception, no frames of the loading code. The
error is also a `click.ClickException`, which the `dagster` command line (click) prints as
one `Error: ...` line instead of a traceback of its own frames; `dagster dev` shows it
with Dagster's system frames hidden.
"""

from __future__ import annotations

import click
from dagster import Definitions, in_process_executor

from balances_pipeline.config import PracticesFileError, load_practices
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.file_drop_sensor import build_file_drop_sensor
from balances_pipeline.defs.jobs import build_sync_job
from balances_pipeline.defs.maintenance import lake_maintenance, lake_maintenance_schedule
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.defs.schedules import build_schedules
from balances_pipeline.defs.sensors import report_failed_syncs, report_stale_practices
from balances_pipeline.defs.staff_jobs import STAFF_JOBS
from balances_pipeline.settings import Settings, SettingsError


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    practices = load_practices(settings.practices_file)
    partitions = practice_partitions(practices)
    sync_job = build_sync_job()
    file_drops = build_file_drop_sensor(practices, sync_job)  # None without file drops
    on_lake = settings.lake is not None
    return Definitions(
        assets=build_sync_assets(partitions),
        jobs=[sync_job, *STAFF_JOBS, *([lake_maintenance] if on_lake else [])],
        schedules=[*build_schedules(practices, sync_job),
                   *([lake_maintenance_schedule] if on_lake else [])],
        sensors=[report_failed_syncs, report_stale_practices,
                 *([file_drops] if file_drops else [])],
        resources=resources_from(settings),
        # A sync is HTTP and DuckDB: a process per step only adds start-up cost.
        executor=in_process_executor,
    )


class CodeLocationError(PracticesFileError, click.ClickException):
    """Why the code location cannot load: one line, for the UI and the `dagster` CLI."""

    def __init__(self, message: str) -> None:
        PracticesFileError.__init__(self, message)
        click.ClickException.__init__(self, message)


try:
    defs = build_definitions()
except (PracticesFileError, SettingsError) as error:
    raise CodeLocationError(str(error)) from None
