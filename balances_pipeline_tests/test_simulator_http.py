"""The bundled EHR simulator over loopback HTTP: authentication, paging and faults."""

from __future__ import annotations

import http.client
import time
from datetime import date, timedelta
from email.utils import parsedate_to_datetime

import pytest

from balances_pipeline.simulator import Faults, SimulatorServer
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


