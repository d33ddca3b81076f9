"""The ledger-mode aging engine (sql/ledger_account_balances.sql) against aging.md.

Every worked example of aging.md has a test of its own, with the expected numbers written
out, and so has each other rule. Ledgers are written Open Dental-shaped and run through the
SQL by `ledger_engine`; test_ledger_aging_property.py compares the SQL with
`independent_aging.age_accounts` over random ledgers and the third-party synthetic practice.
"""

from __future__ import annotations

import re
from decimal import Decimal

import duckdb

from balances_pipeline.schema import RELATIONS
from balances_pipeline.storage.sql_files import create_table_from_sql, load_sql
from balances_pipeline_tests.independent_aging import EMPTY_DATE
from balances_pipeline_tests.ledger_engine import (
    AS_OF,
    MONEY_COLUMNS,
    SQL_NAME,
    claimproc,
    day,
    expected,
    figures,
    ledger,
    load_ledger,
    params,
    patient,
    payment,
    procedure,
    run_engine,
)

D = Decimal


# --- aging.md's worked examples (as_of_date 2026-11-30) -----------------------------------


def test_example_a_credits_go_to_the_oldest_bucket_first() -> None:
    rows = run_engine(ledger(
        procedurelogs=[
            procedure(1, 1, "2026-11-20", "100.00"),  # age 10
            procedure(2, 1, "2026-07-01", "200.00"),  # age 152
        ],
        paysplits=[payment(1, 1, "2026-11-25", "50.00")],
    ))
    assert figures(rows[1]) == expected(
        bucket_0_30="100.00", bucket_over_120="150.00", bucket_over_90="150.00",
        balance_total="250.00", patient_portion="250.00", days_outstanding=152,
    )


def test_example_b_credits_clear_31_60_then_take_from_0_30() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(30), "80.00"), procedure(2, 1, day(31), "80.00")],
        paysplits=[payment(1, 1, day(5), "100.00")],
    ))
    assert day(30) == "2026-10-31" and day(31) == "2026-10-30"
    assert figures(rows[1]) == expected(
        bucket_0_30="60.00", bucket_31_60="0.00", balance_total="60.00",
        patient_portion="60.00", days_outstanding=30,
    )


def test_example_c_credit_balance_has_every_bucket_zero() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(95), "50.00")],
        paysplits=[payment(1, 1, day(10), "80.00")],
    ))
    assert figures(rows[1]) == expected(
        balance_total="-30.00", patient_portion="-30.00", days_outstanding=None,
    )


def test_example_d_pending_insurance_and_no_writeoff_estimate() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(45), "300.00")],
        claimprocs=[claimproc(1, 1, 1, "NotReceived", InsPayEst="240.00", WriteOffEst="-1")],
    ))
    assert figures(rows[1]) == expected(
        bucket_31_60="300.00", balance_total="300.00", insurance_estimate="240.00",
        writeoff_estimate="0.00", patient_portion="60.00", insurance_portion="240.00",
        days_outstanding=45,  # rule 6: the only charge is open
    )


def test_example_e_over_90_split_at_120_121() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(121), "120.00"), procedure(2, 1, day(120), "120.00")],
    ))
    assert figures(rows[1]) == expected(
        bucket_91_120="120.00", bucket_over_120="120.00", bucket_over_90="240.00",
        balance_total="240.00", patient_portion="240.00", days_outstanding=121,
    )


def test_example_f_future_dated_procedure_is_ignored() -> None:
    future = procedure(9, 1, "2026-12-02", "500.00")
    assert run_engine(ledger(procedurelogs=[future])) == {}  # nothing else: not listed
    rows = run_engine(ledger(procedurelogs=[future, procedure(1, 1, day(0), "100.00")]))
    assert figures(rows[1]) == expected(
        bucket_0_30="100.00", balance_total="100.00", patient_portion="100.00",
        days_outstanding=0,
    )
    con = duckdb.connect()
    load_ledger(con, ledger(procedurelogs=[future, procedure(1, 1, day(0), "100.00")]))
    sql = load_sql("ledger_future_entries")
    assert con.execute(sql, {"as_of_date": AS_OF}).fetchall() == [(1, 1, 0, 0, 0)]
    con.close()


# --- the other rules, one by one ------------------------------------------------------------


def test_family_roll_up_names_status_and_rejected_flag() -> None:
    rows = run_engine(
        ledger(
            patients=[patient(1, status="Deceased"), patient(2, guarantor=1), patient(3)],
            procedurelogs=[
                procedure(1, 2, day(3), "10.00"),
                procedure(2, 3, day(3), "20.00"),
                procedure(3, 77, day(3), "30.00"),  # patient unknown: its own guarantor
            ],
        ),
        rejected=("3",),
    )
    assert set(rows) == {1, 3, 77}
    assert rows[1]["account_name"] == "Family1, Pat"
    assert rows[1]["guarantor_status"] == "Deceased"
    assert rows[1]["balance_total"] == D("10.00")
    assert [rows[n]["has_rejected_rows"] for n in (1, 3, 77)] == [False, True, False]
    assert rows[77]["account_name"] is None and rows[77]["balance_total"] == D("30.00")
    assert {row["source_mode"] for row in rows.values()} == {"ledger"}
    assert {row["account_id"] for row in rows.values()} == {"1", "3", "77"}


