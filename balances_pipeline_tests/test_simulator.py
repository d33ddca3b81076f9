"""The bundled EHR simulator: ledger, Open Dental style aging, HTTP API, faults, CLI."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from balances_pipeline.simulator import Faults, SimPractice, SimulatorServer
from balances_pipeline.simulator.aging import aging_report
from balances_pipeline.simulator.cli import ConfigError, bundled_config_path, load_config
from balances_pipeline.simulator.ledger import (
    TABLE_FIELDS,
    Ledger,
    generate_ledger,
    load_dataset,
)

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
REPO_ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 30)
DEV = "dev-key-123"
KEYS = {"alpha": "cust-alpha", "bravo": "cust-bravo", "synthetic": "cust-synthetic"}
D = Decimal


# -- helpers ------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    sim: SimulatorServer,
    path: str,
    practice: str | None = "alpha",
    method: str = "GET",
    body: Any = None,
    authorization: str | None = None,
    **params: Any,
) -> Reply:
    """One request on a fresh connection; `path` is relative to the API root or absolute."""
    url = urlsplit(sim.url)
    target = path if path.startswith("/") else f"{url.path}/{path}"
    if params:
        target += "?" + urlencode(params)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    elif practice is not None:
        headers["Authorization"] = f"ODFHIR {DEV}/{KEYS[practice]}"
    data = json.dumps(body).encode() if body is not None else None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def pages(sim: SimulatorServer, endpoint: str, practice: str = "alpha", **params: Any) -> list:
    result: list[list[dict[str, Any]]] = []
    offset = 0
    while True:
        reply = call(sim, endpoint, practice, Offset=offset, **params)
        assert reply.status == 200, reply.body
        page = reply.json()
        result.append(page)
        if len(page) < 100:
            return result
        offset += len(page)


def flat(page_list: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for page in page_list for row in page]


def fixed_clock() -> datetime:
    return datetime(2026, 11, 30, 9, 0, 0)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    practices = [
        SimPractice("alpha", KEYS["alpha"], accounts=300, seed=5, today=AS_OF),
        SimPractice("bravo", KEYS["bravo"], accounts=40, seed=9, today=AS_OF),
        SimPractice("synthetic", KEYS["synthetic"], today=date(2026, 11, 29), dataset=FIXTURE),
    ]
    with SimulatorServer(practices, developer_key=DEV) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").clear_faults()


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
    assert {p["ProcStatus"] for p in procs} == {"C", "TP"}
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
    assert len({row[1] for row in ledger.patients.rows}) == 20_000


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


def test_synthetic_practice_is_served_over_http(sim: SimulatorServer) -> None:
    rows = flat(pages(sim, "reports/Aging", "synthetic", DateAsOf="2026-11-29"))
    direct = sim.aging_report("synthetic", date(2026, 11, 29))
    assert [r["PatNum"] for r in rows] == [r["PatNum"] for r in direct]
    assert [D(str(r["BalTotal"])) for r in rows] == [r["BalTotal"] for r in direct]
    assert len(flat(pages(sim, "procedurelogs", "synthetic"))) == 8949


# -- HTTP ---------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(sim: SimulatorServer) -> None:
    for authorization in (
        f"ODFHIR {DEV}/nope",
        f"ODFHIR wrong/{KEYS['alpha']}",
        "",
        f"Bearer {DEV}/{KEYS['alpha']}",
        DEV,
    ):
        reply = call(sim, "patients", authorization=authorization)
        assert reply.status == 401
        assert "error" in reply.json()
    assert call(sim, "patients", practice=None).status == 401


def test_customer_key_selects_the_practice(sim: SimulatorServer) -> None:
    alpha = call(sim, "patients", "alpha", Limit=5).json()
    bravo = call(sim, "patients", "bravo", Limit=5).json()
    assert alpha != bravo
    assert alpha == list(sim.ledger("alpha").patients)[:5]


def test_aging_report_pages_of_100_until_a_short_page(sim: SimulatorServer) -> None:
    page_list = pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat())
    assert len(page_list) >= 2
    assert all(len(p) == 100 for p in page_list[:-1]) and len(page_list[-1]) < 100
    rows = flat(page_list)
    direct = sim.aging_report("alpha", AS_OF)
    assert [r["PatNum"] for r in rows] == [r["PatNum"] for r in direct]
    assert set(rows[0]) == {
        "PatNum",
        "patName",
        "Bal_0_30",
        "Bal_31_60",
        "Bal_61_90",
        "BalOver90",
        "BalTotal",
        "InsWoEst",
        "InsPayEst",
        "PatientPortion",
    }
    assert all(isinstance(r["BalTotal"], int | float) for r in rows)
    assert [D(str(r["BalTotal"])) for r in rows] == [r["BalTotal"] for r in direct]
    limited = call(sim, "reports/Aging", DateAsOf=AS_OF.isoformat(), Offset=3, Limit=7).json()
    assert [r["PatNum"] for r in limited] == [r["PatNum"] for r in direct[3:10]]
    capped = call(sim, "reports/Aging", DateAsOf=AS_OF.isoformat(), Limit=500).json()
    assert len(capped) == 100


def test_list_endpoints_page_and_filter_by_change_stamp(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    for name, stamp in (
        ("patients", "DateTStamp"),
        ("procedurelogs", "DateTStamp"),
        ("claimprocs", "SecDateTEdit"),
        ("paysplits", "SecDateTEdit"),
        ("adjustments", "SecDateTEdit"),
    ):
        first = call(sim, name, Limit=3)
        assert first.status == 200 and first.headers["Date"]
        assert tuple(first.json()[0]) == TABLE_FIELDS[name]
        since = "2026-11-01 00:00:00"
        rows = flat(pages(sim, name, **{stamp: since}))
        expected = [r for r in ledger.table(name) if r[stamp] >= since]
        assert len(rows) == len(expected)
        assert all(r[stamp] >= since for r in rows)
    all_procs = flat(pages(sim, "procedurelogs"))
    assert len(all_procs) == len(ledger.procedurelogs)
    assert len(all_procs) > 1000


def test_bad_requests(sim: SimulatorServer) -> None:
    assert call(sim, "reports/Aging").status == 400
    assert call(sim, "reports/Aging", DateAsOf="30/11/2026").status == 400
    assert call(sim, "reports/Aging", DateAsOf="2026-02-30").status == 400
    assert call(sim, "reports/Aging", DateAsOf="2026-11-30", Offset="x").status == 400
    assert call(sim, "patients", DateTStamp="yesterday").status == 400
    assert call(sim, "nothing_here").status == 404
    assert call(sim, "/elsewhere").status == 404


def test_date_header_is_the_simulator_clock(sim: SimulatorServer) -> None:
    reply = call(sim, "patients", "bravo", Limit=1)
    served = parsedate_to_datetime(reply.headers["Date"]).date()
    assert served == AS_OF
    clock = call(sim, "/_sim/clock/bravo", method="POST", body={"advance_days": 3})
    assert clock.status == 200 and clock.json()["now"].startswith("2026-12-03")
    reply = call(sim, "patients", "bravo", Limit=1)
    assert parsedate_to_datetime(reply.headers["Date"]).date() == date(2026, 12, 3)
    sim.advance_clock(-3, "bravo")
    assert sim.now("bravo").date() == AS_OF


def test_request_log_counts_per_practice_and_endpoint(sim: SimulatorServer) -> None:
    before = sim.request_count("bravo")
    before_total = sim.request_count()
    call(sim, "patients", "bravo")
    call(sim, "reports/Aging", "bravo", DateAsOf="2026-11-30")
    call(sim, "patients", authorization="ODFHIR x/y")
    assert sim.request_count("bravo") == before + 2
    assert sim.request_count() == before_total + 3
    last = [r for r in sim.requests if r.practice_id == "bravo"][-1]
    assert (last.endpoint, last.status, last.params) == (
        "reports/Aging",
        200,
        {"dateasof": "2026-11-30"},
    )


def test_changes_over_time_show_in_incremental_reads_and_the_report(
    sim: SimulatorServer,
) -> None:
    ledger = sim.ledger("bravo")
    guarantor = ledger.patients.rows[0][0]
    sim.advance_clock(1, "bravo")
    now = sim.now("bravo").strftime("%Y-%m-%d %H:%M:%S")
    before = {r["PatNum"]: r for r in sim.aging_report("bravo", AS_OF)}
    added = ledger.add_row(
        "procedurelogs",
        {
            "PatNum": guarantor,
            "ProcDate": "2026-11-30",
            "ProcFee": "123.45",
            "UnitQty": 1,
            "BaseUnits": 0,
            "ProcStatus": "C",
        },
    )
    assert added["DateTStamp"] >= now
    changed = call(sim, "procedurelogs", "bravo", DateTStamp=now).json()
    assert [r["ProcNum"] for r in changed] == [added["ProcNum"]]
    assert changed[0]["ProcFee"] == 123.45
    after = {r["PatNum"]: r for r in sim.aging_report("bravo", AS_OF)}
    old_total = before[guarantor]["BalTotal"] if guarantor in before else D(0)
    assert after[guarantor]["BalTotal"] == old_total + D("123.45")

    over_http = call(
        sim,
        f"/_sim/rows/bravo/procedurelogs/{added['ProcNum']}",
        method="PATCH",
        body={"ProcFee": 100},
    )
    assert over_http.status == 200 and over_http.json()["ProcFee"] == 100.0
    assert (
        call(sim, f"/_sim/rows/bravo/procedurelogs/{added['ProcNum']}", method="DELETE").status
        == 200
    )
    assert call(sim, "procedurelogs", "bravo", DateTStamp=now).json() == []
    assert {r["PatNum"]: r for r in sim.aging_report("bravo", AS_OF)} == before
    sim.advance_clock(-1, "bravo")


# -- faults -------------------------------------------------------------------------------


def test_rate_limit_then_recovers(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(rate_limit_next=2, retry_after_seconds=3))
    for _ in range(2):
        reply = call(sim, "patients")
        assert reply.status == 429 and reply.headers["Retry-After"] == "3"
    assert call(sim, "patients").status == 200
    assert call(sim, "patients", "bravo").status == 200


def test_server_error_set_and_cleared_over_http(sim: SimulatorServer) -> None:
    set_reply = call(
        sim, "/_sim/faults/alpha", practice=None, method="POST", body={"server_error_next": 5}
    )
    assert set_reply.status == 200
    assert call(sim, "patients").status == 503
    remaining = call(sim, "/_sim/faults/alpha", practice=None).json()
    assert remaining["server_error_next"] == 4
    assert call(sim, "/_sim/faults/alpha", practice=None, method="DELETE").status == 200
    assert call(sim, "patients").status == 200
    bad = call(sim, "/_sim/faults/alpha", practice=None, method="POST", body={"nope": 1})
    assert bad.status == 400
    assert call(sim, "/_sim/faults/nobody", practice=None, method="POST", body={}).status == 404


def test_slow_responses(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(slow_seconds=0.3))
    started = time.perf_counter()
    assert call(sim, "patients", Limit=1).status == 200
    assert time.perf_counter() - started >= 0.3


def test_dropped_connection(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(drop_connection_next=1))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        call(sim, "patients")
    assert call(sim, "patients").status == 200
    assert sim.requests[-2].status is None


def test_truncated_body(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(truncated_body_next=1))
    with pytest.raises(http.client.IncompleteRead):
        call(sim, "reports/Aging", DateAsOf=AS_OF.isoformat())
    assert call(sim, "reports/Aging", DateAsOf=AS_OF.isoformat()).status == 200


def test_malformed_rows_are_deterministic(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(malformed_rows=3))
    first = flat(pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat()))
    second = flat(pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat()))
    bad = [r["PatNum"] for r in first if isinstance(r["Bal_0_30"], str)]
    assert len(bad) == 3
    assert bad == [r["PatNum"] for r in second if isinstance(r["Bal_0_30"], str)]
    assert all(r["Bal_0_30"] == "12.3.4" for r in first if r["PatNum"] in bad)


def test_missing_field_everywhere_and_in_some_rows(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(missing_field="InsPayEst"))
    rows = flat(pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat()))
    assert rows and all("InsPayEst" not in r for r in rows)
    sim.set_faults("alpha", Faults(missing_field_rows=2))
    rows = flat(pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat()))
    assert sum(1 for r in rows if "BalTotal" not in r) == 2
    assert all("InsPayEst" in r for r in rows)


def test_duplicate_rows_across_pages(sim: SimulatorServer) -> None:
    total = len(sim.aging_report("alpha", AS_OF))
    sim.set_faults("alpha", Faults(duplicate_rows=True))
    page_list = pages(sim, "reports/Aging", DateAsOf=AS_OF.isoformat())
    assert page_list[1][0] == page_list[0][-1]
    rows = flat(page_list)
    assert len(rows) == total + len(page_list) - 1
    assert len({r["PatNum"] for r in rows}) == total


def test_faults_apply_to_one_practice_only(sim: SimulatorServer) -> None:
    sim.set_faults("bravo", Faults(server_error_next=1))
    assert call(sim, "patients", "alpha").status == 200
    assert call(sim, "patients", "bravo").status == 503
    assert call(sim, "patients", "bravo").status == 200


# -- command line -------------------------------------------------------------------------


DEMO_ENV = {
    "OD_DEVELOPER_KEY": "demo-dev",
    "BRIGHT_SMILES_OD_CUSTOMER_KEY": "demo-bright",
    "LAKESIDE_FAMILY_OD_CUSTOMER_KEY": "demo-lakeside",
    "HARBOR_DENTAL_OD_CUSTOMER_KEY": "demo-harbor",
}


def test_bundled_demo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)
    developer_key, practices = load_config(bundled_config_path(), AS_OF)
    assert developer_key == "demo-dev"
    assert [(p.id, p.customer_key, p.accounts, p.seed) for p in practices] == [
        ("bright_smiles", "demo-bright", 300, 11),
        ("lakeside_family", "demo-lakeside", 150, 22),
        ("harbor_dental", "demo-harbor", 500, 33),
    ]
    monkeypatch.delenv("LAKESIDE_FAMILY_OD_CUSTOMER_KEY")
    with pytest.raises(ConfigError, match="LAKESIDE_FAMILY_OD_CUSTOMER_KEY"):
        load_config(bundled_config_path())


def test_config_rejects_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "v")
    config = tmp_path / "sim.yaml"
    config.write_text(
        "developer_key_env: K\npractices:\n  - {id: a, customer_key_env: K, acounts: 3}\n"
    )
    with pytest.raises(ConfigError, match="acounts"):
        load_config(config)


def _serve(extra_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "balances_pipeline.simulator.cli", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_command_runs_until_sigterm() -> None:
    process = _serve(DEMO_ENV, "--port", "0", "--today", "2026-11-30")
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        assert line.endswith("/api/v1 (practices: bright_smiles, lakeside_family, harbor_dental)")
        url = urlsplit(line.split()[3])
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request(
            "GET",
            "/api/v1/patients?Limit=2",
            headers={"Authorization": "ODFHIR demo-dev/demo-harbor"},
        )
        response = connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())) == 2
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_command_names_a_missing_variable() -> None:
    env = {k: v for k, v in DEMO_ENV.items() if k != "OD_DEVELOPER_KEY"}
    process = _serve({**env, "OD_DEVELOPER_KEY": ""}, "--port", "0")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert "OD_DEVELOPER_KEY" in stderr and len(stderr.strip().splitlines()) == 1
