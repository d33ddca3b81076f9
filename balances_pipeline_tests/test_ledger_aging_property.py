"""The ledger-mode aging SQL equals `independent_aging.age_accounts`, a plain-Python reading
of aging.md in this test suite: over random ledgers (a property test) and over the
third-party synthetic practice.
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balances_pipeline.storage.sql_files import load_sql
from balances_pipeline_tests.independent_aging import EMPTY_DATE, age_accounts
from balances_pipeline_tests.ledger_engine import (
    AS_OF,
    BUCKETS,
    MONEY_COLUMNS,
    ZERO,
    day,
    figures,
    load_ledger,
    run_engine,
)

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
D = Decimal

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
