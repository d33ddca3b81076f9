"""Keeping a DuckLake small. Every publish adds a few small Parquet files per relation and
a few snapshots, and every commit reads the catalog's list of files: measured, the rows
Postgres reads per sync grow with the files in the catalog (docs/scaling.md). Once a day
(the `lake_maintenance` schedule, or `balances warehouse maintain`):

1. merge each table's adjacent small files into larger ones;
2. expire the snapshots older than `keep_days` (time travel reaches back that far);
3. delete the data files no snapshot references any more and that stopped being
   referenced `CLEANUP_GRACE` ago (a reader attached to an older snapshot may be reading
   them).

All of it in one unit under the lake's writer lock: no publish runs meanwhile, so none
conflicts with it. Analysts keep reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

import duckdb

from balances_pipeline.storage.lake import ALIAS
from balances_pipeline.storage.layout import Layout

DEFAULT_KEEP_DAYS = 90
CLEANUP_GRACE = timedelta(days=1)
_METADATA = f"__ducklake_metadata_{ALIAS}"


@dataclass(frozen=True)
class MaintenanceResult:
    live_files_before: int
    live_files_after: int
    snapshots_before: int
    snapshots_after: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    files = con.execute(
        f"SELECT count(*) FROM {_METADATA}.ducklake_data_file WHERE end_snapshot IS NULL"  # noqa: S608
    ).fetchall()[0][0]
    snapshots = con.execute(f"SELECT count(*) FROM ducklake_snapshots('{ALIAS}')").fetchall()  # noqa: S608
    return files, snapshots[0][0]


def maintain(layout: Layout, keep_days: int = DEFAULT_KEEP_DAYS) -> MaintenanceResult:
    """Compact, expire and clean the layout's lake (see the module's doc)."""
    from balances_pipeline.storage.working_db import WorkingDatabase  # it imports storage

    if layout.lake is None:
        raise ValueError("the warehouse is not on DuckLake: nothing to maintain")
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    with WorkingDatabase(layout).connect() as con:
        files_before, snapshots_before = _counts(con)
        con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')")
        con.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now() - ?)",
                    [timedelta(days=keep_days)])
        con.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => now() - ?)",
                    [CLEANUP_GRACE])
        files_after, snapshots_after = _counts(con)
    return MaintenanceResult(files_before, files_after, snapshots_before, snapshots_after)
