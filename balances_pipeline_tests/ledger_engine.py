"""The ledger-mode aging engine (sql/ledger_account_balances.sql) run on hand-made ledgers.

Ledgers are written Open Dental-shaped (the API's field names, as `independent_aging` reads
them) and mapped to the engine's input tables by `load_ledger`; `run_engine` returns the
SQL's rows. Builders (`ledger`, `patient`, `procedure`, ...) and `expected` keep the tests
of test_ledger_aging*.py short.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from balances_pipeline.schema import RELATIONS
from balances_pipeline.storage.sql_files import create_table_from_sql
from balances_pipeline_tests.independent_aging import EMPTY_DATE

AS_OF = date(2026, 11, 30)
SQL_NAME = "ledger_account_balances"
BUCKETS = ("bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_91_120", "bucket_over_120")
MONEY_COLUMNS = [name for name, type_ in RELATIONS["account_balances"] if type_ == "DECIMAL(14,2)"]
D = Decimal
ZERO = D("0.00")

INPUT_DDL = """
CREATE TABLE ledger_patients (
    pat_num BIGINT, guarantor_id BIGINT, display_name VARCHAR, status VARCHAR);
CREATE TABLE ledger_procedures (
    proc_num BIGINT, pat_num BIGINT, proc_date DATE, proc_fee DECIMAL(14,2),
    unit_qty INTEGER, base_units INTEGER, proc_status VARCHAR);
CREATE TABLE ledger_claimprocs (
    claim_proc_num BIGINT, proc_num BIGINT, claim_num BIGINT, pat_num BIGINT, status VARCHAR,
    ins_pay_est DECIMAL(14,2), ins_pay_amt DECIMAL(14,2), write_off DECIMAL(14,2),
    write_off_est DECIMAL(14,2), date_cp DATE);
CREATE TABLE ledger_paysplits (
    split_num BIGINT, pat_num BIGINT, split_amt DECIMAL(14,2), date_pay DATE);
CREATE TABLE ledger_adjustments (
    adj_num BIGINT, pat_num BIGINT, adj_date DATE, adj_amt DECIMAL(14,2));
CREATE TABLE rejected_accounts (account_id VARCHAR);
"""

# Open Dental API fields -> engine input columns (money is passed as text and cast exactly).
MAPPING: dict[str, tuple[str, str]] = {
    "patients": (
        "ledger_patients",
        "r.PatNum, r.Guarantor, r.LName || ', ' || r.FName, r.PatStatus",
    ),
    "procedurelogs": (
        "ledger_procedures",
        "r.ProcNum, r.PatNum, CAST(r.ProcDate AS DATE), CAST(r.ProcFee AS DECIMAL(14,2)),"
        " r.UnitQty, r.BaseUnits, r.ProcStatus",
    ),
    "claimprocs": (
        "ledger_claimprocs",
        "r.ClaimProcNum, r.ProcNum, r.ClaimNum, r.PatNum, r.Status,"
        " CAST(r.InsPayEst AS DECIMAL(14,2)), CAST(r.InsPayAmt AS DECIMAL(14,2)),"
        " CAST(r.WriteOff AS DECIMAL(14,2)), CAST(r.WriteOffEst AS DECIMAL(14,2)),"
        " CAST(r.DateCP AS DATE)",
    ),
    "paysplits": (
        "ledger_paysplits",
        "r.SplitNum, r.PatNum, CAST(r.SplitAmt AS DECIMAL(14,2)), CAST(r.DatePay AS DATE)",
    ),
    "adjustments": (
        "ledger_adjustments",
        "r.AdjNum, r.PatNum, CAST(r.AdjDate AS DATE), CAST(r.AdjAmt AS DECIMAL(14,2))",
    ),
}
FIELDS = {
    "patients": ("PatNum", "Guarantor", "LName", "FName", "PatStatus"),
    "procedurelogs": (
        "ProcNum", "PatNum", "ProcDate", "ProcFee", "UnitQty", "BaseUnits", "ProcStatus",
    ),
    "claimprocs": (
        "ClaimProcNum", "ProcNum", "ClaimNum", "PatNum", "Status", "InsPayEst", "InsPayAmt",
        "WriteOff", "WriteOffEst", "DateCP",
    ),
    "paysplits": ("SplitNum", "PatNum", "SplitAmt", "DatePay"),
    "adjustments": ("AdjNum", "PatNum", "AdjDate", "AdjAmt"),
}
TEXT_FIELDS = {
    "ProcFee", "InsPayEst", "InsPayAmt", "WriteOff", "WriteOffEst", "SplitAmt", "AdjAmt",
    "ProcDate", "DateCP", "DatePay", "AdjDate",
}


def load_ledger(
    con: duckdb.DuckDBPyConnection, tables: dict[str, list[dict]], rejected: tuple = ()
) -> None:
    """Create the engine's input tables and fill them from Open Dental-shaped rows."""
    con.execute(INPUT_DDL)
    for source, (table, select) in MAPPING.items():
        rows = [
            {f: str(row[f]) if f in TEXT_FIELDS else row[f] for f in FIELDS[source]}
            for row in tables.get(source, [])
        ]
        if rows:
            con.execute(
                f"INSERT INTO {table} SELECT {select} FROM (SELECT unnest($rows) AS r)",  # noqa: S608
                {"rows": rows},
            )
    for account_id in rejected:
        con.execute("INSERT INTO rejected_accounts VALUES (?)", [account_id])


