"""The Open Dental connector over real HTTP on loopback.

Most tests talk to `FakeOpenDental`, a scripted test double: each test controls exactly
which responses come back (pages, 429 with Retry-After, 503, truncated bodies, 401), which
the bundled simulator's random fault injection cannot guarantee. A few tests at the end
run against the simulator itself when it is importable.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from balances_pipeline.config import Practice
from balances_pipeline.sources.credentials import opendental_authorization
from balances_pipeline.sources.errors import (
    AuthenticationError,
    DuplicateRowsError,
    InvalidCredentialError,
    MissingCredentialError,
    SchemaDriftError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.http import build_retry, build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline.sources.opendental.rows import parse_money
from balances_pipeline.sources.rows import AgingReportRow, Page

DEV_KEY = "devKEY-7f3a9c"
CUST_KEY = "custKEY-1b2d4e"
AUTHORIZATION = f"ODFHIR {DEV_KEY}/{CUST_KEY}"
AS_OF = date(2026, 11, 30)
API_PREFIX = "/api/v1"


# -- the scripted test double -------------------------------------------------------------


@dataclass
class Reply:
    """One scripted response; `body=None` serves the requested page from the data set."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False  # promise more bytes than sent, then close
    drop: bool = False  # close the connection without answering
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]


class FakeOpenDental:
    """Serves `/api/v1/reports/Aging` and `/api/v1/patients` from lists of rows."""

    def __init__(self, rows: dict[str, list[Any]] | None = None) -> None:
        self.rows = rows or {}
        self.script: list[Reply] = []
        self.always: Reply | None = None
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # Clients that time out or give up leave broken pipes behind: not worth a traceback.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> FakeOpenDental:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_reply(self, path: str, query: dict[str, str], authorization: str | None) -> Reply:
        with self._lock:
            self.seen.append(Seen(path, query))
            if self.script:
                return self.script.pop(0)
        if self.always is not None:
            return self.always
        if authorization != AUTHORIZATION:
            return Reply(status=401, body=b'"Invalid authorization"')
        return Reply(body=self._page(path, query))

    def _page(self, path: str, query: dict[str, str]) -> bytes:
        offset = int(query.get("Offset", "0"))
        limit = min(int(query.get("Limit", "100")), 100)
        rows = self.rows.get(path, [])[offset : offset + limit]
        return json.dumps(rows).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(parts.query).items()}
                path = parts.path.removeprefix(API_PREFIX)
                reply = fake.next_reply(path, query, self.headers.get("Authorization"))
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = reply.body if reply.body is not None else fake._page(path, query)
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.truncate:
                    self.send_header("Content-Length", str(len(body) + 500))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler


# -- helpers ------------------------------------------------------------------------------


def aging_row(pat_num: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "PatNum": pat_num,
        "patName": f"Family{pat_num}, Given",
        "Bal_0_30": 100.0,
        "Bal_31_60": 20.5,
        "Bal_61_90": 0.0,
        "BalOver90": 0.0,
        "BalTotal": 120.5,
        "InsWoEst": 0.0,
        "InsPayEst": 50.0,
        "PatientPortion": 70.5,
        "SSN": "should be ignored",
    }
    row.update(overrides)
    return row


def patient_row(pat_num: int, guarantor: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "PatNum": pat_num,
        "Guarantor": guarantor,
        "LName": "Doe",
        "FName": "Jane",
        "PatStatus": "Patient",
        "DateTStamp": "2026-11-29 08:15:00",
        "Birthdate": "1980-01-01",
    }
    row.update(overrides)
    return row


def make_practice(base_url: str, **source: Any) -> Practice:
    return Practice.model_validate(
        {
            "id": "test_practice",
            "name": "Test Practice",
            "timezone": "America/Denver",
            "source": {
                "type": "opendental",
                "base_url": base_url,
                "developer_key_env": "TEST_OD_DEVELOPER_KEY",
                "customer_key_env": "TEST_OD_CUSTOMER_KEY",
                "timeout_seconds": 5,
                **source,
            },
        }
    )


