"""`balance_history`: one row per account per practice-local day, the day's last publish.

One Parquet file per practice, day and publish under `published/history/<practice>/`,
named `<day>@<snapshot_id>.parquet` (or a one-row `<day>@<snapshot_id>.empty.parquet`
marker when the day has no balances). A later publish of the same day adds a file and never
rewrites one, so a path an analyst's query listed never changes content; the view keeps,
per practice and day, the newest file it read (storage/analyst.py). A day older than
`history_days` gets an empty marker, which hides it at once. `sweep_history` unlinks, once
their grace period is over, the files a newer one superseded and the days a marker ended.
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from balances_pipeline.storage import duck, lake_published
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.published_names import (
    parse_day,
    parse_published_name,
    published_name,
    remove_stale_temporaries,
    write_marker,
)
from balances_pipeline.storage.snapshots import (
    SCHEMA_PLACEHOLDER,
    SnapshotStore,
    copy_to_parquet,
)

# The id given to the one file per day an earlier release wrote (`<day>.parquet`): lower
# than any real snapshot id, so any later publish of the day supersedes it.
LEGACY_SNAPSHOT_ID = "00000000000000000000-00000000"


def _days(folder: Path) -> dict[date, list[Path]]:
    """The practice's history files by day, oldest name first."""
    days: dict[date, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        parsed = parse_published_name(path.name)
        day = parse_day(parsed.stem) if parsed else None
        if day is not None:
            days.setdefault(day, []).append(path)
    return days


def write_history(
    layout: Layout, practice_id: str, snapshot_dir: Path, as_of: date, history_days: int
) -> None:
    """Record the published snapshot's `outstanding_balances` as the practice's day `as_of`."""
    if layout.lake is not None:
        from balances_pipeline.storage.working_db import WorkingDatabase  # it imports us

        oldest = as_of - timedelta(days=history_days)
        WorkingDatabase(layout).transaction_retrying(
            lambda con: lake_published.write_history_day(con, practice_id, snapshot_dir,
                                                         as_of, oldest)
        )
        return
    folder = layout.history_dir / practice_id
    folder.mkdir(parents=True, exist_ok=True)
    layout.secure_published(folder)
    snapshot_id, day = snapshot_dir.name, as_of.isoformat()
    target = folder / published_name(day, snapshot_id)
    marker = folder / published_name(day, snapshot_id, empty=True)
    if not target.exists() and not marker.exists():
        temporary = folder / f".{day}@{snapshot_id}.{uuid.uuid4().hex}.tmp"
        con = duck.connect(layout.duckdb)
        try:
            copy_to_parquet(
                con, "balance_history",
                "SELECT *, as_of_date AS snapshot_date FROM read_parquet(?)", temporary,
                [str(snapshot_dir / "outstanding_balances.parquet")],
            )
        finally:
            con.close()
        if pq.read_metadata(temporary).num_rows:
            layout.secure_published(temporary)
            os.replace(temporary, target)  # a new name: nobody has listed it
        else:
            write_marker(temporary, marker, {"practice_id": practice_id, "snapshot_date": as_of})
            temporary.unlink()
            layout.secure_published(marker)
    oldest = as_of - timedelta(days=history_days)
    for old_day, paths in _days(folder).items():
        newest = parse_published_name(paths[-1].name)
        if old_day < oldest and newest is not None and not newest.empty:
            # Hidden from now on; its files are unlinked once no query can still read them.
            end = folder / published_name(old_day.isoformat(), snapshot_id, empty=True)
            if not end.exists():
                write_marker(paths[-1], end,
                             {"practice_id": practice_id, "snapshot_date": old_day})
                layout.secure_published(end)
    SnapshotStore(layout).sweep_if_due()


def sweep_history(layout: Layout, *, now: float, older_than: float) -> None:
    """Unlink history files no query may still read: those a newer file of the same day
    superseded, and every file of a day whose newest file is an empty marker, once that
    newest file is `older_than` seconds old (`SnapshotStore.sweep`)."""
    root = layout.history_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith((".", SCHEMA_PLACEHOLDER)) or not folder.is_dir():
            continue
        remove_stale_temporaries(folder, now)
        for paths in _days(folder).values():
            newest = paths[-1]
            try:
                if now - newest.stat().st_mtime <= older_than:
                    continue
            except FileNotFoundError:
                continue
            for path in paths[:-1]:
                path.unlink(missing_ok=True)
            parsed = parse_published_name(newest.name)
            if parsed is not None and parsed.empty:
                newest.unlink(missing_ok=True)  # last: the day shows no rows throughout


def upgrade_history(layout: Layout) -> None:
    """Name the files an earlier release wrote (`<day>.parquet`) as the views read them."""
    root = layout.history_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith((".", SCHEMA_PLACEHOLDER)) or not folder.is_dir():
            continue
        for path in folder.glob("*.parquet"):
            if parse_day(path.stem) is None:
                continue
            try:
                # A link, not a rename: it never replaces a name that exists.
                os.link(path, folder / published_name(path.stem, LEGACY_SNAPSHOT_ID))
            except (FileNotFoundError, FileExistsError):  # another process did it
                continue
            path.unlink(missing_ok=True)
