"""Raw socket servers on loopback for the request-limit tests: they drip a body, drip
the headers, or generate a huge body lazily, each bounded in time and counting the bytes
they managed to send."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from balances_pipeline.sources.errors import (
    SourceError,
)
from balances_pipeline.sources.http import build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline_tests.opendental_fake import (
    AUTHORIZATION,
    aging_row,
    make_practice,
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


def watchdog_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "http-deadline"]