def make_client(
    server: FakeOpenDental, *, authorization: str = AUTHORIZATION, **source: Any
) -> OpenDentalClient:
    practice = make_practice(server.url, **source)
    session = build_session(
        max_retries=practice.source.max_retries,
        verify_tls=True,
        timeout_seconds=practice.source.timeout_seconds,
        backoff_factor=0.01,
    )
    return OpenDentalClient(practice, authorization=authorization, session=session)


def collect(pages: Iterator[Page[Any]]) -> tuple[list[Any], list[Any]]:
    rows: list[Any] = []
    rejected: list[Any] = []
    for page in pages:
        rows.extend(page.rows)
        rejected.extend(page.rejected)
    return rows, rejected


@pytest.fixture
def server() -> Iterator[FakeOpenDental]:
    fake = FakeOpenDental().start()
    yield fake
    fake.stop()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", DEV_KEY)
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY)


# -- paging -------------------------------------------------------------------------------


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


# -- transient faults ---------------------------------------------------------------------


def test_429_retry_after_is_honoured_and_counted(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(status=429, body=b'"slow down"', headers={"Retry-After": "1"})]
    client = make_client(server)
    started = time.monotonic()
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert time.monotonic() - started >= 0.9
    assert len(rows) == 1
    assert len(server.seen) == 2
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (2, 1, 1)


def test_retry_after_is_capped() -> None:
    retry = build_retry(max_retries=3, retry_after_max=2.0)
    assert retry.parse_retry_after("3600") == 2.0
    assert retry.increment("GET", "/x", error=None).retry_after_cap == 2.0


def test_503_then_success(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1), aging_row(2)]
    server.script = [Reply(status=503, body=b"{}"), Reply(status=502, body=b"{}")]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 2
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_retries_exhausted_is_transient_error(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 301)]
    client = make_client(server, max_retries=2)
    pages = client.aging_report_pages(AS_OF)
    next(pages)
    next(pages)
    server.always = Reply(status=503, body=b"{}")
    with pytest.raises(TransientSourceError) as raised:
        next(pages)
    assert str(raised.value) == (
        "practice test_practice: /reports/Aging offset 200: HTTP 503 after 2 retries"
    )
    assert len(server.seen) == 2 + 3
    assert (client.stats.requests, client.stats.retries) == (5, 2)


def test_truncated_body_is_retried(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(truncate=True), Reply(body=b'[{"PatNum": 1, "patN')]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_broken_body_every_time_is_transient_error(server: FakeOpenDental) -> None:
    server.always = Reply(body=b'{"not": "a list"}')
    client = make_client(server, max_retries=2)
    with pytest.raises(TransientSourceError, match="not a JSON list after 2 retries"):
        collect(client.aging_report_pages(AS_OF))
    assert len(server.seen) == 3
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_dropped_connection_is_retried(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(drop=True)]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_read_timeout_exhausted_is_transient_error(server: FakeOpenDental) -> None:
    server.always = Reply(body=b"[]", delay=0.5)
    client = make_client(server, max_retries=1, timeout_seconds=0.1)
    with pytest.raises(TransientSourceError, match=r"offset 0: read timeout after 1 retries"):
        collect(client.aging_report_pages(AS_OF))
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_connection_refused_is_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    practice = make_practice(f"http://127.0.0.1:{port}/api/v1", max_retries=1)
    session = build_session(max_retries=1, verify_tls=True, backoff_factor=0.01)
    client = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
    with pytest.raises(
        TransientSourceError, match="connection refused or host unreachable after 1 retries"
    ):
        client.check_connection()
    assert client.stats.retries == 1


# -- authentication and credentials -------------------------------------------------------


def test_401_fails_at_once(server: FakeOpenDental) -> None:
    client = make_client(server, authorization="ODFHIR wrong/key")
    with pytest.raises(AuthenticationError) as raised:
        collect(client.aging_report_pages(AS_OF))
    assert str(raised.value) == "authentication failed for practice test_practice"
    assert len(server.seen) == 1
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_403_fails_at_once(server: FakeOpenDental) -> None:
    server.always = Reply(status=403, body=b"{}", headers={"Retry-After": "1"})
    client = make_client(server)
    with pytest.raises(AuthenticationError):
        collect(client.patient_pages())
    assert len(server.seen) == 1


