"""Where the pipeline keeps its files: `$BALANCES_HOME` (default `~/.balances`).

    warehouse.duckdb                 analyst file: views over the published snapshots only
    published/current/<practice>     symlink to the practice's current snapshot (atomic swap)
    published/current/_schema        zero-row files so views work before any sync
    published/snapshots/<practice>/  immutable snapshot directories of Parquet files:
                                     `<relation>.parquet` (the pipeline's), and the names
                                     views read, `<relation>@<snapshot_id>.parquet`
    published/history/<practice>/    balance_history: `<day>@<snapshot_id>.parquet` files
    published/.switch/               symlinks being made, renamed into current/
    pipeline/working.duckdb          the pipeline's working database (state, history)
    pipeline/locks/                  cross-process locks (working database, per practice)
    staging/<practice>/              per-sync staging databases (extraction writes here)
    exports/<practice>/              hand-off files for the messaging side
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from balances_pipeline.settings import LakeSettings, SettingsError
from balances_pipeline.storage.duck import DuckSettings

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class HomeError(SettingsError):
    """`BALANCES_HOME` (or the settings that go with it) cannot be used (one line)."""


@dataclass(frozen=True)
class Layout:
    """Paths and file permissions under one `BALANCES_HOME`, with the settings that go
    with it (the group published files are shared with, DuckDB's memory budget)."""

    home: Path
    shared_group: str | None = None
    duckdb_memory_limit: str = "64MB"
    # Set: the warehouse and the shared state are in this DuckLake (storage/lake.py), and
    # the home keeps only what is local to this worker.
    lake: LakeSettings | None = None

    def __post_init__(self) -> None:
        # `[` and `*` are fine (the analyst views escape them for DuckDB's glob syntax); a
        # `?` is not: DuckDB reads it in a database file's path as the start of options and
        # cannot keep a database (its write-ahead log) under such a directory.
        if "?" in str(self.home):
            raise HomeError(
                f"BALANCES_HOME {str(self.home)!r} contains '?', which DuckDB cannot have in"
                " a database path; choose a home without it"
            )

    @property
    def duckdb(self) -> DuckSettings:
        """Settings of every pipeline DuckDB connection: spills go under this home."""
        return DuckSettings(self.duckdb_memory_limit, self.pipeline_dir / "tmp")

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def published_dir(self) -> Path:
        return self.home / "published"

    @property
    def current_dir(self) -> Path:
        return self.published_dir / "current"

    @property
    def history_dir(self) -> Path:
        return self.published_dir / "history"

    @property
    def snapshots_dir(self) -> Path:
        return self.published_dir / "snapshots"

    @property
    def pipeline_dir(self) -> Path:
        return self.home / "pipeline"

    @property
    def working_db_path(self) -> Path:
        return self.pipeline_dir / "working.duckdb"

    @property
    def locks_dir(self) -> Path:
        return self.pipeline_dir / "locks"

    def staging_dir(self, practice_id: str) -> Path:
        return self.home / "staging" / practice_id

    def exports_dir(self, practice_id: str) -> Path:
        return self.home / "exports" / practice_id

    @cached_property
    def shared_group_id(self) -> int | None:
        if not self.shared_group:
            return None
        try:
            return grp.getgrnam(self.shared_group).gr_gid
        except KeyError:
            raise HomeError(f"BALANCES_SHARED_GROUP: unknown group {self.shared_group!r}") from None

    def publish_dir_mode(self) -> int:
        return 0o750 if self.shared_group_id is not None else PRIVATE_DIR_MODE

    def publish_file_mode(self) -> int:
        return 0o640 if self.shared_group_id is not None else PRIVATE_FILE_MODE

    def secure_published(self, path: Path) -> None:
        """Apply the published-file permissions (and group, when one is shared)."""
        gid = self.shared_group_id
        mode = self.publish_dir_mode() if path.is_dir() else self.publish_file_mode()
        if gid is not None:
            os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, mode)

    def ensure(self) -> Layout:
        """Create the directory tree with private permissions (0700 directories; files
        are made 0600 by whoever writes them: `secure_private`, `secure_published`)."""
        for directory in (
            self.home, self.published_dir, self.current_dir, self.snapshots_dir, self.history_dir
        ):
            directory.mkdir(parents=True, exist_ok=True)
            self.secure_published(directory)
        for directory in (self.pipeline_dir, self.locks_dir, self.home / "staging",
                          self.pipeline_dir / "tmp"):
            directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(directory, PRIVATE_DIR_MODE)
        return self


def secure_private(*paths: Path) -> None:
    """Make files the pipeline alone reads 0600 (DuckDB creates its files 0644 under the
    default umask; the tree is 0700 as well, this keeps each file private on its own)."""
    for path in paths:
        try:
            os.chmod(path, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass
