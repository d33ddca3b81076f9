"""The Dagster code location: `balances_pipeline.definitions:defs`.

Practices (and so partitions) come from the practices file when the code location loads:
after editing the file, reload the code location.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, in_process_executor

from balances_pipeline.config import load_practices
from balances_pipeline.defs.assets import build_practice_sync
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import BalancesWarehouse


def build_definitions(practices_file: Path | None = None) -> Definitions:
    practices = load_practices(practices_file)
    return Definitions(
        assets=[build_practice_sync(practice_partitions(practices))],
        resources={
            "warehouse": BalancesWarehouse(
                practices_file=str(practices_file) if practices_file else None
            )
        },
        # A sync is HTTP and DuckDB in one step: a process per step only adds start-up cost.
        executor=in_process_executor,
    )


defs = build_definitions()
