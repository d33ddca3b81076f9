"""Resources own the I/O: their settings are honoured everywhere, and tests can hand the
sync a different source client, as Dagster's testing guide does."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

from dagster import DagsterInstance, materialize

import balances_pipeline
from balances_pipeline.config import Practice
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import BalancesWarehouse, SourceClients, resources_from
from balances_pipeline.settings import Settings
from balances_pipeline.sources.clients import SourceClient, open_client
from balances_pipeline.storage import duck
from balances_pipeline_tests.conftest import warehouse_query

# Modules allowed to read the environment: the settings, the source credentials (read
# when a client opens) and the demo/simulator entry points, which set up a demo shell.
ENVIRONMENT_READERS = {"settings.py", "sources/credentials.py", "demo/run.py", "demo/ui.py"}


class RecordingSources(SourceClients):
    """The real client, recording which practices were opened."""

    def open(self, practice: Practice) -> SourceClient:
        OPENED.append(practice.id)
        return open_client(practice)


OPENED: list[str] = []


def test_a_test_hands_the_sync_its_own_source_client(simulated) -> None:
    OPENED.clear()
    resources = {**resources_from(Settings.from_env()), "sources": RecordingSources()}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_sync_assets(practice_partitions(simulated.practices)),
            partition_key="gamma_dental", instance=instance, resources=resources,
        )
    assert result.success
    assert OPENED == ["gamma_dental"]
    [(accounts,)] = warehouse_query(
        "SELECT count(*) FROM account_balances WHERE practice_id = 'gamma_dental'"
    )
    assert accounts > 0


def test_the_warehouse_resource_settings_reach_every_connection(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    warehouse = BalancesWarehouse(
        home=str(home), practices_file=str(tmp_path / "unused.yaml"),
        duckdb_memory_limit="96MB",
    )
    layout = warehouse.layout()
    assert layout.home == home.resolve()
    con = duck.connect(layout.duckdb)
    try:
        [(limit, spill)] = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()
    finally:
        con.close()
    assert Path(spill) == home.resolve() / "pipeline" / "tmp"
    assert limit.replace(" ", "").upper().startswith(("96MB", "91.5MIB", "91.5MB"))


def test_settings_come_from_the_environment_once(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BALANCES_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    monkeypatch.setenv("BALANCES_DUCKDB_MEMORY_LIMIT", "80MB")
    settings = Settings.from_env()
    warehouse = resources_from(settings)["warehouse"]
    assert (warehouse.home, warehouse.as_of, warehouse.duckdb_memory_limit) == (
        str((tmp_path / "h").resolve()), "2026-11-30", "80MB"
    )
    assert replace(settings, as_of=None).as_of is None


def test_no_module_below_the_entry_points_reads_the_environment() -> None:
    package = Path(balances_pipeline.__file__).parent
    readers = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("simulator/"):
            continue  # the simulator is a separate program with its own command line
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and (
                isinstance(node.value, ast.Name) and node.value.id == "os"
            ):
                readers.add(relative)
    assert readers <= ENVIRONMENT_READERS, readers - ENVIRONMENT_READERS
