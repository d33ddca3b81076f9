"""A practice nobody on the team wrote (the third-party synthetic Open Dental ledger, see
fixtures/NOTICE-synthetic-opendental.md), served by the simulator and synced in
aging_report mode: every account equals an independent computation of aging.md."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    write_practices_file,
)
from balances_pipeline_tests.independent_aging import open_dental_report

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"


@pytest.mark.parametrize("as_of", ["2026-11-30", "2027-02-15"])
def test_synthetic_practice_matches_independent_aging(
    as_of: str, tmp_path, balances_home, monkeypatch
) -> None:
    tables = json.loads(gzip.decompress(FIXTURE.read_bytes()))["tables"]
    expected = open_dental_report(tables, date.fromisoformat(as_of))
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev")
    monkeypatch.setenv("TEST_OMAHA_DENTAL_CUSTOMER_KEY", "cust")
    monkeypatch.setenv("BALANCES_AS_OF", as_of)
    practice = SimPractice("omaha_dental", "cust", dataset=FIXTURE, today=date(2026, 11, 29))
    with SimulatorServer([practice], "dev") as server:
        path = write_practices_file(
            tmp_path / "p.yaml", [practice_entry("omaha_dental", server.url)]
        )
        sync_practice(load_practices(path).practice("omaha_dental"))
    con = duckdb.connect(str(layout().warehouse_path), read_only=True)
    rows = con.execute(
        "SELECT account_id, bucket_0_30, bucket_31_60, bucket_61_90, bucket_over_90,"
        " balance_total, insurance_estimate, writeoff_estimate, patient_portion"
        " FROM account_balances"
    ).fetchall()
    con.close()
    actual = {
        int(r[0]): dict(zip(["Bal_0_30", "Bal_31_60", "Bal_61_90", "BalOver90", "BalTotal",
                             "InsPayEst", "InsWoEst", "patient_portion"], r[1:], strict=True))
        for r in rows
    }
    assert len(expected) > 100
    assert set(actual) == set(expected)
    for family, figures in expected.items():
        row = actual[family]
        assert row.pop("patient_portion") == (
            figures["BalTotal"] - figures["InsPayEst"] - figures["InsWoEst"]
        )
        assert row == figures, family
    assert any(figures["BalTotal"] < 0 for figures in expected.values())
