"""Shared fixtures: a private BALANCES_HOME, the simulator on loopback, a practices file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml

from balances_pipeline.config import load_practices
from balances_pipeline.settings import Settings
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import SimPractice, SimulatorServer

DEVELOPER_KEY_ENV = "TEST_OD_DEVELOPER_KEY"


@pytest.fixture
def balances_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "balances_home"
    monkeypatch.setenv("BALANCES_HOME", str(home))
    monkeypatch.delenv("BALANCES_AS_OF", raising=False)
    return home


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


def warehouse_query(sql: str, params: list | None = None) -> list[tuple]:
    """Query the analyst file of $BALANCES_HOME read-only, as an analyst would."""
    con = duckdb.connect(str(layout().warehouse_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def warehouse_dicts(sql: str, params: list | None = None) -> list[dict]:
    con = duckdb.connect(str(layout().warehouse_path), read_only=True)
    try:
        cursor = con.execute(sql, params or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def sync_practice(practice, **options):
    """A whole sync as the environment configures it ($BALANCES_HOME, $BALANCES_AS_OF)."""
    from balances_pipeline.pipeline.sync import sync_practice as sync

    settings = Settings.from_env()
    return sync(practice, settings.layout(), as_of=settings.as_of, **options)
