"""Published snapshots: immutable per-practice directories of Parquet files, switched atomically.

A practice's published data is the directory its `published/current/<practice>` symlink
points at. Publishing writes a complete new directory, then replaces the symlink with one
`rename(2)`: readers see the previous snapshot or the new one, never a mix, and all of a
practice's relations switch together. Files that did not change are hard-linked from the
previous snapshot, so republishing state (a failed sync's `sync_runs` row) costs little.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from balances_pipeline.schema import ANALYST_RELATIONS, HISTORY_RELATIONS, quoted, select_list
from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import Layout

SCHEMA_PLACEHOLDER = "_schema"
KEEP_OLD_SNAPSHOTS = 2
MIN_AGE_BEFORE_PRUNE_SECONDS = 300


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, relation: str, query: str, path: Path,
                    params: list | None = None) -> None:
    """Write `query`'s rows as `relation` (contract columns and types) to a Parquet file."""
    con.execute(
        f"COPY (SELECT {select_list(relation, 'q')} FROM ({query}) AS q) "  # noqa: S608
        f"TO {sql_literal(str(path))} (FORMAT parquet, COMPRESSION zstd)",
        params or [],
    )


def new_snapshot_id() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


class SnapshotStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def link_path(self, practice_id: str) -> Path:
        return self.layout.current_dir / practice_id

    def current_dir(self, practice_id: str) -> Path | None:
        link = self.link_path(practice_id)
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    def current_id(self, practice_id: str) -> str | None:
        current = self.current_dir(practice_id)
        return current.name if current else None

    def snapshot_dir(self, practice_id: str, snapshot_id: str) -> Path:
        return self.layout.snapshots_dir / practice_id / snapshot_id

    def create(self, practice_id: str) -> Path:
        directory = self.snapshot_dir(practice_id, new_snapshot_id())
        directory.mkdir(parents=True, mode=self.layout.publish_dir_mode())
        self.layout.secure_published(directory.parent)
        self.layout.secure_published(directory)
        return directory

    def carry_over(self, practice_id: str, new_dir: Path, names: list[str]) -> list[str]:
        """Hard-link files of the current snapshot that `new_dir` does not have yet."""
        current = self.current_dir(practice_id)
        linked = []
        if current is None:
            return linked
        for name in names:
            source, target = current / name, new_dir / name
            if source.exists() and not target.exists():
                os.link(source, target)
                linked.append(name)
        return linked

    def point_to(self, practice_id: str, snapshot_dir: Path) -> None:
        """The atomic step: replace the practice's symlink with one rename."""
        for path in snapshot_dir.iterdir():
            self.layout.secure_published(path)
        link = self.link_path(practice_id)
        temporary = link.with_name(f".{practice_id}.{uuid.uuid4().hex}.tmp")
        target = os.path.relpath(snapshot_dir, link.parent)
        os.symlink(target, temporary)
        os.replace(temporary, link)

    def prune(self, practice_id: str) -> None:
        """Drop old snapshots, keeping a few recent ones for readers still holding them."""
        folder = self.layout.snapshots_dir / practice_id
        if not folder.is_dir():
            return
        current = self.current_id(practice_id)
        candidates = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != current)
        now = time.time()
        for old in candidates[:-KEEP_OLD_SNAPSHOTS] if KEEP_OLD_SNAPSHOTS else candidates:
            if now - old.stat().st_mtime > MIN_AGE_BEFORE_PRUNE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)

    def ensure_schema_placeholder(self) -> None:
        """Zero-row files of every relation, so analyst views work before the first sync.

        A file whose columns are not the relation's (written by an earlier release, before
        a column was added) is rewritten: a view naming a column no file has would fail.
        """
        targets = {
            name: (self.layout.history_dir if name in HISTORY_RELATIONS
                   else self.layout.current_dir) / SCHEMA_PLACEHOLDER / f"{name}.parquet"
            for name in ANALYST_RELATIONS
        }
        missing = [
            name for name, target in targets.items()
            if _parquet_columns(target)
            != [column.name for column in ANALYST_RELATIONS[name].analyst_columns]
        ]
        if not missing:
            return
        con = duck.connect(self.layout.duckdb)
        try:
            for name in missing:
                folder = targets[name].parent
                folder.mkdir(parents=True, exist_ok=True)
                self.layout.secure_published(folder)
                columns = ", ".join(
                    f"NULL AS {quoted(column.name)}"
                    for column in ANALYST_RELATIONS[name].analyst_columns
                )
                target = targets[name]
                temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
                copy_to_parquet(con, name, f"SELECT {columns} WHERE false", temporary)  # noqa: S608
                os.replace(temporary, target)
                self.layout.secure_published(target)
        finally:
            con.close()


def _parquet_columns(path: Path) -> list[str] | None:
    """The column names of a Parquet file; None if it is missing or unreadable."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return None