def test_other_4xx_is_source_error(server: FakeOpenDental) -> None:
    server.always = Reply(status=404, body=b"{}")
    client = make_client(server)
    with pytest.raises(SourceError) as raised:
        collect(client.patient_pages())
    assert type(raised.value) is SourceError
    assert str(raised.value) == "practice test_practice: /patients offset 0: HTTP 404"


@pytest.mark.parametrize("value", [None, ""])
def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", DEV_KEY)
    if value is None:
        monkeypatch.delenv("TEST_OD_CUSTOMER_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", value)
    practice = make_practice("http://127.0.0.1:9/api/v1")
    with pytest.raises(MissingCredentialError) as raised:
        OpenDentalClient(practice)
    assert str(raised.value) == (
        "practice test_practice: environment variable TEST_OD_CUSTOMER_KEY is not set"
    )
    assert DEV_KEY not in str(raised.value)


def test_authorization_header_format(keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    practice = make_practice("http://h/api/v1")
    assert opendental_authorization(practice) == AUTHORIZATION
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY + "\n")  # pasted with a newline
    assert opendental_authorization(practice) == AUTHORIZATION


def test_unsendable_key_is_rejected_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", "abc\r\nX-Injected: 1")
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY)
    with pytest.raises(InvalidCredentialError) as raised:
        opendental_authorization(make_practice("http://h/api/v1"))
    assert str(raised.value) == (
        "practice test_practice: environment variable TEST_OD_DEVELOPER_KEY contains "
        "whitespace or control characters"
    )


def test_authorization_never_leaks(
    server: FakeOpenDental, keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    server.rows["/reports/Aging"] = [aging_row(1), aging_row(2, BalTotal="oops")]
    server.script = [
        Reply(status=429, body=b"{}", headers={"Retry-After": "0"}),
        Reply(truncate=True),
    ]
    practice = make_practice(server.url, max_retries=2)
    session = build_session(max_retries=2, verify_tls=True, backoff_factor=0.01)
    client = OpenDentalClient(practice, session=session)  # authorization from the env
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1 and len(rejected) == 1
    texts = [repr(client), repr(client._auth), repr(rejected[0])]
    server.always = Reply(status=503, body=b"{}")
    with pytest.raises(TransientSourceError) as transient:
        collect(client.aging_report_pages(AS_OF))
    server.always = Reply(status=401, body=b"{}")
    with pytest.raises(AuthenticationError) as auth:
        collect(client.patient_pages())
    for error in (transient.value, auth.value):
        texts.append("".join(traceback.format_exception(error)))
    texts.append(caplog.text)
    texts.extend(repr(record.args) for record in caplog.records)
    assert any("urllib3" in record.name for record in caplog.records)
    for text in texts:
        for secret in (AUTHORIZATION, DEV_KEY, CUST_KEY):
            assert secret not in text


# -- bad data -----------------------------------------------------------------------------


def test_malformed_money_is_rejected_and_valid_rows_still_yielded(
    server: FakeOpenDental,
) -> None:
    server.rows["/reports/Aging"] = [
        aging_row(1),
        aging_row(2, Bal_31_60="twelve"),
        aging_row(3),
        aging_row(4, BalTotal=None),
        aging_row(5, PatientPortion="1e400"),
        aging_row(6, InsPayEst=True),
    ]
    client = make_client(server)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert [row.guarantor_id for row in rows] == [1, 3]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        ("2", "2", "field 'Bal_31_60': not a decimal amount"),
        ("4", "4", "field 'BalTotal': is null"),
        ("5", "5", "field 'PatientPortion': not a decimal amount"),
        ("6", "6", "field 'InsPayEst': not a decimal amount"),
    ]
    first = rejected[0]
    assert first.endpoint == "/reports/Aging"
    raw = json.loads(first.raw)
    assert "SSN" not in raw
    assert raw["Bal_31_60"] == "twelve" and raw["PatNum"] == 2
    assert '"Bal_0_30": 100.0' in first.raw  # numbers kept as the source sent them
    assert "Family2" not in first.reason