def params(as_of: date) -> dict[str, Any]:
    return {
        "practice_id": "test_practice",
        "as_of_date": as_of,
        "synced_at": datetime(2026, 11, 30, 14, 0, tzinfo=UTC),
        "sync_id": "sync-1",
        "unused": "create_table_from_sql passes only the parameters the SQL uses",
    }


def run_engine(
    tables: dict[str, list[dict]], as_of: date = AS_OF, rejected: tuple = ()
) -> dict[int, dict[str, Any]]:
    """The SQL's rows, keyed by account (guarantor) number."""
    con = duckdb.connect()
    try:
        load_ledger(con, tables, rejected)
        create_table_from_sql(con, "ledger_balances", SQL_NAME, params(as_of))
        cursor = con.execute("SELECT * FROM ledger_balances")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    return {int(row["account_id"]): row for row in rows}


# --- building Open Dental-shaped ledgers by hand -------------------------------------------


def day(age_days: int) -> str:
    """The date `age_days` before AS_OF."""
    return (AS_OF - timedelta(days=age_days)).isoformat()


def patient(pat_num: int, guarantor: int | None = None, status: str = "Patient") -> dict:
    return {
        "PatNum": pat_num, "Guarantor": guarantor or pat_num, "LName": f"Family{pat_num}",
        "FName": "Pat", "PatStatus": status,
    }


def procedure(num: int, pat: int, on: str, fee: str, status: str = "C") -> dict:
    return {
        "ProcNum": num, "PatNum": pat, "ProcDate": on, "ProcFee": fee, "UnitQty": 1,
        "BaseUnits": 0, "ProcStatus": status,
    }


def payment(num: int, pat: int, on: str, amount: str) -> dict:
    return {"SplitNum": num, "PatNum": pat, "SplitAmt": amount, "DatePay": on}


def claimproc(num: int, proc: int, pat: int, status: str, **money: str) -> dict:
    row = {
        "ClaimProcNum": num, "ProcNum": proc, "ClaimNum": 1, "PatNum": pat, "Status": status,
        "InsPayEst": "0", "InsPayAmt": "0", "WriteOff": "0", "WriteOffEst": "-1",
        "DateCP": EMPTY_DATE,
    }
    row.update(money)
    return row


def ledger(**tables: list[dict]) -> dict[str, list[dict]]:
    tables.setdefault("patients", [patient(1)])
    for name in ("procedurelogs", "claimprocs", "paysplits", "adjustments"):
        tables.setdefault(name, [])
    return tables


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """The aging columns of one SQL row."""
    keep = (*BUCKETS, "bucket_over_90", "balance_total", "insurance_estimate",
            "writeoff_estimate", "patient_portion", "insurance_portion", "days_outstanding")
    return {name: row[name] for name in keep}


def expected(**given: Any) -> dict[str, Any]:
    """All aging columns: zero unless given."""
    row: dict[str, Any] = dict.fromkeys(
        (*BUCKETS, "bucket_over_90", "balance_total", "insurance_estimate",
         "writeoff_estimate", "patient_portion", "insurance_portion"),
        ZERO,
    )
    row["days_outstanding"] = None
    row.update({k: D(v) if isinstance(v, str) else v for k, v in given.items()})
    return row
