"""The bundled EHR simulator's data: its ledger, Open Dental style aging and the generator.

In-process only (no server): the worked examples of spec/aging.md through aging.py, the
seeded generator, and the third-party synthetic practice against an independent computation.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from balances_pipeline.simulator.aging import aging_report
from balances_pipeline.simulator.ledger import (
    TABLE_FIELDS,
    Ledger,
    generate_ledger,
    load_dataset,
)

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
AS_OF = date(2026, 11, 30)
D = Decimal


def fixed_clock() -> datetime:
    return datetime(2026, 11, 30, 9, 0, 0)


# -- worked examples A-F of spec/aging.md through aging.py --------------------------------


class Book:
    """A hand-written ledger: one family per example."""

    def __init__(self) -> None:
        self.ledger = Ledger(clock=fixed_clock)
        self.family = 100

    def new_family(self, name: str, dependents: int = 0) -> list[int]:
        self.family += 100
        members = [self.family + i for i in range(dependents + 1)]
        for i, patnum in enumerate(members):
            self.ledger.add_row(
                "patients",
                {
                    "PatNum": patnum,
                    "Guarantor": members[0],
                    "LName": name,
                    "FName": f"P{i}",
                    "PatStatus": "Patient",
                },
            )
        return members

    def charge(self, patnum: int, age: int, fee: str, status: str = "C", **extra: Any) -> int:
        row = self.ledger.add_row(
            "procedurelogs",
            {
                "PatNum": patnum,
                "ProcDate": (AS_OF - timedelta(days=age)).isoformat(),
                "ProcFee": D(fee),
                "UnitQty": extra.get("qty", 1),
                "BaseUnits": 0,
                "ProcStatus": status,
            },
        )
        return row["ProcNum"]

    def pay(self, patnum: int, age: int, amount: str) -> None:
        self.ledger.add_row(
            "paysplits",
            {
                "PatNum": patnum,
                "SplitAmt": D(amount),
                "DatePay": (AS_OF - timedelta(days=age)).isoformat(),
            },
        )

    def claim(self, patnum: int, procnum: int, status: str, **money: str) -> None:
        values = {"InsPayEst": "0", "InsPayAmt": "0", "WriteOff": "0", "WriteOffEst": "-1"}
        values.update(money)
        self.ledger.add_row(
            "claimprocs",
            {
                "ProcNum": procnum,
                "ClaimNum": 1,
                "PatNum": patnum,
                "Status": status,
                "DateCP": money.get("DateCP", AS_OF.isoformat()),
                **{k: D(v) for k, v in values.items() if k != "DateCP"},
            },
        )


def row(
    patnum: int,
    name: str,
    b0: str,
    b31: str,
    b61: str,
    b90: str,
    total: str,
    wo: str = "0",
    ins: str = "0",
) -> dict[str, Any]:
    return {
        "PatNum": patnum,
        "patName": name,
        "Bal_0_30": D(b0),
        "Bal_31_60": D(b31),
        "Bal_61_90": D(b61),
        "BalOver90": D(b90),
        "BalTotal": D(total),
        "InsWoEst": D(wo),
        "InsPayEst": D(ins),
        "PatientPortion": D(total) - D(ins) - D(wo),
    }


@pytest.fixture(scope="module")
def worked() -> dict[str, Any]:
    book = Book()
    a = book.new_family("Example-A")
    book.charge(a[0], 10, "100.00")
    book.charge(a[0], 152, "200.00")
    book.pay(a[0], 5, "50.00")
    b = book.new_family("Example-B", dependents=1)
    book.charge(b[1], 30, "80.00")
    book.charge(b[0], 31, "80.00")
    book.pay(b[1], 0, "100.00")
    c = book.new_family("Example-C")
    book.charge(c[0], 95, "50.00")
    book.pay(c[0], 90, "80.00")
    d = book.new_family("Example-D")
    book.claim(d[0], book.charge(d[0], 45, "300.00"), "NotReceived", InsPayEst="240.00")
    e = book.new_family("Example-E")
    book.charge(e[0], 121, "120.00")
    book.charge(e[0], 120, "120.00")
    f = book.new_family("Example-F")
    book.charge(f[0], -2, "500.00")
    g = book.new_family("Example-G", dependents=2)
    received = book.charge(g[1], 10, "200.00")
    book.claim(
        g[1], received, "Received", InsPayAmt="100.00", WriteOff="20.00", DateCP="0001-01-01"
    )
    book.claim(
        g[2], book.charge(g[2], 3, "100.00"), "NotReceived", InsPayEst="50.00", WriteOffEst="10.00"
    )
    book.claim(g[2], book.charge(g[2], 3, "999.00", status="TP"), "NotReceived", InsPayEst="400.00")
    book.claim(g[2], book.charge(g[2], 4, "10.00"), "Estimate", InsPayEst="8.00")
    families = (a, b, c, d, e, f, g)
    return {
        "ledger": book.ledger,
        "ids": {k: v[0] for k, v in zip("ABCDEFG", families, strict=True)},
    }


def test_worked_examples_a_to_f(worked: dict[str, Any]) -> None:
    ids = worked["ids"]
    report = {r["PatNum"]: r for r in aging_report(worked["ledger"], AS_OF)}
    assert report[ids["A"]] == row(
        ids["A"], "Example-A, P0", "100.00", "0", "0", "150.00", "250.00"
    )
    assert report[ids["B"]] == row(ids["B"], "Example-B, P0", "60.00", "0", "0", "0", "60.00")
    assert report[ids["C"]] == row(ids["C"], "Example-C, P0", "-30.00", "0", "0", "0", "-30.00")
    assert report[ids["C"]]["PatientPortion"] == D("-30.00")
    assert report[ids["D"]] == row(
        ids["D"], "Example-D, P0", "0", "300.00", "0", "0", "300.00", wo="0", ins="240.00"
    )
    assert report[ids["D"]]["PatientPortion"] == D("60.00")
    assert report[ids["E"]] == row(ids["E"], "Example-E, P0", "0", "0", "0", "240.00", "240.00")
    assert ids["F"] not in report
    assert report[ids["G"]] == row(
        ids["G"], "Example-G, P0", "190.00", "0", "0", "0", "190.00", wo="10.00", ins="50.00"
    )
    assert report[ids["G"]]["PatientPortion"] == D("130.00")
    assert list(report) == sorted(report)


def test_money_rounds_half_away_from_zero_once_at_the_end() -> None:
    book = Book()
    p = book.new_family("Round")[0]
    book.charge(p, 1, "10.0025")
    book.charge(p, 2, "10.0025")
    q = book.new_family("Credit")[0]
    book.ledger.add_row(
        "adjustments", {"PatNum": q, "AdjDate": "2026-11-01", "AdjAmt": D("-0.005")}
    )
    report = {r["PatNum"]: r for r in aging_report(book.ledger, AS_OF)}
    assert report[p]["BalTotal"] == D("20.01")
    assert report[q]["BalTotal"] == D("-0.01")


def test_ledger_edits_invalidate_nothing_but_change_the_report(worked: dict[str, Any]) -> None:
    ledger = generate_ledger(3, 30, AS_OF, clock=fixed_clock)
    before = aging_report(ledger, AS_OF)
    guarantor = ledger.patients.rows[0][0]
    split = ledger.add_row(
        "paysplits", {"PatNum": guarantor, "SplitAmt": "1000.00", "DatePay": "2026-11-29"}
    )
    assert split["SecDateTEdit"] == "2026-11-30 09:00:00"
    after = {r["PatNum"]: r for r in aging_report(ledger, AS_OF)}
    old = {r["PatNum"]: r for r in before}.get(guarantor, {"BalTotal": D(0)})
    assert after[guarantor]["BalTotal"] == old["BalTotal"] - D("1000.00")
    ledger.edit_row("paysplits", split["SplitNum"], SplitAmt="1.00")
    assert ledger.paysplits.get(split["SplitNum"])["SplitAmt"] == D("1.00")
    ledger.delete_row("paysplits", split["SplitNum"])
    assert aging_report(ledger, AS_OF) == before


# -- the generator ------------------------------------------------------------------------


def test_generator_is_deterministic_for_a_seed() -> None:
    first = generate_ledger(42, 200, AS_OF)
    second = generate_ledger(42, 200, AS_OF)
    other = generate_ledger(43, 200, AS_OF)
    assert first.counts() == second.counts()
    for name in TABLE_FIELDS:
        assert first.table(name).rows == second.table(name).rows
    assert aging_report(first, AS_OF) == aging_report(second, AS_OF)
    assert aging_report(first, AS_OF) != aging_report(other, AS_OF)


def test_generated_practice_looks_like_a_dental_practice() -> None:
    ledger = generate_ledger(7, 1000, AS_OF)
    for name, fields in TABLE_FIELDS.items():
        first = next(iter(ledger.table(name)))
        assert tuple(first) == fields
    patients = list(ledger.patients)
    guarantors = {p["Guarantor"] for p in patients}
    assert len(guarantors) == 1000
    assert all(p["PatNum"] in guarantors for p in patients if p["PatNum"] == p["Guarantor"])
    assert len(patients) > 1500
    assert any(p["PatStatus"] == "Deceased" and p["PatNum"] == p["Guarantor"] for p in patients)
    procs = list(ledger.procedurelogs)
    assert {p["ProcStatus"] for p in procs} == {"C", "TP", "D"}  # D: entered by mistake
    assert any(p["ProcDate"] > AS_OF.isoformat() for p in procs)
    assert all(D("20") <= p["ProcFee"] <= D("3000") for p in procs)
    claims = list(ledger.claimprocs)
    pending = [c for c in claims if c["Status"] == "NotReceived"]
    assert any(c["WriteOffEst"] == -1 for c in pending)
    assert any(c["WriteOffEst"] >= 0 for c in pending)
    assert any(c["Status"] == "Received" and c["InsPayAmt"] > 0 for c in claims)
    assert {a["AdjAmt"] > 0 for a in ledger.adjustments} == {True, False}
    assert all(s["DatePay"] <= AS_OF.isoformat() for s in ledger.paysplits)
    stamps = [p["DateTStamp"] for p in procs]
    assert max(stamps) < AS_OF.isoformat()
    report = aging_report(ledger, AS_OF)
    assert 150 < len(report) < 700
    assert any(r["BalTotal"] < 0 for r in report)
    assert any(r["InsPayEst"] > 0 for r in report)
    for r in report:
        positive = r["Bal_0_30"] + r["Bal_31_60"] + r["Bal_61_90"] + r["BalOver90"]
        assert positive == r["BalTotal"]
        if r["BalTotal"] < 0:
            assert r["Bal_0_30"] == r["BalTotal"] and r["BalOver90"] == 0


def test_twenty_thousand_accounts_generate() -> None:
    started = time.perf_counter()
    ledger = generate_ledger(1, 20_000, AS_OF)
    generated = time.perf_counter() - started
    report = aging_report(ledger, AS_OF)
    aged = time.perf_counter() - started - generated
    print(
        f"20k accounts: generated in {generated:.2f}s, aged in {aged:.2f}s, "
        f"{ledger.counts()}, {len(report)} rows with a balance"
    )
    guarantor = ledger.patients.pos("Guarantor")
    assert len({row[guarantor] for row in ledger.patients.rows}) == 20_000


# -- the synthetic third-party practice ---------------------------------------------------


def _independent_balances(tables: dict[str, list[dict]], as_of: str) -> dict[int, dict]:
    """spec/aging.md done the other way: credits consume charges in date order."""
    family = {p["PatNum"]: p["Guarantor"] for p in tables["patients"]}
    entries: dict[int, list[tuple[str, Decimal]]] = defaultdict(list)
    for p in tables["procedurelogs"]:
        if p["ProcStatus"] == "C":
            amount = D(str(p["ProcFee"])) * (p["UnitQty"] + p["BaseUnits"])
            entries[family[p["PatNum"]]].append((p["ProcDate"], amount))
    for c in tables["claimprocs"]:
        if c["Status"] in ("Received", "Supplemental", "CapClaim", "CapComplete"):
            entries[family[c["PatNum"]]].append((c["DateCP"], -D(str(c["InsPayAmt"]))))
            entries[family[c["PatNum"]]].append((c["DateCP"], -D(str(c["WriteOff"]))))
    for s in tables["paysplits"]:
        entries[family[s["PatNum"]]].append((s["DatePay"], -D(str(s["SplitAmt"]))))
    for a in tables["adjustments"]:
        entries[family[a["PatNum"]]].append((a["AdjDate"], D(str(a["AdjAmt"]))))
    result = {}
    as_of_day = date.fromisoformat(as_of)
    for guarantor, items in entries.items():
        items = [(d, amt) for d, amt in items if d <= as_of]
        credit = -sum((amt for _, amt in items if amt < 0), D(0))
        open_charges = []
        for day, amt in sorted(i for i in items if i[1] > 0):
            used = min(amt, credit)
            credit -= used
            if amt - used:
                open_charges.append(((as_of_day - date.fromisoformat(day)).days, amt - used))
        buckets = [D(0)] * 4
        for age, amt in open_charges:
            buckets[0 if age <= 30 else 1 if age <= 60 else 2 if age <= 90 else 3] += amt
        total = sum((amt for _, amt in items), D(0))
        result[guarantor] = {"total": total, "buckets": buckets}
    return result


def test_synthetic_practice_aging_matches_an_independent_computation() -> None:
    ledger = load_dataset(FIXTURE)
    assert ledger.counts() == {
        "patients": 400,
        "procedurelogs": 8949,
        "claimprocs": 3743,
        "paysplits": 3742,
        "adjustments": 0,
    }
    with gzip.open(FIXTURE, "rt") as handle:
        tables = json.load(handle)["tables"]
    as_of = "2026-11-29"
    report = aging_report(ledger, date.fromisoformat(as_of))
    by_guarantor = {r["PatNum"]: r for r in report}

    charges = sum(
        (
            D(str(p["ProcFee"])) * (p["UnitQty"] + p["BaseUnits"])
            for p in tables["procedurelogs"]
            if p["ProcStatus"] == "C" and p["ProcDate"] <= as_of
        ),
        D(0),
    )
    credits = sum(
        (
            D(str(c["InsPayAmt"])) + D(str(c["WriteOff"]))
            for c in tables["claimprocs"]
            if c["Status"] == "Received" and c["DateCP"] <= as_of
        ),
        D(0),
    )
    credits += sum(
        (D(str(s["SplitAmt"])) for s in tables["paysplits"] if s["DatePay"] <= as_of), D(0)
    )
    assert sum(r["BalTotal"] for r in report) == charges - credits
    assert sum(1 for r in report if r["BalTotal"] < 0) == 5
    assert all(r["InsPayEst"] == 0 and r["InsWoEst"] == 0 for r in report)

    expected = _independent_balances(tables, as_of)
    checked = [g for g in sorted(expected) if expected[g]["total"] > 0][:3]
    checked += [g for g in sorted(expected) if expected[g]["total"] < 0][:1]
    checked += [g for g in sorted(expected) if len([b for b in expected[g]["buckets"] if b]) > 1][
        :2
    ]
    for guarantor in checked:
        mine = by_guarantor[guarantor]
        theirs = expected[guarantor]
        cents = theirs["total"].quantize(D("0.01"), ROUND_HALF_UP)
        assert mine["BalTotal"] == cents
        if cents > 0:
            assert [
                mine["Bal_0_30"],
                mine["Bal_31_60"],
                mine["Bal_61_90"],
                mine["BalOver90"],
            ] == theirs["buckets"]
        else:
            assert mine["Bal_0_30"] == cents
    zero = {g for g, v in expected.items() if v["total"] == 0}
    assert not zero & set(by_guarantor)
