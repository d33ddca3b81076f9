"""The bundled EHR simulator over loopback HTTP: authentication, paging, faults, and the real
API's rules (refusals, filters and their absence, ShortQuery, clinics, the server clock)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest

from balances_pipeline.simulator import Faults, SimPractice, SimulatorServer
from balances_pipeline.simulator.ledger import CLAIMPROC_STATUS, PAT_STATUS, PROC_STATUS

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
AS_OF = date(2026, 11, 30)
DEV = "dev-key-123"
KEYS = {
    "alpha": "cust-alpha",
    "bravo": "cust-bravo",
    "synthetic": "cust-synthetic",
    "delta": "cust-delta",
}
STAMP = "%Y-%m-%d %H:%M:%S"
PHI_FIELDS = ("Birthdate", "SSN", "Address", "City", "Zip", "HmPhone", "WirelessPhone", "Email")
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


def query(sim: SimulatorServer, sql: Any, practice: str = "alpha", **params: Any) -> Reply:
    """`PUT /queries/ShortQuery` with `{"SqlCommand": sql}`."""
    return call(sim, "queries/ShortQuery", practice, method="PUT", body={"SqlCommand": sql},
                **params)


def query_all(sim: SimulatorServer, sql: str, practice: str = "alpha") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        reply = query(sim, sql, practice, Offset=len(rows))
        assert reply.status == 200, reply.body
        page = reply.json()
        rows.extend(page)
        if len(page) < 100:
            return rows


def server_clock(reply: Reply, zone: str) -> datetime:
    """The `Date` header (GMT) as the office's local wall-clock time."""
    moment = parsedate_to_datetime(reply.headers["Date"])
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    practices = [
        SimPractice("alpha", KEYS["alpha"], accounts=300, seed=5, today=AS_OF,
                    timezone="America/Denver", queries_permission=True),
        SimPractice("bravo", KEYS["bravo"], accounts=40, seed=9, today=AS_OF),
        SimPractice("synthetic", KEYS["synthetic"], today=date(2026, 11, 29), dataset=FIXTURE),
        # Far from GMT and with a half-hour offset, so that a local time labelled GMT shows.
        SimPractice("delta", KEYS["delta"], accounts=250, seed=17, today=AS_OF,
                    timezone="Asia/Kolkata", queries_permission=True, clinics=3),
    ]
    with SimulatorServer(practices, developer_key=DEV) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").clear_faults()


# -- the synthetic third-party practice ---------------------------------------------------


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
        assert reply.json() == "Invalid Authorization header."
    assert call(sim, "patients", practice=None).status == 401


def test_customer_key_selects_the_practice(sim: SimulatorServer) -> None:
    alpha = call(sim, "patients", "alpha", Limit=5).json()
    bravo = call(sim, "patients", "bravo", Limit=5).json()
    assert alpha != bravo
    expected = list(sim.ledger("alpha").patients)[:5]
    assert [(r["PatNum"], r["LName"], r["FName"], r["Guarantor"]) for r in alpha] == [
        (r["PatNum"], r["LName"], r["FName"], r["Guarantor"]) for r in expected
    ]


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


def test_list_endpoints_page_in_key_order(sim: SimulatorServer) -> None:
    ledger = sim.ledger("alpha")
    for name, key in (
        ("patients", "PatNum"),
        ("patients/Simple", "PatNum"),
        ("procedurelogs", "ProcNum"),
        ("claimprocs", "ClaimProcNum"),
        ("paysplits", "SplitNum"),
    ):
        table = "patients" if name.startswith("patients") else name
        rows = flat(pages(sim, name))
        assert [r[key] for r in rows] == [r[key] for r in ledger.table(table)], name
    assert len(ledger.procedurelogs) > 1000
    limited = call(sim, "procedurelogs", Offset=10, Limit=7).json()
    assert [r["ProcNum"] for r in limited] == [r["ProcNum"] for r in ledger.procedurelogs][10:17]
    assert len(call(sim, "procedurelogs", Limit=1000).json()) == 100


def test_bad_requests(sim: SimulatorServer) -> None:
    assert call(sim, "reports/Aging").status == 400
    assert call(sim, "reports/Aging").json() == "DateAsOf is required (yyyy-MM-dd)."
    assert call(sim, "reports/Aging", DateAsOf="30/11/2026").status == 400
    assert call(sim, "reports/Aging", DateAsOf="2026-02-30").status == 400
    assert call(sim, "reports/Aging", DateAsOf="2026-11-30", Offset="x").status == 400
    assert call(sim, "patients/Simple", DateTStamp="yesterday").status == 400
    assert call(sim, "procedurelogs", PatNum="twelve").json() == "PatNum is not a valid number."
    assert call(sim, "nothing_here").status == 404
    assert call(sim, "/elsewhere").status == 404
    assert call(sim, "patients", method="PUT", body={}).status == 405


def test_date_header_is_the_simulator_clock(sim: SimulatorServer) -> None:
    reply = call(sim, "patients", "bravo", Limit=1)
    served = parsedate_to_datetime(reply.headers["Date"])
    assert served.tzinfo is not None and served.utcoffset() == timedelta(0)
    assert abs(served.astimezone().replace(tzinfo=None) - sim.now("bravo")) < timedelta(seconds=5)
    assert served.astimezone().date() == AS_OF
    clock = call(sim, "/_sim/clock/bravo", method="POST", body={"advance_days": 3})
    assert clock.status == 200 and clock.json()["now"].startswith("2026-12-03")
    reply = call(sim, "patients", "bravo", Limit=1)
    assert parsedate_to_datetime(reply.headers["Date"]).astimezone().date() == date(2026, 12, 3)
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
    assert changed[0]["ProcFee"] == "123.45"
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


def test_faults_apply_to_short_query_and_patients_simple(sim: SimulatorServer) -> None:
    sim.set_faults("alpha", Faults(server_error_next=1, missing_field="PatNum"))
    assert query(sim, "SELECT PatNum, LName FROM patient").status == 503
    rows = query(sim, "SELECT PatNum, LName FROM patient ORDER BY PatNum").json()
    assert rows and all(set(r) == {"LName"} for r in rows)
    sim.set_faults("alpha", Faults(missing_field_rows=2))
    simple = flat(pages(sim, "patients/Simple"))
    assert sum(1 for r in simple if "Guarantor" not in r) == 2


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
