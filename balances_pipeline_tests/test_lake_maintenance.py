"""The DuckLake layout's maintenance: fewer files, the same data, syncs go on after it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.storage.lake import ALIAS
from balances_pipeline.storage.lake_maintenance import maintain
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_query as query

BALANCES = str(Path(sys.executable).parent / "balances")
PRACTICES = ("alpha_dental", "beta_dental")


def live_files() -> int:
    with WorkingDatabase(layout()).connect() as con:
        return con.execute(
            f"SELECT count(*) FROM __ducklake_metadata_{ALIAS}.ducklake_data_file"  # noqa: S608
            " WHERE end_snapshot IS NULL"
        ).fetchall()[0][0]


def everything() -> list[tuple]:
    return [query(f"SELECT * FROM {relation} ORDER BY ALL")  # noqa: S608
            for relation in ("account_balances", "outstanding_balances", "aging_summary",
                             "sync_runs", "balance_history")]


@pytest.mark.parametrize("both_layouts", ["lake"], indirect=True)
def test_maintenance_compacts_files_and_keeps_every_row(simulated, both_layouts) -> None:
    for _ in range(3):
        for practice_id in PRACTICES:
            sync_practice(simulated.practice(practice_id))
    before, files = everything(), live_files()

    result = maintain(layout(), keep_days=1)
    assert result.live_files_before == files
    assert result.live_files_after < files
    assert live_files() == result.live_files_after
    assert everything() == before

    simulated.server.advance_clock(1, "alpha_dental")
    sync_practice(simulated.practice("alpha_dental"))
    assert query("SELECT count(*) FROM sync_runs WHERE status = 'success'") == [(7,)]


@pytest.mark.parametrize("both_layouts", ["local"], indirect=True)
def test_maintain_on_one_machine_says_there_is_nothing_to_do(simulated, both_layouts) -> None:
    done = subprocess.run([BALANCES, "warehouse", "maintain"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "balances: error: the warehouse is not on DuckLake (BALANCES_WAREHOUSE_CATALOG):"
        " nothing to maintain"
    ]
