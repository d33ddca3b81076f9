"""The ledger-mode aging engine (sql/ledger_account_balances.sql) against aging.md.

Every worked example of aging.md has a test of its own, with the expected numbers written
out. A property test and the third-party synthetic practice compare the SQL with
`independent_aging.age_accounts`, a plain-Python reading of aging.md in this test suite.

Ledgers are written Open Dental-shaped (the API's field names, as `independent_aging` reads
them) and mapped to the engine's input tables by `load_ledger`.
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balances_pipeline.schema import RELATIONS
from balances_pipeline.storage.sql_files import create_table_from_sql, load_sql
from balances_pipeline_tests.independent_aging import EMPTY_DATE, age_accounts

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
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
    ctes = re.findall(r"^(\w+) AS \($", head, flags=re.MULTILINE)
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


# --- property: the SQL equals independent_aging over random ledgers -----------------------

BOUNDARY_AGES = (0, 30, 31, 60, 61, 90, 91, 120, 121)
AMOUNT_CENTS = (0, 1, 2500, 5000, 8000, 10000, 12000)
STATUSES = (
    "Received", "Supplemental", "CapClaim", "CapComplete", "NotReceived", "NotReceived",
    "Estimate", "Preauth",
)
# Small ledgers (readable in a failure report), with credits smaller than charges on
# average so that about half the accounts keep a positive balance and credits often stop
# inside a bucket; bucket-boundary ages are the most frequent dates.
DATE_KINDS = ("boundary",) * 5 + ("any",) * 3 + ("future", "empty")


@st.composite
def dates(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(DATE_KINDS))
    if kind == "boundary":
        return day(draw(st.sampled_from(BOUNDARY_AGES)))
    if kind == "any":
        return day(draw(st.integers(0, 500)))
    if kind == "future":
        return day(draw(st.integers(-40, -1)))
    return EMPTY_DATE


def money_up_to(cents: int) -> st.SearchStrategy[Decimal]:
    choices = st.sampled_from([c for c in AMOUNT_CENTS if c <= cents])
    return st.one_of(choices, st.integers(0, cents)).map(lambda c: D(c) / 100)


fees = money_up_to(40_000)
credits = money_up_to(15_000)
signed_credits = st.one_of(credits, credits.map(lambda a: -a))


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, list[dict]]:
    patients: list[dict] = []
    next_pat = 100
    for _ in range(draw(st.integers(1, 3))):
        guarantor = next_pat
        for i in range(draw(st.integers(1, 3))):
            patients.append({
                "PatNum": next_pat, "Guarantor": guarantor, "LName": f"Family{guarantor}",
                "FName": f"P{i}", "PatStatus": draw(st.sampled_from(["Patient", "Deceased"])),
            })
            next_pat += 1
    pats = st.sampled_from([p["PatNum"] for p in patients] + [999])  # 999: not in /patients
    # A few dates per ledger, so that same-day entries are common.
    day_pool = st.sampled_from(draw(st.lists(dates(), min_size=1, max_size=8)))
    procs = [
        {
            "ProcNum": 1000 + n, "PatNum": draw(pats), "ProcDate": draw(day_pool),
            "ProcFee": draw(fees), "UnitQty": draw(st.integers(0, 2)),
            "BaseUnits": draw(st.integers(0, 1)),
            "ProcStatus": draw(st.sampled_from(["C", "C", "C", "TP"])),
        }
        for n in range(draw(st.integers(1, 10)))
    ]
    proc_nums = st.sampled_from([p["ProcNum"] for p in procs] + [9999])  # 9999: unknown
    claims = [
        {
            "ClaimProcNum": 2000 + n, "ProcNum": draw(proc_nums), "ClaimNum": n,
            "PatNum": draw(pats), "Status": draw(st.sampled_from(STATUSES)),
            "InsPayEst": draw(fees), "InsPayAmt": draw(credits), "WriteOff": draw(credits),
            "WriteOffEst": draw(st.one_of(st.just(D(-1)), credits)), "DateCP": draw(day_pool),
        }
        for n in range(draw(st.integers(0, 5)))
    ]
    splits = [
        {"SplitNum": 3000 + n, "PatNum": draw(pats), "SplitAmt": draw(signed_credits),
         "DatePay": draw(day_pool)}
        for n in range(draw(st.integers(0, 3)))
    ]
    # Payments settling a family's oldest procedures to the cent (rule 6's "still open").
    family_of = {p["PatNum"]: p["Guarantor"] for p in patients}
    for n in range(draw(st.integers(0, 1))):
        payer = draw(pats)
        family = sorted(
            (p for p in procs
             if p["ProcStatus"] == "C" and family_of.get(p["PatNum"], p["PatNum"])
             == family_of.get(payer, payer)),
            key=lambda p: p["ProcDate"],
        )
        settled = family[: draw(st.integers(1, 3))]
        splits.append({
            "SplitNum": 3500 + n, "PatNum": payer, "DatePay": draw(day_pool),
            "SplitAmt": sum((p["ProcFee"] * (p["UnitQty"] + p["BaseUnits"]) for p in settled),
                            D(0)),
        })
    adjustments = [
        {"AdjNum": 4000 + n, "PatNum": draw(pats), "AdjDate": draw(day_pool),
         "AdjAmt": draw(signed_credits)}
        for n in range(draw(st.integers(0, 3)))
    ]
    return {
        "patients": patients, "procedurelogs": procs, "claimprocs": claims,
        "paysplits": splits, "adjustments": adjustments,
    }


def assert_matches_independent_aging(tables: dict[str, list[dict]], as_of: date) -> int:
    actual = run_engine(tables, as_of)
    oracle = age_accounts(tables, as_of)
    assert set(actual) == set(oracle)
    patients = {p["PatNum"]: p for p in tables["patients"]}
    for account, row in actual.items():
        want = oracle[account]
        got = figures(row)
        assert got["bucket_over_90"] == want["bucket_91_120"] + want["bucket_over_120"]
        assert got["insurance_portion"] == want["insurance_estimate"]
        del got["bucket_over_90"], got["insurance_portion"]
        assert got == want, account
        for name in MONEY_COLUMNS:
            assert row[name] == row[name].quantize(D("0.01")), name
        assert sum(row[b] for b in BUCKETS) == max(row["balance_total"], ZERO)
        guarantor = patients.get(account)
        assert row["account_name"] == (
            f"{guarantor['LName']}, {guarantor['FName']}" if guarantor else None
        )
        assert row["guarantor_status"] == (guarantor["PatStatus"] if guarantor else None)
        assert row["as_of_date"] == as_of and row["source_mode"] == "ledger"
    return len(actual)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables=ledgers())
def test_sql_equals_independent_aging_on_random_ledgers(tables: dict[str, list[dict]]) -> None:
    assert_matches_independent_aging(tables, AS_OF)


# --- a practice nobody on the team wrote ----------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_tables() -> dict[str, list[dict]]:
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))["tables"]


@pytest.mark.parametrize("as_of", [date(2026, 11, 30), date(2027, 2, 15)])
def test_synthetic_practice_equals_independent_aging(
    synthetic_tables: dict[str, list[dict]], as_of: date
) -> None:
    listed = assert_matches_independent_aging(synthetic_tables, as_of)
    assert listed > 100
    con = duckdb.connect()
    load_ledger(con, synthetic_tables)
    counted = con.execute(load_sql("ledger_future_entries"), {"as_of_date": as_of}).fetchone()
    con.close()
    later = as_of.isoformat()
    t = synthetic_tables
    assert counted == (
        sum(counted[1:]),
        sum(p["ProcStatus"] == "C" and p["ProcDate"] > later for p in t["procedurelogs"]),
        sum(c["Status"] == "Received" and c["DateCP"] > later for c in t["claimprocs"]),
        sum(s["DatePay"] > later for s in t["paysplits"]),
        0,
    )
