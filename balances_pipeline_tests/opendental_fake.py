"""A scripted Open Dental server for the connector tests, and what those tests share.

`FakeOpenDental` is a test double: each test controls exactly which responses come back
(pages, 429 with Retry-After, 503, bodies cut short or sent without framing, 401), which
the bundled simulator's fault injection cannot guarantee. The `simulator` fixture runs the
simulator itself for the few tests that use it.

Test modules get the fixtures by importing them: `server_fixture` (named `server`),
`keys_fixture` (`keys`) and `simulator_fixture` (`simulator`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from balances_pipeline.config import Practice
from balances_pipeline.sources.http import build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline.sources.rows import Page

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
    unframed: bool = False  # no Content-Length: the body ends when the connection closes
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
        # ShortQuery's answer: by default the 401 of a key without Queries.
        self.short_query = Reply(
            status=401, body=b'"This customer key does not have permission for Queries."')
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
        if path == "/patients/Simple":  # the same patients (this fake has no DateTStamp)
            path = "/patients"
        rows = self.rows.get(path, [])
        if path == "/adjustments" and "PatNum" in query:  # the real API reads them per patient
            rows = [row for row in rows if str(row.get("PatNum")) == query["PatNum"]]
        rows = rows[offset : offset + limit]
        return json.dumps(rows).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                # ShortQuery: `fake.short_query` (by default, no Queries permission: ledger
                # mode takes the REST fallback); not recorded in `seen`, not scripted.
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = fake.short_query.body or b""
                self.send_response(fake.short_query.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
                if reply.unframed:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
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


@pytest.fixture(name="server")
def server_fixture() -> Iterator[FakeOpenDental]:
    fake = FakeOpenDental().start()
    yield fake
    fake.stop()


@pytest.fixture(name="keys")
def keys_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", DEV_KEY)
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY)


# -- the bundled simulator, when it is there ------------------------------------------------


def _simulator() -> Any:
    try:
        from balances_pipeline.simulator import server as simulator_server
    except ImportError:
        return None
    return simulator_server


@pytest.fixture(name="simulator")
def simulator_fixture() -> Iterator[Any]:
    module = _simulator()
    if module is None or not hasattr(module, "SimulatorServer"):
        pytest.skip("bundled simulator not available")
    practice = module.SimPractice("sim_practice", CUST_KEY, 250, 7)
    sim = module.SimulatorServer(practices=[practice], developer_key=DEV_KEY)
    sim.start()
    yield sim, module
    sim.stop()


def sim_client(sim: Any, authorization: str = AUTHORIZATION) -> OpenDentalClient:
    practice = make_practice(sim.url)
    session = build_session(max_retries=5, verify_tls=True, backoff_factor=0.01)
    return OpenDentalClient(practice, authorization=authorization, session=session)


def server_saw(sim: Any, expected: int, practice_id: str | None = "sim_practice") -> bool:
    # The simulator logs a request after answering it: give its thread a moment.
    deadline = time.monotonic() + 2
    while sim.request_count(practice_id) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return sim.request_count(practice_id) == expected
