"""The warehouse on DuckLake: the layout for Dagster workers on several machines.

When `BALANCES_WAREHOUSE_CATALOG` and `BALANCES_WAREHOUSE_DATA_PATH` are set
(`settings.py`), the relations analysts read, the override events and every other table
of the pipeline's shared state live in one DuckLake: its catalog in Postgres (or any
catalog DuckLake accepts), its Parquet files under the data path (a shared directory
here, object storage in production). Nothing is shared through `BALANCES_HOME` any more:
it keeps only what is local to a worker (staging databases, snapshot files being built,
spill files, locks of this machine's processes).

In the lake:

    warehouse.main.<relation>       each relation of the warehouse (account_balances, ...),
                                    one table holding every practice's rows; for the
                                    relations kept in the pipeline's state (sync_runs,
                                    override_events, ...) a view over that state
    warehouse.pipeline.<table>      the pipeline's working tables (schema.WORKING_TABLES),
                                    the source aging report, counters for numbering

A practice's publish is one DuckLake transaction: its rows of every relation replaced and
the state committed with them (`storage/publish.py`). DuckLake retries a commit that lost
a race but whose changes do not conflict (other practices' rows); a logical conflict (two
commits deleting from one data file: two publishes of the same practice) aborts, and the
publish is retried from its start, a bounded number of times (`retry_conflicts`).

The DuckDB extensions come from PyPI packages built for one DuckDB version
(`duckdb-extension-ducklake`, `duckdb-extension-postgres`) and are loaded from their
files: these machines cannot download extensions.
"""

from __future__ import annotations

import importlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from balances_pipeline.settings import LakeError, LakeSettings
from balances_pipeline.storage.duck import DuckSettings

ALIAS = "warehouse"
WORKING_SCHEMA = "pipeline"
ANALYST_SCHEMA = "main"
EXTENSIONS = {"ducklake": "duckdb_extension_ducklake", "postgres": "duckdb_extension_postgres"}
# DuckLake's own retries of a commit that lost a race without a logical conflict.
DUCKLAKE_MAX_RETRIES = 30
DUCKLAKE_RETRY_WAIT_MS = 50
# Our retries of a whole unit of work that hit a logical conflict.
CONFLICT_ATTEMPTS = 8
CONFLICT_FIRST_WAIT_SECONDS = 0.05

T = TypeVar("T")
# Units of work this process ran again after a logical conflict (the benchmark reads it).
conflict_retries = 0


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file of a PyPI extension package for this DuckDB."""
    package = importlib.import_module(EXTENSIONS[name])
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = sorted(folder.glob(f"{name}.duckdb_extension"))
    if not found:
        raise LakeError(
            f"no {name} extension for DuckDB {duckdb.__version__} in {EXTENSIONS[name]};"
            " install the versions pyproject.toml names"
        )
    return found[0]


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for name in EXTENSIONS:
        con.execute(f"INSTALL '{extension_file(name)}'")
        con.execute(f"LOAD {name}")


def open_lake(settings: DuckSettings, lake: LakeSettings, *,
              read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as `warehouse`."""
    if lake.local_data_path is not None and not read_only:
        lake.local_data_path.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:", config=settings.config())
    try:
        load_extensions(con)
        con.execute(f"SET ducklake_max_retry_count = {DUCKLAKE_MAX_RETRIES}")
        con.execute(f"SET ducklake_retry_wait_ms = {DUCKLAKE_RETRY_WAIT_MS}")
        try:
            con.execute(lake.attach_sql(read_only=read_only))
        except duckdb.Error as error:
            raise LakeError(f"cannot attach the DuckLake {lake.catalog!r}: "
                            f"{str(error).splitlines()[0]}") from None
    except BaseException:
        con.close()
        raise
    return con


class LakeConnections:
    """One attached DuckDB per process and lake (attaching costs a few hundred ms); each
    unit of work gets its own cursor on it, in the working schema."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._open: dict[tuple[LakeSettings, bool], duckdb.DuckDBPyConnection] = {}

    def base(self, settings: DuckSettings, lake: LakeSettings,
             read_only: bool) -> duckdb.DuckDBPyConnection:
        key = (lake, read_only)
        with self._guard:
            if key not in self._open:
                self._open[key] = open_lake(settings, lake, read_only=read_only)
            return self._open[key]

    @contextmanager
    def cursor(self, settings: DuckSettings, lake: LakeSettings, *, schema: str,
               read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self.base(settings, lake, read_only).cursor()
        try:
            cursor.execute(f"USE {ALIAS}.{schema}")
            yield cursor
        finally:
            cursor.close()

    def close_all(self) -> None:
        with self._guard:
            for con in self._open.values():
                con.close()
            self._open.clear()


CONNECTIONS = LakeConnections()


def is_conflict(error: BaseException) -> bool:
    """A commit DuckLake refused because another one changed the same data."""
    text = str(error).lower()
    return isinstance(error, duckdb.Error) and (
        "conflict" in text or "exceeded the maximum retry count" in text
    )


def retry_conflicts(work: Callable[[], T], *, attempts: int = CONFLICT_ATTEMPTS,
                    on_retry: Callable[[int], None] | None = None) -> T:
    """Run `work` (one transaction) again after a logical conflict, `attempts` times at
    most, waiting a growing, jittered while in between."""
    wait = CONFLICT_FIRST_WAIT_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except duckdb.Error as error:
            if not is_conflict(error) or attempt == attempts:
                raise
        global conflict_retries
        conflict_retries += 1
        if on_retry is not None:
            on_retry(attempt)
        time.sleep(wait * (1 + random.random()))
        wait *= 2
    raise AssertionError("unreachable")
