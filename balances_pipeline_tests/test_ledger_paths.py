"""Ledger mode over HTTP as the real Open Dental API allows: ShortQuery with the Queries
permission, the REST fallback without it, the same balances to the cent either way; cursors
from the server's clock; clinics; the SQL sent; errors that say what the server said."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.settings import layout_from_env
from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline.sources.check import check_source
from balances_pipeline.sources.errors import AuthenticationError, SourceError
from balances_pipeline.sources.opendental import transport as client_module
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline.sources.opendental.shortquery import PHI_COLUMNS, TABLES, ledger_sql
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    write_practices_file,
)
from balances_pipeline_tests.conftest import warehouse_query as query

D = Decimal
TODAY = date(2026, 11, 30)
PHI = re.compile(r"\b(" + "|".join(PHI_COLUMNS) + r"|Phone|Gender|SSN)\b", re.IGNORECASE)


def report_buckets(server: SimulatorServer, practice_id: str, clinic: int | None = None,
                   as_of: date = TODAY) -> dict[str, tuple]:
    return {
        str(row["PatNum"]): (row["Bal_0_30"], row["Bal_31_60"], row["Bal_61_90"],
                             row["BalOver90"], row["BalTotal"], row["InsPayEst"],
                             row["InsWoEst"], row["PatientPortion"])
        for row in server.aging_report(practice_id, as_of, clinic)
    }


def od_buckets(practice_id: str) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in query(
        "SELECT account_id,"
        " CASE WHEN balance_total < 0 THEN balance_total ELSE bucket_0_30 END, bucket_31_60,"
        " bucket_61_90, bucket_over_90, balance_total, insurance_estimate, writeoff_estimate,"
        " patient_portion FROM account_balances WHERE practice_id = ?", [practice_id])}


@pytest.fixture
def paths(tmp_path, balances_home, monkeypatch):
    """One seeded practice served three times: with Queries, without, and as 3 clinics."""
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev")
    monkeypatch.setenv("BALANCES_AS_OF", TODAY.isoformat())
    keys = {"sq_dental": "k-sq", "rest_dental": "k-rest", "clinic_dental": "k-clinic",
            "clinic_report": "k-clinic", "clinic_rest": "k-clinic-rest", "tz_dental": "k-tz"}
    for practice_id, key in keys.items():
        monkeypatch.setenv(f"TEST_{practice_id.upper()}_CUSTOMER_KEY", key)
    sims = [
        SimPractice("sq_dental", "k-sq", accounts=150, seed=4, today=TODAY,
                    queries_permission=True, timezone="America/Denver"),
        SimPractice("rest_dental", "k-rest", accounts=150, seed=4, today=TODAY,
                    timezone="America/Denver"),
        SimPractice("clinic_dental", "k-clinic", accounts=150, seed=5, today=TODAY,
                    queries_permission=True, clinics=3, timezone="America/Chicago"),
        SimPractice("clinic_rest", "k-clinic-rest", accounts=150, seed=5, today=TODAY,
                    clinics=3, timezone="America/Chicago"),
        # The server's clock in Honolulu (UTC-10), the practice configured in Tokyo (UTC+9).
        SimPractice("tz_dental", "k-tz", accounts=80, seed=6, today=TODAY,
                    queries_permission=True, timezone="Pacific/Honolulu"),
    ]
    ledger = {"mode": "ledger"}
    with SimulatorServer(sims, "dev") as server:
        path = write_practices_file(tmp_path / "p.yaml", [
            practice_entry("sq_dental", server.url, timezone="America/Denver",
                           sync={"frequency": "hourly"}, source=ledger),
            practice_entry("rest_dental", server.url, timezone="America/Denver",
                           sync={"frequency": "hourly"}, source=ledger),
            practice_entry("clinic_dental", server.url,
                           source={**ledger, "clinic_num": 2}),
            practice_entry("clinic_report", server.url, source={"clinic_num": 2}),
            practice_entry("clinic_rest", server.url, source={**ledger, "clinic_num": 2}),
            practice_entry("tz_dental", server.url, timezone="Asia/Tokyo",
                           sync={"frequency": "hourly"}, source=ledger),
        ])
        yield server, load_practices(path)


def test_both_paths_are_exact_to_the_cent_on_the_same_data(paths) -> None:
    server, practices = paths
    via_query = sync_practice(practices.practice("sq_dental"))
    via_rest = sync_practice(practices.practice("rest_dental"))
    expected = report_buckets(server, "sq_dental")
    assert len(expected) > 50
    assert od_buckets("sq_dental") == expected == report_buckets(server, "rest_dental")
    assert od_buckets("rest_dental") == expected
    assert via_query.discrepancies == {} and via_rest.discrepancies == {}
    by_practice = {}
    for record in server.requests:
        by_practice.setdefault(record.practice_id, []).append(record)
    assert {r.endpoint for r in by_practice["sq_dental"]} == {"queries/ShortQuery",
                                                               "reports/Aging"}
    rest = by_practice["rest_dental"]
    # One 401 (no Queries), then the REST endpoints as they really are.
    assert [r.status for r in rest if r.endpoint == "queries/ShortQuery"] == [401]
    adjustments = [r for r in rest if r.endpoint == "adjustments"]
    patients = len(server.ledger("rest_dental").patients)
    assert len(adjustments) == patients and all("patnum" in {k.lower() for k in r.params}
                                                for r in adjustments)
    assert all(r.status == 200 for r in rest if r.endpoint != "queries/ShortQuery")


def test_an_incremental_after_a_payment_costs_few_requests(paths) -> None:
    server, practices = paths
    for practice_id in ("sq_dental", "rest_dental"):
        practice = practices.practice(practice_id)
        full = sync_practice(practice)
        before = dict(query("SELECT account_id, balance_total FROM account_balances"
                            " WHERE practice_id = ?", [practice_id]))
        account = next(a for a, total in sorted(before.items()) if total > 50)
        server.ledger(practice_id).add_row(
            "paysplits", {"PatNum": int(account), "SplitAmt": D("50.01"),
                          "DatePay": "2026-11-29"})
        server.reset_request_log()
        incremental = sync_practice(practice)
        assert incremental.mode == "incremental"
        after = dict(query("SELECT account_id, balance_total FROM account_balances"
                           " WHERE practice_id = ?", [practice_id]))
        assert after[account] == before[account] - D("50.01")
        assert od_buckets(practice_id) == report_buckets(server, practice_id)
        mine = [r for r in server.requests if r.practice_id == practice_id]
        if practice_id == "sq_dental":
            assert len(mine) == 6 < full.counts.requests  # NOW(), one page per table
        else:  # the REST fallback reads the whole ledger again: documented cost
            assert len(mine) >= len(server.ledger(practice_id).patients)


def balances_of(practice_id: str) -> dict[str, Decimal]:
    return dict(query("SELECT account_id, balance_total FROM account_balances"
                      " WHERE practice_id = ?", [practice_id]))


def test_an_incremental_on_a_ledger_sharing_one_old_stamp_reads_what_changed(paths) -> None:
    """After a PMS conversion every row carries one old stamp: a cursor taken from the
    newest row stamp would re-read the whole ledger at every incremental sync."""
    server, practices = paths
    practice = practices.practice("sq_dental")
    ledger = server.ledger("sq_dental")
    ledger.convert(datetime(2019, 3, 1, 9, 0))
    full = sync_practice(practice)
    assert full.mode == "full" and full.counts.rows_extracted > 500
    before = balances_of("sq_dental")
    paid, adjusted = [a for a, total in sorted(before.items()) if total > 80][:2]
    ledger.add_row("paysplits", {"PatNum": int(paid), "SplitAmt": D("25.50"),
                                 "DatePay": "2026-11-29"})
    ledger.add_row("adjustments", {"PatNum": int(adjusted), "AdjAmt": D("-10.05"),
                                   "AdjDate": "2026-11-28", "AdjType": 1})
    guarantor = {row["PatNum"]: str(row["Guarantor"]) for row in ledger.patients}
    pending = next(row for row in ledger.claimprocs
                   if row["Status"] == "NotReceived" and row["InsPayEst"] > 0
                   and guarantor[row["PatNum"]] not in (paid, adjusted))
    claimed = guarantor[pending["PatNum"]]
    ledger.edit_row("claimprocs", pending["ClaimProcNum"], Status="Received",
                    InsPayAmt=pending["InsPayEst"], DateCP="2026-11-29")
    server.reset_request_log()

    incremental = sync_practice(practice)

    assert incremental.mode == "incremental"
    mine = [r for r in server.requests if r.practice_id == "sq_dental"]
    assert len(mine) == 6  # NOW(), then one page per table
    assert incremental.counts.rows_extracted == 3
    # Exact: the simulator's own aging of its changed ledger (aging.md), to the cent.
    assert od_buckets("sq_dental") == report_buckets(server, "sq_dental")
    after = balances_of("sq_dental")
    assert after[paid] == before[paid] - D("25.50")
    assert after[adjusted] == before[adjusted] - D("10.05")
    assert after[claimed] == before[claimed] - pending["InsPayEst"]
    assert {a: v for a, v in after.items() if a not in (paid, adjusted, claimed)} == {
        a: v for a, v in before.items() if a not in (paid, adjusted, claimed)}


def test_a_practice_in_another_time_zone_than_its_server(paths) -> None:
    """The office's server runs on Honolulu time, the practice is configured in Tokyo (19
    hours ahead): cursors are the server's clock, so the incremental finds the change; a
    cursor in the practice's (or UTC) time would lie hours after the server's stamps."""
    server, practices = paths
    practice = practices.practice("tz_dental")
    sync_practice(practice)
    with WorkingDatabase(layout_from_env()).connect() as con:
        cursors = [row[0] for row in con.execute(
            "SELECT cursor_at FROM ledger_cursors WHERE practice_id = 'tz_dental'").fetchall()]
    # The simulator's calendar day is fixed (TODAY); its time of day is Honolulu's.
    server_now = server.now("tz_dental")
    honolulu = datetime.now(ZoneInfo("Pacific/Honolulu")).replace(tzinfo=None)
    assert (honolulu - server_now) % timedelta(days=1) < timedelta(minutes=2)
    assert cursors and all(timedelta(0) <= server_now - c < timedelta(minutes=5)
                           for c in cursors)
    before = balances_of("tz_dental")
    account = next(a for a, total in sorted(before.items()) if total > 30)
    server.ledger("tz_dental").add_row(
        "paysplits", {"PatNum": int(account), "SplitAmt": D("30.00"), "DatePay": "2026-11-30"})
    incremental = sync_practice(practice)
    assert incremental.mode == "incremental" and incremental.counts.rows_extracted == 1
    assert balances_of("tz_dental")[account] == before[account] - D("30.00")
    assert od_buckets("tz_dental") == report_buckets(server, "tz_dental")


def test_cursors_are_the_server_clock_when_the_read_began(paths) -> None:
    server, practices = paths
    sync_practice(practices.practice("sq_dental"))
    from balances_pipeline.settings import layout_from_env

    with WorkingDatabase(layout_from_env()).connect() as con:
        cursors = con.execute("SELECT endpoint, cursor_at FROM ledger_cursors"
                              " WHERE practice_id = 'sq_dental'").fetchall()
    assert len(cursors) == 5
    now = server.now("sq_dental")  # the office's wall clock (America/Denver)
    for _, cursor in cursors:
        assert timedelta(0) <= now - cursor < timedelta(minutes=2)


def test_a_clinic_equals_that_clinics_aging_report(paths) -> None:
    server, practices = paths
    expected = report_buckets(server, "clinic_dental", clinic=2)
    whole = report_buckets(server, "clinic_dental")
    assert 0 < len(expected) < len(whole)
    sync_practice(practices.practice("clinic_dental"))
    sync_practice(practices.practice("clinic_report"))
    sync_practice(practices.practice("clinic_rest"))
    assert od_buckets("clinic_dental") == expected
    assert od_buckets("clinic_rest") == report_buckets(server, "clinic_rest", clinic=2)
    report = {row[0]: row[1] for row in query(
        "SELECT account_id, balance_total FROM account_balances"
        " WHERE practice_id = 'clinic_report'")}
    assert report == {account: figures[4] for account, figures in expected.items()}


def test_the_sql_sent_never_names_a_phi_column(paths, monkeypatch) -> None:
    server, practices = paths
    sent: list[str] = []
    original = OpenDentalClient._short_query_body

    def recording(self, sql, offset):
        sent.append(sql)
        return original(self, sql, offset)

    monkeypatch.setattr(OpenDentalClient, "_short_query_body", recording)
    sync_practice(practices.practice("sq_dental"))
    sync_practice(practices.practice("clinic_dental"))
    assert len(sent) > 10
    for sql in sent + [ledger_sql(endpoint, None, 3) for endpoint in TABLES]:
        assert not PHI.search(sql), sql
        assert sql.lstrip().upper().startswith("SELECT")
    assert any("ORDER BY PatNum" in sql for sql in sent)


def test_a_key_without_queries_falls_back_and_says_so(paths) -> None:
    _, practices = paths
    lines = "\n".join(check_source(practices, "rest_dental"))
    assert "ledger path: REST fallback" in lines
    assert "missing permission: Queries" in lines
    assert "requests of /adjustments (one per patient)" in lines
    lines = "\n".join(check_source(practices, "sq_dental"))
    assert "ledger path: ShortQuery" in lines and "missing permission" not in lines
    assert "estimated requests, incremental sync: 6" in lines


def test_errors_say_what_the_server_said(paths, monkeypatch) -> None:
    _, practices = paths
    practice = practices.practice("rest_dental")
    with OpenDentalClient(practice) as client, pytest.raises(SourceError) as raised:
        client._get_rows("/adjustments", {"Offset": 0}, 0)
    assert "HTTP 400: PatNum is required." in str(raised.value)
    with OpenDentalClient(practice) as client, pytest.raises(AuthenticationError) as missing:
        client._short_query_rows("SELECT NOW()", 0)
    assert "lacks the Queries permission" in str(missing.value)
    assert "authentication failed" not in str(missing.value)
    monkeypatch.setenv("TEST_REST_DENTAL_CUSTOMER_KEY", "wrong-key-secret")
    with OpenDentalClient(practice) as client, pytest.raises(AuthenticationError) as wrong:
        client._get_rows("/patients/Simple", {"Offset": 0}, 0)
    message = str(wrong.value)
    assert message.startswith("authentication failed for practice rest_dental (HTTP 401")
    assert "wrong-key-secret" not in message


def test_explanations_are_scrubbed_and_capped() -> None:
    text = client_module.explanation_text(
        b'"Bad header ODFHIR dev-key/cust-key-123 and cust-key-123 ' + b"x" * 500 + b'"',
        ("cust-key-123",))
    assert "cust-key-123" not in text and "dev-key" not in text
    assert len(text) <= client_module.EXPLANATION_MAX_CHARS and "\n" not in text
