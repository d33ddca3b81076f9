"""Every environment variable the product reads, read in one place.

The Dagster code location (`definitions.py`) and the `balances` command line build their
resources from `Settings.from_env()`; nothing deeper in the package reads the environment,
except the source credentials named in the practices file (`sources/credentials.py`),
which are read only when a source client is opened.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from balances_pipeline.config import DEMO_PRACTICES_FILE

HOME_ENV = "BALANCES_HOME"
PRACTICES_FILE_ENV = "BALANCES_PRACTICES_FILE"
AS_OF_ENV = "BALANCES_AS_OF"
SHARED_GROUP_ENV = "BALANCES_SHARED_GROUP"
MEMORY_LIMIT_ENV = "BALANCES_DUCKDB_MEMORY_LIMIT"
WEBHOOK_ENV = "BALANCES_ALERT_WEBHOOK_URL"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
# The layout past one machine (storage/lake.py): both set, or neither.
CATALOG_ENV = "BALANCES_WAREHOUSE_CATALOG"
DATA_PATH_ENV = "BALANCES_WAREHOUSE_DATA_PATH"

DEFAULT_HOME = "~/.balances"
DEFAULT_MEMORY_LIMIT = "64MB"


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use (one line)."""


_PASSWORD = re.compile(r"(^|[\s:])password\s*=", re.IGNORECASE)


class LakeError(SettingsError):
    """The DuckLake settings cannot be used (one line)."""


@dataclass(frozen=True)
class LakeSettings:
    """Where the DuckLake is: its catalog (`postgres:dbname=lake host=db user=balances`,
    the password from libpq's own PGPASSWORD or PGPASSFILE) and its data path."""

    catalog: str
    data_path: str

    def __post_init__(self) -> None:
        if not self.catalog.strip():
            raise LakeError(f"{CATALOG_ENV} is empty")
        if not self.data_path.strip():
            raise LakeError(f"{DATA_PATH_ENV} is empty")
        if _PASSWORD.search(self.catalog):
            raise LakeError(
                f"{CATALOG_ENV} holds a password; give it to libpq instead (PGPASSWORD or"
                " PGPASSFILE), never in the catalog string"
            )
        if "'" in self.catalog or "'" in self.data_path:
            raise LakeError(f"{CATALOG_ENV} and {DATA_PATH_ENV} cannot contain a quote (')")

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> LakeSettings | None:
        catalog, data_path = environ.get(CATALOG_ENV) or "", environ.get(DATA_PATH_ENV) or ""
        if not catalog and not data_path:
            return None
        if not catalog or not data_path:
            missing = CATALOG_ENV if not catalog else DATA_PATH_ENV
            raise LakeError(f"{missing} is not set; the DuckLake layout needs both"
                            f" {CATALOG_ENV} and {DATA_PATH_ENV}")
        return cls(catalog, data_path)

    @property
    def local_data_path(self) -> Path | None:
        """The data path when it is a directory of this machine (not object storage)."""
        return None if "://" in self.data_path else Path(self.data_path).expanduser()

    def attach_sql(self, *, read_only: bool = False) -> str:
        data_path = self.data_path
        if self.local_data_path is not None:
            data_path = str(self.local_data_path.resolve())
        # No data inlining: DuckLake keeps small inserts' rows in one catalog table per
        # table, and a commit deleting any of them conflicts with every concurrent insert
        # into that table (every worker's sync_runs row); as files, only commits deleting
        # from the same file conflict (the same practice's rows).
        options = (["READ_ONLY"] if read_only
                   else [f"DATA_PATH '{data_path}'", "DATA_INLINING_ROW_LIMIT 0"])
        return f"ATTACH 'ducklake:{self.catalog}' AS warehouse ({', '.join(options)})"


@dataclass(frozen=True)
class Settings:
    home: Path
    practices_file: Path
    as_of: date | None = None
    shared_group: str | None = None
    duckdb_memory_limit: str = DEFAULT_MEMORY_LIMIT
    alert_webhook_url: str | None = None
    # The Dagster instance the `balances` command reports staff changes to (DAGSTER_HOME).
    dagster_home: Path | None = None
    # The warehouse on DuckLake (BALANCES_WAREHOUSE_CATALOG, _DATA_PATH); None: on this machine.
    lake: LakeSettings | None = None

    @classmethod
    def from_env(cls) -> Settings:
        environ = os.environ
        return cls(
            home=Path(environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve(),
            practices_file=Path(environ[PRACTICES_FILE_ENV]).expanduser()
            if environ.get(PRACTICES_FILE_ENV) else DEMO_PRACTICES_FILE,
            as_of=parse_as_of(environ.get(AS_OF_ENV) or None),
            shared_group=environ.get(SHARED_GROUP_ENV) or None,
            duckdb_memory_limit=environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT,
            alert_webhook_url=environ.get(WEBHOOK_ENV) or None,
            dagster_home=Path(environ[DAGSTER_HOME_ENV]).expanduser()
            if environ.get(DAGSTER_HOME_ENV) else None,
            lake=LakeSettings.from_environ(dict(environ)),
        )

    def layout(self):  # -> Layout (imported late: settings sits below storage)
        from balances_pipeline.storage.layout import Layout

        return Layout(
            self.home, shared_group=self.shared_group,
            duckdb_memory_limit=self.duckdb_memory_limit, lake=self.lake,
        ).ensure()


def parse_as_of(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SettingsError(f"{AS_OF_ENV}: expected yyyy-mm-dd, got {text!r}") from None


def layout_from_env():
    """The `Layout` of `$BALANCES_HOME` (tests and scripts; the pipeline gets it from its
    resources)."""
    return Settings.from_env().layout()
