"""The simulator refuses what Open Dental refuses and serves what it serves: the filters
it has and has not, ShortQuery behind the Queries permission, clinics, the office clock."""


from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from balances_pipeline.simulator import SimulatorServer
from balances_pipeline.simulator.ledger import CLAIMPROC_STATUS, PAT_STATUS, PROC_STATUS
from balances_pipeline_tests.simulator_http_helpers import (  # noqa: F401 - fixtures too
    AS_OF,
    DEV,
    FIXTURE,
    KEYS,
    PHI_FIELDS,
    STAMP,
    D,
    Reply,
    _no_faults,
    call,
    flat,
    pages,
    query,
    query_all,
    server_clock,
    sim,
)

# -- the real API's refusals and the filters it has (and has not) --------------------------


def test_patients_refuses_date_t_stamp(sim: SimulatorServer) -> None:
    reply = call(sim, "patients", DateTStamp="2026-11-01 00:00:00")
    assert reply.status == 400
    assert "patients/Simple" in reply.json()
    assert call(sim, "patients", datetstamp="2026-11-01 00:00:00").status == 400


def test_patients_simple_reads_changes_with_the_server_clock(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    since = sorted(p["DateTStamp"] for p in ledger.patients)[len(ledger.patients) // 2]
    first = call(sim, "patients/Simple", DateTStamp=since)
    assert first.status == 200
    rows = flat(pages(sim, "patients/Simple", DateTStamp=since))
    expected = [r["PatNum"] for r in ledger.patients if r["DateTStamp"] >= since]
    assert 0 < len(expected) < len(ledger.patients)
    assert [r["PatNum"] for r in rows] == expected
    assert all(r["DateTStamp"] >= since for r in rows)
    clock = server_clock(first, "America/Denver")
    served = datetime.strptime(first.json()[0]["serverDateTime"], STAMP)
    assert abs(served - clock) <= timedelta(seconds=1)
    assert abs(served - sim.now("alpha")) < timedelta(seconds=5)
    assert len(call(sim, "patients/Simple", Limit=5).json()) == 5
    assert "serverDateTime" not in call(sim, "patients", Limit=1).json()[0]
    assert call(sim, "Patients/simple", Limit=1).status == 200  # paths are case-insensitive


def test_patient_rows_carry_synthetic_phi(sim: SimulatorServer) -> None:
    for endpoint in ("patients", "patients/Simple"):
        rows = flat(pages(sim, endpoint, "alpha"))
        for field in PHI_FIELDS:
            assert all(field in r for r in rows), (endpoint, field)
            assert sum(1 for r in rows if r[field]) > len(rows) // 2, (endpoint, field)
        assert all(r["SSN"].startswith("9") and len(r["SSN"]) == 9 for r in rows)
        assert all("555-01" in r["HmPhone"] for r in rows)
        assert all(r["Email"].endswith("@example.com") for r in rows)
        assert all(len(r["Birthdate"]) == 10 and r["Birthdate"] < AS_OF.isoformat() for r in rows)
    phi = query(sim, "SELECT SSN, Birthdate, Address, HmPhone, Email FROM patient LIMIT 1").json()
    assert phi[0]["SSN"].startswith("9") and phi[0]["Birthdate"].endswith("T00:00:00")


def test_procedurelogs_filters_and_text_fields(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    procs = list(ledger.procedurelogs)
    patnum = procs[0]["PatNum"]
    by_patient = flat(pages(sim, "procedurelogs", PatNum=patnum))
    assert [r["ProcNum"] for r in by_patient] == [
        r["ProcNum"] for r in procs if r["PatNum"] == patnum
    ]
    since = "2026-10-01 00:00:00"
    changed = flat(pages(sim, "procedurelogs", DateTStamp=since))
    assert [r["ProcNum"] for r in changed] == [
        r["ProcNum"] for r in procs if r["DateTStamp"] >= since
    ]
    # "DateTStamp: only useful if not supplying a PatNum": with PatNum it is not applied.
    both = flat(pages(sim, "procedurelogs", PatNum=patnum, DateTStamp="2099-01-01 00:00:00"))
    assert [r["ProcNum"] for r in both] == [r["ProcNum"] for r in by_patient]
    assert flat(pages(sim, "procedurelogs", ClinicNum=1)) == []  # alpha has no clinics
    row = by_patient[0]
    assert isinstance(row["ProcFee"], str) and row["ProcFee"] == str(procs[0]["ProcFee"])
    assert row["ProcFee"].count(".") == 1 and len(row["ProcFee"].split(".")[1]) == 2
    assert row["AptNum"] == "0" and row["PlannedAptNum"] == "0"
    assert isinstance(row["UnitQty"], int) and isinstance(row["PatNum"], int)
    assert "serverDateTime" in row
    statuses = {r["ProcStatus"] for r in flat(pages(sim, "procedurelogs"))}
    assert statuses == {"C", "TP", "D"}


def test_claimprocs_filters_and_no_changed_since_filter(sim: SimulatorServer) -> None:
    claims = list(sim.ledger("alpha").claimprocs)
    received = next(c for c in claims if c["Status"] == "Received")
    for param, field in (
        ("ProcNum", "ProcNum"),
        ("ClaimNum", "ClaimNum"),
        ("PatNum", "PatNum"),
        ("ClaimPaymentNum", "ClaimPaymentNum"),
    ):
        rows = flat(pages(sim, "claimprocs", **{param: received[field]}))
        expected = [c["ClaimProcNum"] for c in claims if c[field] == received[field]]
        assert [r["ClaimProcNum"] for r in rows] == expected and expected, param
    # Open Dental has no changed-since filter here and ignores parameters a method does
    # not take: asking for recent changes reads the whole table.
    for stamp in ("SecDateTEdit", "DateTStamp"):
        rows = flat(pages(sim, "claimprocs", **{stamp: "2099-01-01 00:00:00"}))
        assert len(rows) == len(claims)
    assert {r["Status"] for r in flat(pages(sim, "claimprocs"))} == {"Received", "NotReceived"}
    assert isinstance(rows[0]["InsPayEst"], int | float)


def test_paysplits_filters_and_no_changed_since_filter(sim: SimulatorServer) -> None:
    splits = list(sim.ledger("alpha").paysplits)
    split = splits[len(splits) // 2]
    for param in ("PatNum", "PayNum"):
        rows = flat(pages(sim, "paysplits", **{param: split[param]}))
        assert [r["SplitNum"] for r in rows] == [
            s["SplitNum"] for s in splits if s[param] == split[param]
        ]
    assert flat(pages(sim, "paysplits", ProcNum=split["ProcNum"] + 10**9)) == []
    rows = flat(pages(sim, "paysplits", SecDateTEdit="2099-01-01 00:00:00"))
    assert len(rows) == len(splits)


def test_adjustments_need_a_pat_num(sim: SimulatorServer) -> None:
    for params in ({}, {"SecDateTEdit": "2026-01-01 00:00:00"}, {"PatNum": ""}):
        reply = call(sim, "adjustments", **params)
        assert reply.status == 400 and reply.json() == "PatNum is required."
    adjustments = list(sim.ledger("alpha").adjustments)
    adj = adjustments[0]
    rows = call(sim, "adjustments", PatNum=adj["PatNum"]).json()
    assert [r["AdjNum"] for r in rows] == [
        a["AdjNum"] for a in adjustments if a["PatNum"] == adj["PatNum"]
    ]
    assert call(sim, "adjustments", PatNum=adj["PatNum"], AdjType=adj["AdjType"] + 50).json() == []
    assert call(sim, "adjustments", PatNum=adj["PatNum"], ProcNum=10**9).json() == []
    ignored = call(sim, "adjustments", PatNum=adj["PatNum"], SecDateTEdit="2099-01-01 00:00:00")
    assert [r["AdjNum"] for r in ignored.json()] == [r["AdjNum"] for r in rows]


# -- PUT /queries/ShortQuery --------------------------------------------------------------


def test_short_query_needs_the_queries_permission(sim: SimulatorServer) -> None:
    reply = query(sim, "SELECT PatNum FROM patient", "bravo")
    assert reply.status == 401
    assert reply.json() == "This customer key does not have permission for Queries."
    assert call(sim, "patients", "bravo", Limit=1).status == 200  # only Queries is refused
    assert query(sim, "SELECT PatNum FROM patient LIMIT 1", "alpha").status == 200


def test_short_query_serves_database_values_as_text(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    procs = query_all(
        sim, "SELECT ProcNum, PatNum, ProcFee, ProcStatus, ProcDate, DateTStamp "
        "FROM procedurelog ORDER BY ProcNum"
    )
    expected = list(ledger.procedurelogs)
    assert [int(r["ProcNum"]) for r in procs] == [p["ProcNum"] for p in expected]
    assert all(isinstance(v, str) for r in procs for v in r.values())
    for row, proc in zip(procs, expected, strict=True):
        assert row["ProcStatus"] == str(PROC_STATUS[proc["ProcStatus"]])
        assert Decimal(row["ProcFee"]) == proc["ProcFee"]
        assert row["ProcDate"] == f"{proc['ProcDate']}T00:00:00"
        assert row["DateTStamp"] == proc["DateTStamp"].replace(" ", "T")
    assert {r["ProcStatus"] for r in procs} == {"1", "2", "6"}  # TP, C, deleted
    assert any("." not in r["ProcFee"] for r in procs)  # a double: "130", not "130.00"
    claims = query_all(sim, "SELECT ClaimProcNum, Status FROM claimproc ORDER BY ClaimProcNum")
    assert [r["Status"] for r in claims] == [
        str(CLAIMPROC_STATUS[c["Status"]]) for c in ledger.claimprocs
    ]
    deceased = query(sim, "SELECT COUNT(*) AS n FROM patient WHERE PatStatus = 5").json()
    assert deceased == [
        {"n": str(sum(1 for p in ledger.patients if p["PatStatus"] == "Deceased"))}
    ]
    assert PAT_STATUS["Deceased"] == 5
    joined = query(sim, "SELECT p.PatNum, g.PatNum, `p`.`Guarantor` FROM patient p "
                   "JOIN patient g ON g.PatNum = p.Guarantor ORDER BY p.PatNum LIMIT 1").json()
    assert set(joined[0]) == {"PatNum", "PatNum1", "Guarantor"}
    # A backquote in a string is text, and a backquoted name may hold a double quote.
    quoted = query(sim, "SELECT 'a`b' AS `x \"y`, \"PatNum\" FROM patient LIMIT 1").json()
    assert list(quoted[0]) == ['x "y', "PatNum"] and quoted[0]['x "y'] == "a`b"


def test_short_query_now_is_the_server_clock(sim: SimulatorServer) -> None:
    for practice, zone in (("alpha", "America/Denver"), ("delta", "Asia/Kolkata")):
        reply = query(sim, "SELECT NOW(), CURDATE() AS today, 'NOW()' AS quoted", practice)
        assert reply.status == 200
        [row] = reply.json()
        now = datetime.strptime(row["NOW()"], "%Y-%m-%dT%H:%M:%S")
        assert abs(now - sim.now(practice)) < timedelta(seconds=5)
        assert abs(now - server_clock(reply, zone)) <= timedelta(seconds=1)
        assert row["today"] == f"{now.date().isoformat()}T00:00:00"
        assert row["quoted"] == "NOW()"
    # An alias or column named like a clock function is left alone.
    [row] = query(sim, "SELECT NOW() AS now, 1 AS current_timestamp_x").json()
    assert set(row) == {"now", "current_timestamp_x"}


def test_short_query_pages_of_100(sim: SimulatorServer) -> None:
    total = len(sim.ledger("alpha").procedurelogs)
    sql = "SELECT ProcNum FROM procedurelog ORDER BY ProcNum"
    first = query(sim, sql).json()
    assert len(first) == 100
    assert query(sim, sql, Limit=1000).json() == first  # Limit is not a ShortQuery parameter
    again = query(sim, sql, Offset=100).json()
    assert int(again[0]["ProcNum"]) == int(first[-1]["ProcNum"]) + 1
    skipped = query(sim, sql, Offset=total - 3).json()
    assert len(skipped) == 3
    assert query(sim, sql, Offset=total + 50).json() == []
    assert len(query_all(sim, sql)) == total
    assert query(sim, sql, Offset=-1).status == 400


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM adjustment",
        "UPDATE patient SET LName = 'x'",
        "INSERT INTO paysplit (SplitNum) VALUES (1)",
        "DROP TABLE procedurelog",
        "CREATE TABLE t (a INT)",
        "CREATE TEMP TABLE t AS SELECT 1",
        "ALTER TABLE patient ADD COLUMN x INT",
        "PRAGMA database_list",
        "ATTACH '/tmp/other.db' AS other",
        "COPY patient TO '/tmp/patients.csv'",
        "SET threads = 4",
        "SELECT 1; DELETE FROM adjustment",
        "SELECT table_name FROM information_schema.tables",
    ],
)
def test_short_query_refuses_what_is_not_read_only(sim: SimulatorServer, sql: str) -> None:
    before = query(sim, "SELECT COUNT(*) AS n FROM adjustment").json()
    reply = query(sim, sql)
    assert reply.status == 401, reply.body
    assert "not read-only" in reply.json()
    assert query(sim, "SELECT COUNT(*) AS n FROM adjustment").json() == before


@pytest.mark.parametrize(
    ("sql", "explains"),
    [
        ("", "SqlCommand is required."),
        (None, "SqlCommand is required."),
        (42, "SqlCommand is required."),
        ("SELEC PatNum FROM patient", "syntax"),
        ("SELECT PatNum FROM patients", "patients"),
        ("SELECT Nope FROM patient", "Nope"),
        ("SELECT 1; SELECT 2", "one SELECT"),
        ("WITH t AS (SELECT 1 AS a) SELECT a FROM t", "WITH"),
        ("FROM patient", "SELECT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "not available"),
        ("SELECT * FROM glob('/etc/*')", "not available"),
    ],
)
def test_short_query_bad_requests(sim: SimulatorServer, sql: Any, explains: str) -> None:
    reply = query(sim, sql)
    assert reply.status == 400, reply.body
    assert explains in reply.json()


def test_short_query_request_shape(sim: SimulatorServer) -> None:
    assert call(sim, "queries/ShortQuery").status == 405  # GET
    no_body = call(sim, "queries/ShortQuery", method="PUT")
    assert no_body.status == 400 and no_body.json() == "SqlCommand is required."
    wrong = call(sim, "queries/ShortQuery", method="PUT", body={"Sql": "SELECT 1"})
    assert wrong.status == 400
    assert sim.requests[-1].endpoint == "queries/ShortQuery"


def test_short_query_follows_the_ledger_changes(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    sql = "SELECT SplitNum, SplitAmt, SecDateTEdit FROM paysplit WHERE SecDateTEdit >= '{}' " \
          "ORDER BY SplitNum"
    since = sim.now("alpha").strftime(STAMP)
    assert query(sim, sql.format(since)).json() == []
    patnum = ledger.patients.rows[0][0]
    added = call(sim, "/_sim/rows/alpha/paysplits", method="POST",
                 body={"PatNum": patnum, "SplitAmt": "45.10", "DatePay": "2026-11-30"}).json()
    rows = query(sim, sql.format(since)).json()
    assert [r["SplitNum"] for r in rows] == [str(added["SplitNum"])]
    assert rows[0]["SplitAmt"] == "45.1"
    call(sim, f"/_sim/rows/alpha/paysplits/{added['SplitNum']}", method="PATCH",
         body={"SplitAmt": 50})
    assert query(sim, sql.format(since)).json()[0]["SplitAmt"] == "50"
    call(sim, f"/_sim/rows/alpha/paysplits/{added['SplitNum']}", method="DELETE")
    assert query(sim, sql.format(since)).json() == []


# -- several clinics in one database --------------------------------------------------------


def test_clinics_in_one_database(sim: SimulatorServer) -> None:
    ledger = sim.ledger("delta")
    patients = {p["PatNum"]: p for p in ledger.patients}
    assert {p["ClinicNum"] for p in patients.values()} == {1, 2, 3}
    for endpoint in ("patients", "procedurelogs", "claimprocs", "paysplits"):
        rows = flat(pages(sim, endpoint, "delta"))
        assert {r["ClinicNum"] for r in rows} <= {1, 2, 3} and rows, endpoint
    procs = flat(pages(sim, "procedurelogs", "delta", ClinicNum=2))
    assert procs and all(r["ClinicNum"] == 2 for r in procs)
    # Some procedures are done at another clinic than their patient's own...
    assert any(patients[r["PatNum"]]["ClinicNum"] != 2 for r in procs)
    # ...and some family members are assigned another clinic than their guarantor.
    assert any(p["ClinicNum"] != patients[p["Guarantor"]]["ClinicNum"] for p in patients.values())
    by_query = query(sim, "SELECT COUNT(*) AS n FROM procedurelog WHERE ClinicNum = 2", "delta")
    assert by_query.json() == [{"n": str(len(procs))}]


def test_aging_report_by_clinic_follows_the_guarantor(sim: SimulatorServer) -> None:
    as_of = AS_OF.isoformat()
    patients = {p["PatNum"]: p for p in sim.ledger("delta").patients}
    whole = flat(pages(sim, "reports/Aging", "delta", DateAsOf=as_of))
    parts = []
    for clinic in (1, 2, 3):
        rows = flat(pages(sim, "reports/Aging", "delta", DateAsOf=as_of, ClinicNum=clinic))
        assert rows and all(patients[r["PatNum"]]["ClinicNum"] == clinic for r in rows)
        parts.extend(rows)
    assert sorted(parts, key=lambda r: r["PatNum"]) == whole
    assert flat(pages(sim, "reports/Aging", "delta", DateAsOf=as_of, ClinicNum=0)) == []
    assert flat(pages(sim, "reports/Aging", "alpha", DateAsOf=as_of, ClinicNum=0)) == flat(
        pages(sim, "reports/Aging", "alpha", DateAsOf=as_of)
    )
    assert call(sim, "reports/Aging", "delta", DateAsOf=as_of, ClinicNum="x").status == 400


# -- the server clock in the office's time zone ---------------------------------------------


def test_server_clock_is_in_the_office_time_zone(sim: SimulatorServer) -> None:
    zone = ZoneInfo("Asia/Kolkata")
    reply = call(sim, "procedurelogs", "delta", Limit=1)
    gmt = parsedate_to_datetime(reply.headers["Date"])
    assert reply.headers["Date"].endswith(" GMT")
    local = sim.now("delta")
    # The header is the same instant in GMT, 5h30 behind the office's wall clock.
    assert abs(gmt - local.replace(tzinfo=zone)) < timedelta(seconds=5)
    assert abs(gmt.replace(tzinfo=None) - (local - timedelta(hours=5, minutes=30))) < timedelta(
        seconds=5
    )
    served = datetime.strptime(reply.json()[0]["serverDateTime"], STAMP)
    assert abs(served - gmt.astimezone(zone).replace(tzinfo=None)) <= timedelta(seconds=1)
    patnum = sim.ledger("delta").patients.rows[0][0]
    added = sim.ledger("delta").add_row(
        "adjustments", {"PatNum": patnum, "AdjDate": AS_OF.isoformat(), "AdjAmt": "-5.00"}
    )
    stamp = datetime.strptime(added["SecDateTEdit"], STAMP)
    assert abs(stamp - local) < timedelta(seconds=5)
    assert added["AdjType"] == 1  # a negative adjustment's type by default
    sim.ledger("delta").delete_row("adjustments", added["AdjNum"])
