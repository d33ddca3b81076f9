"""The DuckLake layout's daily maintenance (`storage/lake_maintenance.py`) as a Dagster job
and schedule; defined only when the warehouse is on DuckLake."""

from dagster import Config, OpExecutionContext, ScheduleDefinition, job, op
from pydantic import Field

from balances_pipeline.defs.resources import BalancesWarehouse
from balances_pipeline.storage.lake_maintenance import DEFAULT_KEEP_DAYS, maintain

# 04:00 UTC: after the US practices' nightly syncs, before their mornings.
MAINTENANCE_CRON = "0 4 * * *"


class MaintenanceConfig(Config):
    keep_days: int = Field(DEFAULT_KEEP_DAYS, ge=1, le=3650,
                           description="snapshots kept for time travel, in days")


@op
def maintain_lake(context: OpExecutionContext, config: MaintenanceConfig,
                  warehouse: BalancesWarehouse) -> None:
    result = maintain(warehouse.layout(), config.keep_days)
    context.log.info(
        f"lake maintained: live files {result.live_files_before} -> {result.live_files_after},"
        f" snapshots {result.snapshots_before} -> {result.snapshots_after}"
    )


@job(description="compact the DuckLake's files, expire old snapshots, delete unused files")
def lake_maintenance() -> None:
    maintain_lake()


lake_maintenance_schedule = ScheduleDefinition(
    name="lake_maintenance_daily", job=lake_maintenance, cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
)
