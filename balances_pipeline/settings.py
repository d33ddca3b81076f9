"""Every environment variable the product reads, read in one place.

The Dagster code location (`definitions.py`) and the `balances` command line build their
resources from `Settings.from_env()`; nothing deeper in the package reads the environment,
except the source credentials named in the practices file (`sources/credentials.py`),
which are read only when a source client is opened.
"""

from __future__ import annotations

import os
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

DEFAULT_HOME = "~/.balances"
DEFAULT_MEMORY_LIMIT = "64MB"


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use (one line)."""


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
        )

    def layout(self):  # -> Layout (imported late: settings sits below storage)
        from balances_pipeline.storage.layout import Layout

        return Layout(
            self.home, shared_group=self.shared_group,
            duckdb_memory_limit=self.duckdb_memory_limit,
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
