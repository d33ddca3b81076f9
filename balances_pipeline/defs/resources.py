"""Dagster resources: they own the pipeline's I/O (the warehouse, the sources, the webhook).

`resources_from(settings)` builds them from `Settings` (the environment); the code location
and the `balances` command line use the same objects. Tests hand a resource other values,
or a different source client, as Dagster's testing guide does.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster import ConfigurableResource, EnvVar

from balances_pipeline.alerts import Alert, post_alert
from balances_pipeline.config import Practice, PracticesFile, load_practices
from balances_pipeline.settings import (
    CATALOG_ENV,
    DATA_PATH_ENV,
    DEFAULT_MEMORY_LIMIT,
    WEBHOOK_ENV,
    LakeSettings,
    Settings,
    parse_as_of,
)
from balances_pipeline.sources.clients import SourceClient, open_client
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.reader import read_published


class BalancesWarehouse(ConfigurableResource):
    """The pipeline's storage under `BALANCES_HOME`, and the practices it serves.

    Paths and settings only: secrets stay in environment variables.
    """

    home: str
    practices_file: str
    shared_group: str | None = None
    duckdb_memory_limit: str = DEFAULT_MEMORY_LIMIT
    as_of: str | None = None  # yyyy-mm-dd: fixes every sync's as-of date (BALANCES_AS_OF)
    # The DuckLake layout (BALANCES_WAREHOUSE_CATALOG, BALANCES_WAREHOUSE_DATA_PATH): no
    # password here, libpq reads it from its own environment.
    warehouse_catalog: str | None = None
    warehouse_data_path: str | None = None

    def layout(self) -> Layout:
        lake = None
        if self.warehouse_catalog or self.warehouse_data_path:
            lake = LakeSettings.from_environ({
                CATALOG_ENV: self.warehouse_catalog or "",
                DATA_PATH_ENV: self.warehouse_data_path or "",
            })
        return Layout(
            Path(self.home).expanduser().resolve(), shared_group=self.shared_group,
            duckdb_memory_limit=self.duckdb_memory_limit, lake=lake,
        ).ensure()

    def practices(self) -> PracticesFile:
        return load_practices(Path(self.practices_file))

    def fixed_as_of(self) -> date | None:
        return parse_as_of(self.as_of)

    def analyst_query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Read the published relations as an analyst does: never blocks or waits for a sync."""
        return [tuple(row.values()) for row in read_published(self.layout(), sql, params)]


class SourceClients(ConfigurableResource):
    """Opens a practice's source client (Open Dental today); credentials come from the
    environment variables the practices file names, read when the client opens."""

    def open(self, practice: Practice) -> SourceClient:
        return open_client(practice)


class AlertWebhook(ConfigurableResource):
    """Where failed and stale syncs are posted (`BALANCES_ALERT_WEBHOOK_URL`); a secret."""

    url: str | None = None

    def post(self, alert: Alert) -> bool | None:
        return post_alert(alert, self.url)


def resources_from(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources of the code location and of the `balances` command line."""
    return {
        "warehouse": BalancesWarehouse(
            home=str(settings.home),
            practices_file=str(settings.practices_file),
            shared_group=settings.shared_group,
            duckdb_memory_limit=settings.duckdb_memory_limit,
            as_of=settings.as_of.isoformat() if settings.as_of else None,
            warehouse_catalog=settings.lake.catalog if settings.lake else None,
            warehouse_data_path=settings.lake.data_path if settings.lake else None,
        ),
        "sources": SourceClients(),
        # An EnvVar, so the URL is resolved at run time and never shown in the UI.
        "alerts": AlertWebhook(url=EnvVar(WEBHOOK_ENV) if settings.alert_webhook_url else None),
    }