def test_empty_date_counts_a_credit_and_drops_a_charge() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, EMPTY_DATE, "999.00"), procedure(2, 1, day(61), "70.00")],
        paysplits=[payment(1, 1, EMPTY_DATE, "20.00")],
    ))
    assert figures(rows[1]) == expected(
        bucket_61_90="50.00", balance_total="50.00", patient_portion="50.00",
        days_outstanding=61,
    )


def test_pending_insurance_only_for_completed_procedures_whatever_their_dates() -> None:
    rows = run_engine(ledger(
        procedurelogs=[
            procedure(1, 1, "2027-01-10", "100.00"),  # completed, dated after as_of
            procedure(2, 1, day(5), "100.00", status="TP"),  # planned
        ],
        claimprocs=[
            claimproc(1, 1, 1, "NotReceived", InsPayEst="80.00", WriteOffEst="12.50"),
            claimproc(2, 2, 1, "NotReceived", InsPayEst="60.00", WriteOffEst="5.00"),
            claimproc(3, 1, 1, "Estimate", InsPayEst="70.00", WriteOffEst="9.00"),
        ],
    ))
    assert figures(rows[1]) == expected(
        insurance_estimate="80.00", writeoff_estimate="12.50", insurance_portion="80.00",
        patient_portion="-92.50",
    )


def test_received_claim_payment_and_writeoff_are_separate_credits() -> None:
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(100), "200.00"), procedure(2, 1, day(10), "50.00")],
        claimprocs=[claimproc(1, 1, 1, "Supplemental", InsPayAmt="120.00", WriteOff="30.00",
                              DateCP=day(40))],
        adjustments=[{"AdjNum": 1, "PatNum": 1, "AdjDate": day(2), "AdjAmt": "-10.00"},
                     {"AdjNum": 2, "PatNum": 1, "AdjDate": day(1), "AdjAmt": "5.00"}],
    ))
    assert figures(rows[1]) == expected(
        bucket_0_30="55.00", bucket_91_120="40.00", bucket_over_90="40.00",
        balance_total="95.00", patient_portion="95.00", days_outstanding=100,
    )


def test_a_charge_paid_to_the_cent_is_closed() -> None:
    """Rule 6: the oldest charge is fully paid, so the next one is the oldest open."""
    rows = run_engine(ledger(
        procedurelogs=[procedure(1, 1, day(100), "50.00"), procedure(2, 1, day(10), "50.00"),
                       procedure(3, 1, day(10), "7.00")],
        paysplits=[payment(1, 1, day(3), "50.00")],
    ))
    assert figures(rows[1]) == expected(
        bucket_0_30="57.00", balance_total="57.00", patient_portion="57.00",
        days_outstanding=10,
    )


def test_all_zero_accounts_are_not_listed() -> None:
    rows = run_engine(ledger(
        patients=[patient(1), patient(2)],
        procedurelogs=[procedure(1, 1, day(10), "40.00"), procedure(2, 2, day(10), "0.00")],
        paysplits=[payment(1, 1, day(1), "40.00")],
    ))
    assert rows == {}


def test_output_columns_and_types_are_the_contract() -> None:
    """Exactly RELATIONS["account_balances"], in order: money DECIMAL(14,2), never DOUBLE."""
    con = duckdb.connect()
    load_ledger(con, ledger(procedurelogs=[procedure(1, 1, day(1), "1.00")]))
    create_table_from_sql(con, "ledger_balances", SQL_NAME, params(AS_OF))
    described = [
        (r[0], r[1].replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"))
        for r in con.execute("DESCRIBE ledger_balances").fetchall()
    ]
    assert described == RELATIONS["account_balances"]
    assert len(MONEY_COLUMNS) == 11  # balance_total, 6 buckets, 2 estimates, 2 portions
    assert not [c for c, t in described if t in ("DOUBLE", "FLOAT", "REAL")]
    con.close()


def test_no_floating_point_anywhere_in_the_transform() -> None:
    """Every CTE of the SQL, described on its own: no DOUBLE, FLOAT or REAL column."""
    sql = load_sql(SQL_NAME)
    final_select = [m.start() for m in re.finditer(r"^SELECT$", sql, flags=re.MULTILINE)][-1]
    head = "\n".join(line for line in sql[:final_select].splitlines() if not line.startswith("--"))
    ctes = re.findall(r"^(\w+) AS (?:NOT MATERIALIZED )?\($", head, flags=re.MULTILINE)
    assert len(ctes) >= 8
    con = duckdb.connect()
    load_ledger(con, ledger(procedurelogs=[procedure(1, 1, day(1), "1.00")]))
    for cte in ctes:
        query = f"DESCRIBE {head} SELECT * FROM {cte}"  # noqa: S608
        used = {k: v for k, v in params(AS_OF).items() if f"${k}" in head}
        types = {r[0]: r[1] for r in con.execute(query, used).fetchall()}
        floats = {k: v for k, v in types.items() if v in ("DOUBLE", "FLOAT", "REAL")}
        assert not floats, (cte, floats)
    con.close()