def test_money_is_exact_decimal(server: FakeOpenDental) -> None:
    row = '{"PatNum": %d, "patName": "A, B", "Bal_0_30": %s, "Bal_31_60": 0, "Bal_61_90": 0,'
    row += ' "BalOver90": 0, "BalTotal": 0.30, "InsWoEst": 0, "InsPayEst": 0,'
    row += ' "PatientPortion": 0.30}'
    body = "[" + ", ".join([row % (1, "0.30"), row % (2, "0.30000000000000004")]) + "]"
    server.always = Reply(body=body.encode())
    rows, rejected = collect(make_client(server).aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert rows[0].bal_0_30 == Decimal("0.30")
    assert str(rows[0].bal_0_30) == "0.30"
    assert isinstance(rows[0].bal_total, Decimal)
    assert rejected[0].reason == "field 'Bal_0_30': more than 2 decimal places"
    assert '"Bal_0_30": 0.30000000000000004' in rejected[0].raw


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.30"), Decimal("0.30")),
        (Decimal("-12.5"), Decimal("-12.50")),
        (7, Decimal("7.00")),
        ("15.25", Decimal("15.25")),
        (Decimal("1E+2"), Decimal("100.00")),
        (Decimal("999999999.99"), Decimal("999999999.99")),
    ],
)
def test_parse_money_accepts(value: Any, expected: Decimal) -> None:
    assert parse_money(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (Decimal("0.001"), "more than 2 decimal places"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("-Infinity"), "not a finite amount"),
        (Decimal("1000000000"), "amount out of range"),
        (Decimal("1E+30"), "amount out of range"),
        ("1,000.00", "not a decimal amount"),
        ("", "not a decimal amount"),
        (False, "not a decimal amount"),
        ([1], "not a decimal amount"),
    ],
)
def test_parse_money_rejects(value: Any, problem: str) -> None:
    assert parse_money(value) == (None, problem)


def test_bad_ids_and_timestamps_are_rejected(server: FakeOpenDental) -> None:
    server.rows["/patients"] = [
        patient_row(1, 1),
        patient_row("x", 1),
        patient_row(3, "1.5"),
        patient_row(4, 1, DateTStamp="yesterday"),
        patient_row(5, 1, LName=None),
        "not an object",
    ]
    rows, rejected = collect(make_client(server).patient_pages())
    assert [row.pat_num for row in rows] == [1]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        (None, "1", "field 'PatNum': not an integer"),
        ("3", None, "field 'Guarantor': not an integer"),
        ("4", "1", "field 'DateTStamp': not a timestamp (yyyy-MM-dd HH:mm:ss)"),
        ("5", "1", "field 'LName': is null"),
        (None, None, "row is not a JSON object"),
    ]
    assert "Birthdate" not in rejected[0].raw


def test_field_missing_from_some_rows_is_a_rejected_row(server: FakeOpenDental) -> None:
    partial = aging_row(2)
    del partial["BalTotal"]
    server.rows["/reports/Aging"] = [aging_row(1), partial]
    rows, rejected = collect(make_client(server).aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert rejected[0].reason == "missing field 'BalTotal'"


def test_field_missing_from_whole_page_is_schema_drift(server: FakeOpenDental) -> None:
    rows = [aging_row(n) for n in range(1, 151)]
    for row in rows[100:]:
        del row["BalTotal"]
    server.rows["/reports/Aging"] = rows
    with pytest.raises(SchemaDriftError) as raised:
        collect(make_client(server).aging_report_pages(AS_OF))
    assert str(raised.value) == (
        "practice test_practice: source schema changed: field 'BalTotal' missing from every "
        "row of /reports/Aging (offset 100)"
    )


def test_duplicate_key_across_pages(server: FakeOpenDental) -> None:
    # Rows shifted while paging: the first row of page two repeats the last of page one.
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 101)] + [aging_row(100)]
    with pytest.raises(DuplicateRowsError) as raised:
        collect(make_client(server).aging_report_pages(AS_OF))
    message = str(raised.value)
    assert "/reports/Aging" in message and "PatNum 100" in message and "offset 100" in message


