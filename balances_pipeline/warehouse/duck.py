"""DuckDB connections of the pipeline, with a memory budget.

Without a limit DuckDB's buffer pool grows with the data (a big ledger's upsert and aging
took 700 MB); with one, joins and aggregates spill to `pipeline/tmp` instead, so a sync's
memory stays about constant whatever the practice's size. `BALANCES_DUCKDB_MEMORY_LIMIT`
(default 64MB) sets it; every pipeline connection in a process uses the same settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

MEMORY_LIMIT_ENV = "BALANCES_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "64MB"
THREADS = 2


def _settings() -> dict[str, str]:
    from balances_pipeline.home import balances_home

    spill = balances_home() / "pipeline" / "tmp"
    spill.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {
        "memory_limit": os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT,
        "temp_directory": str(spill),
        "threads": str(THREADS),
        "preserve_insertion_order": "false",
    }


def connect(path: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write pipeline connection (a file, or in memory when `path` is None)."""
    return duckdb.connect(str(path) if path else ":memory:", config=_settings())
