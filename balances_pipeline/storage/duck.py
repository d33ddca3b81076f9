"""DuckDB connections of the pipeline, with a memory budget.

Without a limit DuckDB's buffer pool grows with the data (a big ledger's upsert and aging
took 700 MB); with one, joins and aggregates spill to `pipeline/tmp` under the pipeline's
home instead, so a sync's memory stays about constant whatever the practice's size.
`BALANCES_DUCKDB_MEMORY_LIMIT` (default 64MB) sets the budget (read in `settings.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

THREADS = 2


@dataclass(frozen=True)
class DuckSettings:
    memory_limit: str
    temp_directory: Path

    def config(self) -> dict[str, str]:
        return {
            "memory_limit": self.memory_limit,
            "temp_directory": str(self.temp_directory),
            "threads": str(THREADS),
            "preserve_insertion_order": "false",
        }


def connect(settings: DuckSettings, path: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write pipeline connection (a file, or in memory when `path` is None)."""
    return duckdb.connect(str(path) if path else ":memory:", config=settings.config())
