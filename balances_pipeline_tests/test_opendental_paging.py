"""The Open Dental connector's paging over real HTTP on loopback: offsets, page sizes,
the server's 100-row cap, and the counts a connection check reports.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline.sources.rows import AgingReportRow
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    FakeOpenDental,
    aging_row,
    collect,
    keys_fixture,  # noqa: F401 - a pytest fixture
    make_client,
    make_practice,
    patient_row,
    server_fixture,  # noqa: F401 - a pytest fixture
    server_saw,
    sim_client,
    simulator_fixture,  # noqa: F401 - a pytest fixture
)


def test_paging_reads_until_a_short_page(server: FakeOpenDental, keys: None) -> None:
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 251)]
    practice = make_practice(server.url)
    with OpenDentalClient(practice) as client:
        rows, rejected = collect(client.aging_report_pages(AS_OF))
        stats = client.stats
    assert [row.guarantor_id for row in rows] == list(range(1, 251))
    assert rejected == []
    assert [seen.query for seen in server.seen] == [
        {"DateAsOf": "2026-11-30", "Offset": str(offset)} for offset in (0, 100, 200)
    ]
    assert (stats.requests, stats.retries, stats.pages) == (3, 0, 3)
    first = rows[0]
    assert first == AgingReportRow(
        guarantor_id=1,
        display_name="Family1, Given",
        bal_0_30=Decimal("100.00"),
        bal_31_60=Decimal("20.50"),
        bal_61_90=Decimal("0.00"),
        bal_over_90=Decimal("0.00"),
        bal_total=Decimal("120.50"),
        ins_wo_est=Decimal("0.00"),
        ins_pay_est=Decimal("50.00"),
        patient_portion=Decimal("70.50"),
    )


def test_full_last_page_needs_one_more_empty_read(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 201)]
    client = make_client(server)
    pages = list(client.aging_report_pages(AS_OF))
    assert [page.offset for page in pages] == [0, 100]
    assert [seen.query["Offset"] for seen in server.seen] == ["0", "100", "200"]
    assert client.stats.pages == 3


def test_custom_page_size_sends_limit(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 61)]
    client = make_client(server, page_size=25)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 60
    assert [(s.query["Offset"], s.query["Limit"]) for s in server.seen] == [
        ("0", "25"),
        ("25", "25"),
        ("50", "25"),
    ]


def test_page_size_above_server_cap_keeps_reading(server: FakeOpenDental) -> None:
    # The fake caps pages at 100 like the remote API: a 100-row page is not the last.
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 151)]
    client = make_client(server, page_size=500)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 150


def test_patient_pages(server: FakeOpenDental) -> None:
    server.rows["/patients"] = [
        patient_row(1, 1),
        patient_row(2, 1, FName="Tom", DateTStamp="0001-01-01 00:00:00"),
        patient_row(3, 3, FName=""),
    ]
    client = make_client(server)
    rows, rejected = collect(client.patient_pages())
    assert rejected == []
    assert [(r.pat_num, r.guarantor_id, r.display_name) for r in rows] == [
        (1, 1, "Doe, Jane"),
        (2, 1, "Doe, Tom"),
        (3, 3, "Doe"),
    ]
    assert rows[0].changed_at is not None and rows[0].changed_at.hour == 8
    assert rows[1].changed_at is None
    assert rows[0].status == "Patient"


def test_check_connection_reports_counts_only(server: FakeOpenDental) -> None:
    server.rows["/patients"] = [patient_row(n, n) for n in range(1, 6)]
    result = make_client(server).check_connection()
    assert result == {
        "practice_id": "test_practice",
        "endpoint": "/patients",
        "rows": 5,
        "rejected": 0,
        "requests": 1,
        "retries": 0,
        "pages": 1,
    }


# -- against the bundled simulator ----------------------------------------------------------


def test_simulator_pages_through_practice(simulator: Any) -> None:
    sim, _ = simulator
    client = sim_client(sim)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert rejected == []
    expected = sim.aging_report("sim_practice", AS_OF)
    assert [row.guarantor_id for row in rows] == [row["PatNum"] for row in expected]
    assert sum(row.bal_total for row in rows) == sum(
        Decimal(str(row["BalTotal"])) for row in expected
    )
    patients, rejected = collect(client.patient_pages())
    assert rejected == [] and len(patients) >= 250
    assert client.stats.retries == 0
    assert server_saw(sim, client.stats.requests)
