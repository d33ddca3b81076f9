"""Mode aging_report against an independent Open Dental-compatible server: aging.md's mapping."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.storage.reader import analyst_connection
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    write_practices_file,
)
from balances_pipeline_tests.od_double import OpenDentalDouble, serve

# Each test runs in both layouts: on this machine, and the warehouse on DuckLake.
pytestmark = pytest.mark.usefixtures("both_layouts")

D = Decimal


def aging_row(pat_num: int, b0: str, b31: str, b61: str, b90: str, ins: str = "0",
              wo: str = "0", portion: str | None = None, name: str = "Doe, Jane") -> dict:
    total = D(b0) + D(b31) + D(b61) + D(b90)
    return {
        "PatNum": pat_num, "patName": name, "Bal_0_30": float(b0), "Bal_31_60": float(b31),
        "Bal_61_90": float(b61), "BalOver90": float(b90), "BalTotal": float(total),
        "InsWoEst": float(wo), "InsPayEst": float(ins),
        "PatientPortion": float(D(portion) if portion is not None else total - D(ins) - D(wo)),
        "Guarantor": pat_num, "SomeFieldWeIgnore": "x",
    }


HAND_WRITTEN_ROWS = [
    aging_row(101, "100.00", "0", "0", "200.00"),                  # over 90 open
    aging_row(102, "60.00", "0", "0", "0"),                         # only current
    aging_row(103, "-30.00", "0", "0", "0", name="Credit, Carl"),   # credit balance
    aging_row(104, "0", "300.00", "0", "0", ins="240.00"),          # pending insurance
    aging_row(105, "10.10", "20.20", "30.30", "0", ins="5.05", wo="1.01"),
    aging_row(106, "0.10", "0.20", "0", "0", portion="0.25"),       # source disagrees
]


def expected_account(row: dict) -> dict:
    """aging.md, mode aging_report, written out independently of the SQL under test."""
    money = {key: D(str(row[key])).quantize(D("0.01")) for key in row if key.startswith(
        ("Bal", "Ins", "Patient"))}
    buckets = [("Bal_0_30", 0), ("Bal_31_60", 31), ("Bal_61_90", 61), ("BalOver90", 91)]
    oldest = [lower for key, lower in buckets if money[key] > 0]
    return {
        "account_id": str(row["PatNum"]),
        "balance_total": money["BalTotal"],
        "bucket_0_30": money["Bal_0_30"],
        "bucket_31_60": money["Bal_31_60"],
        "bucket_61_90": money["Bal_61_90"],
        "bucket_91_120": None,
        "bucket_over_120": None,
        "bucket_over_90": money["BalOver90"],
        "insurance_estimate": money["InsPayEst"],
        "writeoff_estimate": money["InsWoEst"],
        "patient_portion": money["BalTotal"] - money["InsPayEst"] - money["InsWoEst"],
        "insurance_portion": money["InsPayEst"],
        "days_outstanding": max(oldest) if oldest and money["BalTotal"] > 0 else None,
    }


@pytest.fixture
def double_practice(tmp_path: Path, balances_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev-secret-1")
    monkeypatch.setenv("TEST_DELTA_DENTAL_CUSTOMER_KEY", "cust-secret-2")
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    double = OpenDentalDouble("ODFHIR dev-secret-1/cust-secret-2", HAND_WRITTEN_ROWS)
    with serve(double):
        path = write_practices_file(
            tmp_path / "practices.yaml",
            [practice_entry("delta_dental", double.url, timezone="Pacific/Honolulu")],
        )
        yield double, load_practices(path).practice("delta_dental")


def fetch(query: str, params: list | None = None) -> list[dict]:
    con = analyst_connection(layout())
    try:
        cursor = con.execute(query, params or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def test_account_balances_follow_aging_md_to_the_cent(double_practice) -> None:
    double, practice = double_practice
    outcome = sync_practice(practice)

    rows = fetch("SELECT * FROM account_balances ORDER BY account_id")
    assert len(rows) == len(HAND_WRITTEN_ROWS) == outcome.accounts
    for row, source in zip(rows, HAND_WRITTEN_ROWS, strict=True):
        expected = expected_account(source)
        assert {key: row[key] for key in expected} == expected
        assert row["practice_id"] == "delta_dental"
        assert row["as_of_date"] == date(2026, 11, 30)
        assert row["source_mode"] == "aging_report"
        assert row["sync_id"] == outcome.sync_id
        assert row["has_rejected_rows"] is False
    assert rows[0]["account_name"] == "Doe, Jane"
    assert double.requests[0].startswith("/api/v1/reports/Aging?DateAsOf=2026-11-30")


def test_aging_summary_agrees_with_account_balances(double_practice) -> None:
    _, practice = double_practice
    sync_practice(practice)
    [summary] = fetch("SELECT * FROM aging_summary")
    expected = [expected_account(row) for row in HAND_WRITTEN_ROWS]
    for column in ("balance_total", "bucket_0_30", "bucket_31_60", "bucket_61_90",
                   "bucket_over_90", "patient_portion", "insurance_portion"):
        assert summary[column] == sum(account[column] for account in expected), column
    assert summary["bucket_91_120"] is None and summary["bucket_over_120"] is None
    assert summary["account_count"] == len(expected)
    assert summary["overridden_account_count"] == 0
    over_90 = sum(a["bucket_over_90"] for a in expected)
    positive = sum(a["bucket_0_30"] + a["bucket_31_60"] + a["bucket_61_90"] for a in expected)
    assert summary["pct_over_90"] == (100 * over_90 / (positive + over_90)).quantize(D("0.01"))


def test_patient_portion_mismatch_is_recorded_not_hidden(double_practice) -> None:
    _, practice = double_practice
    outcome = sync_practice(practice)
    found = fetch('SELECT account_id, "check", expected, actual FROM balance_discrepancies')
    assert found == [{
        "account_id": "106", "check": "patient_portion_mismatch",
        "expected": D("0.25"), "actual": D("0.30"),
    }]
    assert outcome.discrepancies == {"patient_portion_mismatch": 1}
    [run] = fetch("SELECT * FROM sync_runs")
    assert run["status"] == "success" and run["sync_id"] == outcome.sync_id
    assert run["accounts"] == 6 and run["rows_extracted"] == 6 and run["rows_rejected"] == 0
    assert run["requests"] == 1 and run["retries"] == 0
    assert run["fresh_until"] is not None


def test_pages_until_a_short_page(tmp_path, balances_home, monkeypatch) -> None:
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "k1")
    monkeypatch.setenv("TEST_EPSILON_DENTAL_CUSTOMER_KEY", "k2")
    rows = [aging_row(1000 + i, f"{i}.01", "0", "0", "0") for i in range(250)]
    double = OpenDentalDouble("ODFHIR k1/k2", rows)
    with serve(double):
        path = write_practices_file(
            tmp_path / "p.yaml", [practice_entry("epsilon_dental", double.url)]
        )
        outcome = sync_practice(load_practices(path).practice("epsilon_dental"))
    assert outcome.accounts == 250
    offsets = [request.split("Offset=")[1].split("&")[0] for request in double.requests]
    assert offsets == ["0", "100", "200"]
    [total] = fetch("SELECT sum(balance_total) AS t FROM account_balances")
    assert total["t"] == sum(D(f"{i}.01") for i in range(250))
