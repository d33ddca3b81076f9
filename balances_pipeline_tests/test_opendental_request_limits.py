"""Every request has a deadline and a body-size limit (`request_deadline_seconds`,
`max_response_bytes`), over real sockets on loopback.

`timeout_seconds` bounds each socket read, so a server sending a byte now and then kept a
request alive as long as it liked; a huge page was read whole into memory. The servers
here are raw sockets: they drip a body, drip the headers, or generate a huge body lazily,
each bounded in time and counting the bytes they managed to send.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from pydantic import ValidationError

from balances_pipeline.sources.errors import (
    MalformedResponseError,
    ResponseTooLargeError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.http import DeadlineExceeded, RequestLimits, build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    FakeOpenDental,
    Reply,
    aging_row,
    collect,
    make_practice,
    patient_row,
)

MiB = 1024 * 1024
WHERE = "practice test_practice: /reports/Aging offset 0"
PAGE = json.dumps([aging_row(1), aging_row(2)]).encode()


# -- a raw HTTP server on loopback ------------------------------------------------------------


@dataclass
class Served:
    started: float
    sent: int = 0
    ended: float | None = None


class Hangup(Exception):
    """The test is over: stop serving."""


class Wire:
    """One connection as a behaviour sees it: send bytes, wait, both counted and bounded."""

    def __init__(self, conn: socket.socket, served: Served, stopping: threading.Event) -> None:
        self.conn = conn
        self.served = served
        self.stopping = stopping

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)
        self.served.sent += len(data)

    def wait(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Hangup


Behaviour = Callable[[Wire], None]


class RawServer:
    """Answers each connection with the next scripted behaviour (then `default`)."""

    def __init__(self, default: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        self.default = default
        self.script: list[Behaviour] = []
        self.served: list[Served] = []
        self.stopping = threading.Event()
        self.scheme = "https" if tls else "http"
        self._listener = socket.create_server(("127.0.0.1", 0))
        if tls is not None:
            self._listener = tls.wrap_socket(self._listener, server_side=True)
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._listener.getsockname()[1]}/api/v1"

    def close(self) -> None:
        self.stopping.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except ssl.SSLError:
                continue  # a client that refused the certificate
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            behaviour = self.script.pop(0) if self.script else self.default
            served = Served(started=time.monotonic())
            self.served.append(served)
            try:
                behaviour(Wire(conn, served, self.stopping))
            except (OSError, Hangup):
                pass  # the client hung up (or the test is over)
            finally:
                served.ended = time.monotonic()


def head(*headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def answer(body: bytes = PAGE) -> Behaviour:
    def behaviour(wire: Wire) -> None:
        wire.send(head(f"Content-Length: {len(body)}") + body)

    return behaviour


def drip_body(seconds: float, interval: float = 0.1, framed: bool = True) -> Behaviour:
    """A JSON list padded with spaces, one byte every `interval`, for about `seconds`."""
    body = b"[" + b" " * max(int(seconds / interval) - 2, 0) + b"]"

    def behaviour(wire: Wire) -> None:
        wire.send(head(f"Content-Length: {len(body)}") if framed else head())
        for byte in body:
            wire.wait(interval)
            wire.send(bytes([byte]))

    return behaviour


def drip_headers(seconds: float, interval: float = 0.1) -> Behaviour:
    """The status line and headers one byte every `interval` for about `seconds`, then
    the rest of the answer at once."""
    dripped = int(seconds / interval)
    message = head(f"Content-Length: {len(PAGE)}", "X-Pad: " + "x" * dripped) + PAGE

    def behaviour(wire: Wire) -> None:
        for byte in message[:dripped]:
            wire.send(bytes([byte]))
            wire.wait(interval)
        wire.send(message[dripped:])

    return behaviour


SPACES = b" " * 65536


def huge(total: int, framing: str, declared: int | None = None) -> Behaviour:
    """`[` + `total` spaces + `]`, generated as it is sent (never held)."""

    def behaviour(wire: Wire) -> None:
        if framing == "length":
            wire.send(head(f"Content-Length: {declared or total + 2}"))
        elif framing == "chunked":
            wire.send(head("Transfer-Encoding: chunked"))
        else:
            wire.send(head())
        pieces = [b"["] + [SPACES] * (total // len(SPACES)) + [b"]"]
        for piece in pieces:
            if framing == "chunked":
                wire.send(f"{len(piece):x}\r\n".encode())
                wire.send(piece)
                wire.send(b"\r\n")
            else:
                wire.send(piece)
            if wire.stopping.is_set():
                raise Hangup
        if framing == "chunked":
            wire.send(b"0\r\n\r\n")

    return behaviour


@pytest.fixture(name="raw")
def raw_fixture() -> Iterator[RawServer]:
    server = RawServer(answer())
    yield server
    server.close()


def client_for(server: RawServer, **source: Any) -> OpenDentalClient:
    practice = make_practice(server.url, **source)
    session = build_session(
        max_retries=practice.source.max_retries,
        verify_tls=True,
        timeout_seconds=practice.source.timeout_seconds,
        backoff_factor=0.01,
        backoff_jitter=0,
    )
    return OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result: Any = call()
    except SourceError as error:
        result = error
    return time.monotonic() - started, result


# -- the deadline ----------------------------------------------------------------------------


def test_a_dripping_body_stops_at_the_deadline(raw: RawServer) -> None:
    # Each byte arrives well within the read timeout; before, the request took 6 s.
    raw.default = drip_body(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert str(error) == (
        f"{WHERE}: response not complete after 1 s (request_deadline_seconds); "
        "gave up after 0 retries"
    )
    assert 0.95 <= elapsed < 2.5  # not the 6 s the server would take
    [served] = raw.served
    waited = time.monotonic() + 2  # the server notices the hang-up at its next byte
    while served.ended is None and time.monotonic() < waited:
        time.sleep(0.02)
    assert served.ended is not None and served.ended - served.started < 2.5
    assert served.sent < len(head("Content-Length: 60")) + 20  # not the whole body
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (1, 0, 0)


def test_dripping_headers_stop_at_the_deadline(raw: RawServer) -> None:
    raw.default = drip_headers(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert "response not complete after 1 s (request_deadline_seconds)" in str(error)
    assert 0.95 <= elapsed < 2.5  # not the 6 s the server would take


def test_an_unframed_body_cut_at_the_deadline_is_not_taken_as_complete(raw: RawServer) -> None:
    # Without framing, the end of the body is the connection closing, which is also what
    # cutting it at the deadline looks like from inside the read: still a deadline.
    raw.default = drip_body(6, framed=False)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert "response not complete after 1 s (request_deadline_seconds)" in str(error)
    assert elapsed < 2.5


def test_the_deadline_is_retried_within_the_budget_and_counted(raw: RawServer) -> None:
    raw.script = [drip_body(6), drip_headers(6)]  # then a prompt answer
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=0.6, max_retries=2)
    elapsed, result = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    rows, rejected = result
    assert [row.guarantor_id for row in rows] == [1, 2] and rejected == []
    assert 1.15 <= elapsed < 3.5
    assert len(raw.served) == 3
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (3, 2, 1)


def test_the_deadline_on_every_attempt_is_transient_after_the_budget(raw: RawServer) -> None:
    raw.default = drip_body(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=0.6, max_retries=1)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert str(error) == (
        f"{WHERE}: response not complete after 0.6 s (request_deadline_seconds); "
        "gave up after 1 retries"
    )
    assert 1.15 <= elapsed < 3  # two attempts of 0.6 s, not two of 6 s
    assert (len(raw.served), client.stats.requests, client.stats.retries) == (2, 2, 1)


def test_the_deadline_is_a_read_error_of_the_sessions_retry(raw: RawServer) -> None:
    raw.script = [drip_body(6)]
    session = build_session(max_retries=3, verify_tls=True, backoff_factor=0.01)
    response = session.get(raw.url, limits=RequestLimits(deadline_seconds=0.5))
    assert response.status_code == 200
    retry = response.raw.retries
    [attempt] = retry.history
    assert isinstance(attempt.error, DeadlineExceeded)
    assert (retry.total, retry.read, retry.status) == (2, 2, 3)
    assert (session.stats.requests, session.stats.retries) == (2, 1)


def test_a_silent_keep_alive_server_is_cut_and_the_pool_recovers() -> None:
    # HTTP/1.1 keep-alive (the connection keeps its socket): an answer withheld for 3 s,
    # within the session's 30 s read timeout, is cut at the deadline; the next request on
    # the same session gets a fresh connection.
    fake = FakeOpenDental({"/patients": [patient_row(1, 1)]}).start()
    session = build_session(max_retries=0, verify_tls=True)
    url, headers = f"{fake.url}/patients", {"Authorization": AUTHORIZATION}
    try:
        assert len(session.get(url, headers=headers).json()) == 1  # a pooled connection
        fake.script = [Reply(delay=3)]
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError) as raised:
            session.get(url, headers=headers, limits=RequestLimits(deadline_seconds=1))
        assert time.monotonic() - started < 2.5
        assert isinstance(raised.value.args[0].reason, DeadlineExceeded)
        assert len(session.get(url, headers=headers).json()) == 1
        assert (session.stats.requests, session.stats.retries) == (3, 0)
    finally:
        fake.stop()


def test_prompt_requests_are_unaffected_by_the_deadline(raw: RawServer) -> None:
    client = client_for(raw, timeout_seconds=1, request_deadline_seconds=1)
    for _ in range(3):
        rows, _ = collect(client.aging_report_pages(AS_OF))
        assert len(rows) == 2
    time.sleep(1.2)  # a deadline left running would cut a later request or connection
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 2
    assert (client.stats.requests, client.stats.retries) == (4, 0)
    waited = time.monotonic() + 1
    while _watchdogs() and time.monotonic() < waited:
        time.sleep(0.01)
    assert _watchdogs() == []  # one per attempt, gone with it


def _watchdogs() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "http-deadline"]


# -- the body-size limit ---------------------------------------------------------------------


def _peak_while(call: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        _, result = timed(call)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("framing", ["chunked", "unframed", "length"])
def test_a_huge_body_is_cut_off_at_the_limit_without_holding_it(
    raw: RawServer, framing: str
) -> None:
    # 256 MiB generated lazily: before, all of it was read into memory (and parsed).
    raw.default = huge(256 * MiB, framing)
    client = client_for(raw, max_response_bytes=MiB)
    peak, error = _peak_while(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, ResponseTooLargeError)
    assert not isinstance(error, TransientSourceError | MalformedResponseError)
    assert str(error) == f"{WHERE}: response larger than 1048576 bytes (max_response_bytes)"
    assert peak < 6 * MiB
    [served] = raw.served  # never retried
    assert served.sent < 48 * MiB  # the client hung up (what is left is socket buffers)
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (1, 0, 0)


def test_a_declared_length_over_the_limit_fails_before_reading(raw: RawServer) -> None:
    raw.default = huge(256 * MiB, "length")
    client = client_for(raw)  # the default limit, 64 MiB
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert str(error) == f"{WHERE}: response larger than 67108864 bytes (max_response_bytes)"
    assert elapsed < 1


def test_a_body_that_decompresses_beyond_the_limit_is_too_large(raw: RawServer) -> None:
    # 64 MiB of JSON in about 64 KiB of gzip: the limit is on what it decodes to as well.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    gzipped = packer.compress(b"[")
    for _ in range(64):
        gzipped += packer.compress(b" " * MiB)
    gzipped += packer.compress(b"]") + packer.flush()
    assert len(gzipped) < MiB

    def bomb(wire: Wire) -> None:
        wire.send(head(f"Content-Length: {len(gzipped)}", "Content-Encoding: gzip") + gzipped)

    raw.default = bomb
    client = client_for(raw, max_response_bytes=MiB)
    peak, error = _peak_while(lambda: collect(client.aging_report_pages(AS_OF)))
    assert str(error) == f"{WHERE}: response larger than 1048576 bytes (max_response_bytes)"
    assert peak < 8 * MiB
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_a_body_of_exactly_the_limit_is_read(raw: RawServer) -> None:
    body = PAGE + b" " * (2048 - len(PAGE))
    raw.default = answer(body)
    rows, _ = collect(client_for(raw, max_response_bytes=2048).aging_report_pages(AS_OF))
    assert len(rows) == 2
    raw.default = answer(body + b" ")
    with pytest.raises(ResponseTooLargeError, match="larger than 2048 bytes"):
        collect(client_for(raw, max_response_bytes=2048).aging_report_pages(AS_OF))


def test_the_limits_of_the_practice_apply_to_a_session_built_elsewhere(raw: RawServer) -> None:
    # The session's own limits are defaults; the practice's settings are sent per request.
    raw.default = answer(PAGE + b" " * 4096)
    practice = make_practice(raw.url, max_response_bytes=4096)
    session = build_session(max_retries=0, verify_tls=True)
    client = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
    with pytest.raises(ResponseTooLargeError, match="larger than 4096 bytes"):
        client.check_connection()


# -- the settings ----------------------------------------------------------------------------


def test_defaults() -> None:
    source = make_practice("http://h/api/v1").source
    assert (source.request_deadline_seconds, source.max_response_bytes) == (120, 64 * MiB)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"request_deadline_seconds": 0}, "request_deadline_seconds"),
        ({"request_deadline_seconds": -1}, "request_deadline_seconds"),
        ({"request_deadline_seconds": 3601}, "request_deadline_seconds"),
        ({"request_deadline_seconds": "soon"}, "request_deadline_seconds"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
        ({"max_response_bytes": 1023}, "max_response_bytes"),
        ({"max_response_bytes": 2**30 + 1}, "max_response_bytes"),
        ({"max_response_bytes": 1.5}, "max_response_bytes"),
        ({"timeout_seconds": 60, "request_deadline_seconds": 30}, "request_deadline_seconds"),
        ({"timeout_seconds": 300}, "request_deadline_seconds"),
    ],
)
def test_settings_are_validated(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        make_practice("http://h/api/v1", **settings)


def test_a_deadline_as_long_as_the_read_timeout_is_accepted() -> None:
    source = make_practice(
        "http://h/api/v1", timeout_seconds=300, request_deadline_seconds=300,
        max_response_bytes=2**30,
    ).source
    assert (source.request_deadline_seconds, source.max_response_bytes) == (300, 2**30)
