"""Shared fixtures: a private BALANCES_HOME, the simulator on loopback, a practices file,
a Postgres server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from balances_pipeline.config import load_practices
from balances_pipeline.settings import CATALOG_ENV, DATA_PATH_ENV, Settings
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline.storage import lake
from balances_pipeline.storage.reader import read_published

DEVELOPER_KEY_ENV = "TEST_OD_DEVELOPER_KEY"


@pytest.fixture(scope="session")
def postgres_server():  # -> Iterator[PostgresServer]
    """One real Postgres for the session, started only when a test asks for it."""
    from balances_pipeline_tests.postgres_server import PostgresNotInstalled, PostgresServer

    try:
        server = PostgresServer()
    except PostgresNotInstalled as missing:
        pytest.fail(str(missing), pytrace=False)
    with server:
        yield server


@pytest.fixture
def balances_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "balances_home"
    monkeypatch.setenv("BALANCES_HOME", str(home))
    monkeypatch.delenv("BALANCES_AS_OF", raising=False)
    return home


WAREHOUSE_LAYOUTS = ("local", "lake")


@pytest.fixture(params=WAREHOUSE_LAYOUTS)
def both_layouts(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test in each layout: everything under `BALANCES_HOME` on this machine
    ("local"), and the warehouse on DuckLake with its catalog in a new database of the
    test Postgres ("lake"; `storage/lake.py`). Use with
    `pytestmark = pytest.mark.usefixtures("both_layouts")`."""
    if request.param == "local":
        monkeypatch.delenv(CATALOG_ENV, raising=False)
        monkeypatch.delenv(DATA_PATH_ENV, raising=False)
        yield "local"
        return
    server = request.getfixturevalue("postgres_server")
    database = f"lake_{secrets.token_hex(6)}"
    server.create_database(database)
    monkeypatch.setenv(CATALOG_ENV, lake_catalog(server, database))
    monkeypatch.setenv(DATA_PATH_ENV, str(tmp_path / "lake_data"))
    try:
        yield "lake"
    finally:
        lake.CONNECTIONS.close_all()


def lake_catalog(server, database: str) -> str:
    """The DuckLake catalog string of a database of the test Postgres."""
    return f"postgres:dbname={database} host={server.host} port={server.port} user=postgres"


def practice_entry(practice_id: str, base_url: str, **overrides: object) -> dict:
    source = {
        "type": "opendental",
        "base_url": base_url,
        "developer_key_env": DEVELOPER_KEY_ENV,
        "customer_key_env": f"TEST_{practice_id.upper()}_CUSTOMER_KEY",
        **overrides.pop("source", {}),  # type: ignore[dict-item]
    }
    return {
        "id": practice_id,
        "name": practice_id.replace("_", " ").title(),
        "timezone": overrides.pop("timezone", "America/Chicago"),
        "source": source,
        **overrides,
    }


def write_practices_file(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"practices": entries}, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class SimulatedPractices:
    """The simulator plus a practices file pointing at it, with keys in the environment."""

    server: SimulatorServer
    practices_file: Path
    keys: dict[str, str]

    @property
    def practices(self):
        return load_practices(self.practices_file)

    def practice(self, practice_id: str):
        return self.practices.practice(practice_id)


@pytest.fixture
def simulated(
    tmp_path: Path, balances_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatedPractices]:
    sizes = {"alpha_dental": 400, "beta_dental": 120, "gamma_dental": 60}
    keys = {DEVELOPER_KEY_ENV: secrets.token_hex(16)}
    sim_practices = []
    for index, (practice_id, accounts) in enumerate(sizes.items()):
        key = secrets.token_hex(16)
        keys[f"TEST_{practice_id.upper()}_CUSTOMER_KEY"] = key
        sim_practices.append(SimPractice(practice_id, key, accounts=accounts, seed=100 + index,
                                         timezone="America/Chicago"))
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    with SimulatorServer(sim_practices, keys[DEVELOPER_KEY_ENV]) as server:
        entries = [
            practice_entry(practice_id, server.url, source={"max_retries": 3})
            for practice_id in sizes
        ]
        practices_file = write_practices_file(tmp_path / "practices.yaml", entries)
        monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(practices_file))
        yield SimulatedPractices(server, practices_file, keys)


def warehouse_dicts(sql: str, params: list | None = None) -> list[dict]:
    """Query the analyst file of $BALANCES_HOME read-only, as an analyst would."""
    return read_published(layout(), sql, params)


def warehouse_query(sql: str, params: list | None = None) -> list[tuple]:
    return [tuple(row.values()) for row in warehouse_dicts(sql, params)]


def sync_practice(practice, **options):
    """A whole sync as the environment configures it ($BALANCES_HOME, $BALANCES_AS_OF)."""
    from balances_pipeline.pipeline.sync import sync_practice as sync

    settings = Settings.from_env()
    return sync(practice, settings.layout(), as_of=settings.as_of, **options)


# --- test groups: ./dev test -m unit | -m "not operations" | -m operations ------------------

# Each test module's group (the markers are registered in pyproject.toml):
#   unit         pure logic: no server, no Dagster run (in-memory DuckDB is fine)
#   integration  the simulator or a double over loopback HTTP, real DuckDB files,
#                dagster.materialize, the balances / dagster CLIs in a subprocess
#   operations   `dagster dev`, a headless browser, concurrent and killed processes
# A module not listed here is integration. A test marked with a group itself keeps it.
TEST_GROUPS = {
    "test_ledger_aging": "unit",
    "test_duck_connections": "unit",
    "test_lake_settings": "unit",
    "test_ledger_aging_property": "unit",
    "test_set_based_pages": "unit",
    "test_override_buckets": "unit",
    "test_schedules": "unit",
    "test_fleet_schedules": "unit",
    "test_simulator_aging": "unit",
    "test_collapse_guard_rules": "unit",
    "test_aging_report_sync": "integration",
    "test_alerts": "integration",
    "test_bench": "integration",
    "test_checks_per_practice": "integration",
    "test_cli": "integration",
    "test_collection_rules": "integration",
    "test_config": "integration",
    "test_extract_retry_policy": "integration",
    "test_ledger_sync": "integration",
    "test_opendental_faults": "integration",
    "test_opendental_paging": "integration",
    "test_opendental_validation": "integration",
    "test_overrides": "integration",
    "test_schema": "integration",
    "test_simulator_cli": "integration",
    "test_simulator_http": "integration",
    "test_staff_reporting": "integration",
    "test_sync_failures": "integration",
    "test_synthetic_practice": "integration",
    "test_end_to_end": "operations",
    "test_operations": "operations",
    "test_published_churn": "operations",
    "test_killed_sync_blocks_nobody": "operations",
    "test_cli_run_alerts": "operations",
    "test_dagster_on_postgres": "integration",
    "test_two_workers": "operations",
    "test_bench_lake_workers": "operations",
}
DEFAULT_GROUP = "integration"
GROUPS = ("unit", "integration", "operations")
# A server: a test that uses one is not a unit test.
NOT_UNIT_FIXTURES = {"simulated", "postgres_server", "both_layouts"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        group = next((g for g in GROUPS if item.get_closest_marker(g)), None)
        if group is None:
            group = TEST_GROUPS.get(item.path.stem, DEFAULT_GROUP)
            item.add_marker(group)
        if group == "unit" and NOT_UNIT_FIXTURES & set(getattr(item, "fixturenames", ())):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "unit tests use a server fixture (move the module to integration in "
            f"conftest.TEST_GROUPS): {', '.join(misplaced)}"
        )
