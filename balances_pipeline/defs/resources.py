"""The warehouse resource: where `$BALANCES_HOME` is and which practices exist."""

from __future__ import annotations

from pathlib import Path

import duckdb
from dagster import ConfigurableResource

from balances_pipeline.config import PracticesFile, load_practices
from balances_pipeline.home import Layout, balances_home, layout


class BalancesWarehouse(ConfigurableResource):
    """DuckDB warehouse under `$BALANCES_HOME`. Holds paths only: secrets stay in env vars."""

    home: str | None = None
    practices_file: str | None = None

    def layout(self) -> Layout:
        return layout(Path(self.home) if self.home else balances_home())

    def practices(self) -> PracticesFile:
        return load_practices(Path(self.practices_file) if self.practices_file else None)

    def analyst_connection(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the analyst file, as an analyst would open it."""
        return duckdb.connect(str(self.layout().warehouse_path), read_only=True)