def test_duplicate_check_is_per_extraction(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    client = make_client(server)
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 1
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 1


# -- against the bundled simulator, when it is there ---------------------------------------


def _simulator() -> Any:
    try:
        from balances_pipeline.simulator import server as simulator_server
    except ImportError:
        return None
    return simulator_server


@pytest.fixture
def simulator() -> Iterator[Any]:
    module = _simulator()
    if module is None or not hasattr(module, "SimulatorServer"):
        pytest.skip("bundled simulator not available")
    practice = module.SimPractice("sim_practice", CUST_KEY, 250, 7)
    sim = module.SimulatorServer(practices=[practice], developer_key=DEV_KEY)
    sim.start()
    yield sim, module
    sim.stop()


def _sim_client(sim: Any, authorization: str = AUTHORIZATION) -> OpenDentalClient:
    practice = make_practice(sim.url)
    session = build_session(max_retries=5, verify_tls=True, backoff_factor=0.01)
    return OpenDentalClient(practice, authorization=authorization, session=session)


def _server_saw(sim: Any, expected: int, practice_id: str | None = "sim_practice") -> bool:
    # The simulator logs a request after answering it: give its thread a moment.
    deadline = time.monotonic() + 2
    while sim.request_count(practice_id) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return sim.request_count(practice_id) == expected


def test_simulator_pages_through_practice(simulator: Any) -> None:
    sim, _ = simulator
    client = _sim_client(sim)
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
    assert _server_saw(sim, client.stats.requests)


def test_simulator_wrong_key_is_401(simulator: Any) -> None:
    sim, _ = simulator
    client = _sim_client(sim, authorization=f"ODFHIR {DEV_KEY}/wrong")
    with pytest.raises(AuthenticationError, match="^authentication failed for practice"):
        client.check_connection()
    assert client.stats.requests == 1
    assert _server_saw(sim, 1, practice_id=None)


def test_simulator_rate_limit_is_honoured(simulator: Any) -> None:
    sim, module = simulator
    sim.set_faults("sim_practice", module.Faults(rate_limit_next=1, retry_after_seconds=1))
    client = _sim_client(sim)
    started = time.monotonic()
    client.check_connection()
    assert time.monotonic() - started >= 0.9
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_simulator_transport_faults_are_retried_and_counted(simulator: Any) -> None:
    sim, module = simulator
    clean, _ = collect(_sim_client(sim).aging_report_pages(AS_OF))
    sim.reset_request_log()
    faults = module.Faults(
        rate_limit_next=1,
        retry_after_seconds=0,
        server_error_next=1,
        drop_connection_next=1,
        truncated_body_next=1,
    )
    sim.set_faults("sim_practice", faults)
    client = _sim_client(sim)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert rows == clean and rejected == []
    assert client.stats.retries == 4
    assert _server_saw(sim, client.stats.requests)


def test_simulator_bad_data(simulator: Any) -> None:
    sim, module = simulator
    sim.set_faults("sim_practice", module.Faults(malformed_rows=2))
    rows, rejected = collect(_sim_client(sim).aging_report_pages(AS_OF))
    assert len(rejected) == 2 and rows
    assert {r.reason for r in rejected} == {"field 'Bal_0_30': not a decimal amount"}
    sim.set_faults("sim_practice", module.Faults(missing_field="BalTotal"))
    with pytest.raises(SchemaDriftError, match="field 'BalTotal' missing from every row"):
        collect(_sim_client(sim).aging_report_pages(AS_OF))
    sim.set_faults("sim_practice", module.Faults(duplicate_rows=True))
    with pytest.raises(DuplicateRowsError, match="returned twice by /patients"):
        collect(_sim_client(sim).patient_pages())  # several pages, unlike the aging report
