"""`balance_history`: one row per account per practice-local day, the day's last publish.

One Parquet file per practice and day under `published/history/<practice>/`, replaced
atomically by each later publish of the same day, and pruned after `history_days`.
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.snapshots import copy_to_parquet


def write_history(
    layout: Layout, practice_id: str, snapshot_dir: Path, as_of: date, history_days: int
) -> None:
    """Record the published snapshot's `outstanding_balances` as the practice's day `as_of`."""
    folder = layout.history_dir / practice_id
    folder.mkdir(parents=True, exist_ok=True)
    layout.secure_published(folder)
    target = folder / f"{as_of.isoformat()}.parquet"
    temporary = folder / f".{target.name}.{uuid.uuid4().hex}.tmp"
    con = duck.connect(layout.duckdb)
    try:
        copy_to_parquet(
            con, "balance_history",
            "SELECT *, as_of_date AS snapshot_date FROM read_parquet(?)", temporary,
            [str(snapshot_dir / "outstanding_balances.parquet")],
        )
    finally:
        con.close()
    layout.secure_published(temporary)
    os.replace(temporary, target)
    oldest = as_of - timedelta(days=history_days)
    for path in folder.glob("*.parquet"):
        try:
            day = date.fromisoformat(path.stem)
        except ValueError:
            continue
        if day < oldest:
            path.unlink(missing_ok=True)
