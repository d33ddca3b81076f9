"""Where the pipeline keeps its files: `$BALANCES_HOME` (default `~/.balances`).

    warehouse.duckdb                 analyst file: views over the published snapshots only
    published/current/<practice>     symlink to the practice's current snapshot (atomic swap)
    published/current/_schema        zero-row files so views work before any sync
    published/snapshots/<practice>/  immutable snapshot directories of Parquet files
    published/history/<practice>/    balance_history: one file per practice-local day
    pipeline/working.duckdb          the pipeline's working database (state, history)
    pipeline/locks/                  cross-process locks (working database, per practice)
    staging/<practice>/              per-sync staging databases (extraction writes here)
    exports/<practice>/              hand-off files for the messaging side
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "BALANCES_HOME"
SHARED_GROUP_ENV = "BALANCES_SHARED_GROUP"


class HomeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    home: Path

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

    @property
    def shared_group_id(self) -> int | None:
        name = os.environ.get(SHARED_GROUP_ENV)
        if not name:
            return None
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise HomeError(f"{SHARED_GROUP_ENV}: unknown group {name!r}") from None

    def publish_dir_mode(self) -> int:
        return 0o750 if self.shared_group_id is not None else 0o700

    def publish_file_mode(self) -> int:
        return 0o640 if self.shared_group_id is not None else 0o600

    def secure_published(self, path: Path) -> None:
        """Apply the published-file permissions (and group, when one is shared)."""
        gid = self.shared_group_id
        mode = self.publish_dir_mode() if path.is_dir() else self.publish_file_mode()
        if gid is not None:
            os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, mode)

    def ensure(self) -> Layout:
        """Create the directory tree with private permissions (0700 dirs, 0600 files)."""
        os.umask(0o077)
        for directory in (
            self.home, self.published_dir, self.current_dir, self.snapshots_dir, self.history_dir
        ):
            directory.mkdir(parents=True, exist_ok=True)
            self.secure_published(directory)
        for directory in (self.pipeline_dir, self.locks_dir, self.home / "staging"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


def balances_home() -> Path:
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser().resolve() if configured else Path.home() / ".balances"


def layout(home: Path | None = None) -> Layout:
    return Layout((home or balances_home()).resolve()).ensure()
