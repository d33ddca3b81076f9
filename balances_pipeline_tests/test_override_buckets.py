"""The effective buckets of an override (product.md): worked by hand, checked on the SQL."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from balances_pipeline.pipeline.overrides import build_outstanding_balances

D = Decimal
MONEY = pa.decimal128(14, 2)
PARAMS = {"practice_id": "p", "sync_id": "s", "as_of_date": "2026-11-30",
          "synced_at": "2026-11-30 12:00:00+00"}


def balances(**row) -> dict:
    base = {"practice_id": "p", "account_id": "1", "account_name": "A", "as_of_date": "2026-11-30",
            "synced_at": "2026-11-30 12:00:00+00", "sync_id": "s", "source_mode": "ledger",
            "bucket_91_120": None, "bucket_over_120": None, "insurance_estimate": "0",
            "writeoff_estimate": "0", "insurance_portion": "0", "has_rejected_rows": False,
            "guarantor_status": None}
    base.update(row)
    return base


def effective(row: dict, patient: str | None = None, insurance: str | None = None) -> dict:
    con = duckdb.connect()
    money = ["balance_total", "bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_91_120",
             "bucket_over_120", "bucket_over_90", "insurance_estimate", "writeoff_estimate",
             "patient_portion", "insurance_portion"]
    columns = ", ".join(
        f"CAST(? AS DECIMAL(14,2)) AS {k}" if k in money else
        ("CAST(? AS INTEGER) AS days_outstanding" if k == "days_outstanding" else f"? AS {k}")
        for k in row
    )
    con.execute(f"CREATE TABLE account_balances AS SELECT {columns}", list(row.values()))
    overrides = pa.table({
        "override_id": ["o1"], "account_id": [row["account_id"]],
        "patient_portion": pa.array([D(patient) if patient else None], MONEY),
        "insurance_portion": pa.array([D(insurance) if insurance else None], MONEY),
    })
    build_outstanding_balances(con, PARAMS, overrides)
    cursor = con.execute("SELECT * FROM outstanding_balances")
    names = [c[0] for c in cursor.description]
    return dict(zip(names, cursor.fetchall()[0], strict=True))


def ledger_account() -> dict:
    # aging.md example A plus E: 0_30 100, 91_120 120, over_120 150 -> total 370, days 152
    return balances(balance_total="370", bucket_0_30="100", bucket_31_60="0", bucket_61_90="0",
                    bucket_91_120="120", bucket_over_120="150", bucket_over_90="270",
                    patient_portion="370", days_outstanding=152)


def test_a_decrease_is_taken_from_the_oldest_buckets_first() -> None:
    row = effective(ledger_account(), patient="200.00")  # d = 200 - 370 = -170
    assert (row["bucket_over_120"], row["bucket_91_120"], row["bucket_over_90"]) == (
        D("0.00"), D("100.00"), D("100.00"))
    assert (row["bucket_61_90"], row["bucket_31_60"], row["bucket_0_30"]) == (
        D("0.00"), D("0.00"), D("100.00"))
    assert row["balance_total"] == D("200.00")
    assert row["days_outstanding"] == 91  # its bucket (over 120) is empty now: 91-120 is oldest
    assert row["synced_balance_total"] == D("370.00") and row["is_overridden"]


def test_an_increase_goes_to_0_30_and_keeps_days() -> None:
    row = effective(ledger_account(), patient="400.00")  # d = +30
    assert row["bucket_0_30"] == D("130.00") and row["bucket_over_120"] == D("150.00")
    assert row["days_outstanding"] == 152
    total = sum(row[k] for k in ("bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_91_120",
                                 "bucket_over_120"))
    assert total == row["balance_total"] == D("400.00")


def test_an_override_to_a_credit_empties_every_bucket() -> None:
    row = effective(ledger_account(), patient="-20.00")
    assert row["balance_total"] == D("-20.00")
    assert all(row[k] == 0 for k in ("bucket_0_30", "bucket_91_120", "bucket_over_120"))
    assert row["days_outstanding"] is None


def test_insurance_override_sets_the_estimate_and_moves_buckets_without_a_split() -> None:
    # Open Dental shape: no 91-120/over-120 split; 0_30 50, 31_60 0, 61_90 30, over_90 220
    account = balances(balance_total="300", bucket_0_30="50", bucket_31_60="0",
                       bucket_61_90="30", bucket_over_90="220", insurance_estimate="100",
                       insurance_portion="100", writeoff_estimate="20", patient_portion="180",
                       days_outstanding=91, source_mode="aging_report")
    row = effective(account, insurance="0.00")  # total 180 + 0 + 20 = 200, d = -100
    assert row["insurance_estimate"] == D("0.00") and row["insurance_portion"] == D("0.00")
    assert row["balance_total"] == D("200.00")
    assert row["bucket_over_90"] == D("120.00") and row["bucket_91_120"] is None
    assert row["bucket_61_90"] == D("30.00") and row["bucket_0_30"] == D("50.00")
    assert row["days_outstanding"] == 91


@pytest.mark.parametrize(("patient", "expected_days"), [("60.00", 0), ("1.00", 0)])
def test_days_fall_back_to_the_oldest_positive_bucket(patient, expected_days) -> None:
    account = balances(balance_total="100", bucket_0_30="60", bucket_31_60="40",
                       bucket_61_90="0", bucket_over_90="0", patient_portion="100",
                       days_outstanding=31, source_mode="aging_report")
    row = effective(account, patient=patient)
    assert row["bucket_31_60"] == D("0.00")
    assert row["days_outstanding"] == expected_days


def test_no_override_leaves_the_row_as_synced() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE account_balances AS SELECT 'p' AS practice_id, '9' AS account_id,"
                " 'X' AS account_name, DATE '2026-11-30' AS as_of_date,"
                " TIMESTAMPTZ '2026-11-30 12:00:00+00' AS synced_at, 's' AS sync_id,"
                " 'aging_report' AS source_mode, 10.00::DECIMAL(14,2) AS balance_total,"
                " 10.00::DECIMAL(14,2) AS bucket_0_30, 0::DECIMAL(14,2) AS bucket_31_60,"
                " 0::DECIMAL(14,2) AS bucket_61_90, NULL::DECIMAL(14,2) AS bucket_91_120,"
                " NULL::DECIMAL(14,2) AS bucket_over_120, 0::DECIMAL(14,2) AS bucket_over_90,"
                " 0::DECIMAL(14,2) AS insurance_estimate, 0::DECIMAL(14,2) AS writeoff_estimate,"
                " 10.00::DECIMAL(14,2) AS patient_portion, 0::DECIMAL(14,2) AS insurance_portion,"
                " 0 AS days_outstanding, false AS has_rejected_rows,"
                " NULL::VARCHAR AS guarantor_status")
    empty = pa.table({"override_id": pa.array([], pa.string()),
                      "account_id": pa.array([], pa.string()),
                      "patient_portion": pa.array([], MONEY),
                      "insurance_portion": pa.array([], MONEY)})
    build_outstanding_balances(con, PARAMS, empty)
    row = con.execute("SELECT balance_total, bucket_0_30, days_outstanding, is_overridden,"
                      " override_id FROM outstanding_balances").fetchall()[0]
    assert row == (D("10.00"), D("10.00"), 0, False, None)
