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

    def analyst_query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Read the published relations as an analyst does: never blocks or waits for a sync."""
        path = self.layout().warehouse_path
        if not path.exists():
            return []
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()
