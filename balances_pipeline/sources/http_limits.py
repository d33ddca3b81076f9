"""Limits of one request: a total deadline per attempt and a body-size limit, and the
body reading that enforces them (used by `http.py`, inside urllib3's retry loop)."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import requests
from urllib3 import HTTPResponse
from urllib3.exceptions import ReadTimeoutError

DEFAULT_REQUEST_DEADLINE = 120.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024  # one read from the wire
DECODE_CHUNK_BYTES = 16 * 1024  # one decompressed piece (older urllib3: of compressed input)
_DEADLINE_POLL_SECONDS = 0.05


# -- limits -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may take: each attempt's wall-clock deadline, and the largest body."""

    deadline_seconds: float = DEFAULT_REQUEST_DEADLINE
    max_body_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


DEFAULT_LIMITS = RequestLimits()
# The limits of the request being sent, from `CountingSession.request` down to the pool
# (requests passes nothing of its own through `HTTPAdapter.send`).
CURRENT_LIMITS: ContextVar[RequestLimits] = ContextVar("request_limits", default=DEFAULT_LIMITS)


class DeadlineExceeded(ReadTimeoutError):
    """An attempt not complete within its deadline: a read error to urllib3's `Retry`."""

    def __init__(self, pool: Any, url: str, seconds: float) -> None:
        super().__init__(pool, url, f"response not complete after {seconds:g} s")
        self.seconds = seconds

    def __reduce__(self) -> Any:
        return self.__class__, (None, self.url, self.seconds)


class BodyTooLarge(Exception):  # noqa: N818 - a signal between layers, as urllib3's are
    """A body beyond `max_body_bytes`. Neither an `OSError` nor an urllib3 error, on
    purpose: urllib3 does not retry it, and requests lets it through unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response larger than {limit} bytes")
        self.limit = limit


class _Deadline:
    """Ends one attempt at its deadline, whichever read it is blocked in.

    A watchdog thread waits out the deadline, then shuts the connection's socket down, so
    the blocked read fails or ends at once: the socket the headers come on (`sock`), or the
    one the response kept when http.client let go of it (`held_sock`). While there is no
    socket to shut down yet it looks again every 50 ms: the TCP connect is bounded by the
    connect timeout, but a TLS handshake only by the read timeout of each of its reads (its
    socket is out of reach until it completes; the deadline cuts right after).
    `finish` stops it and says whether it fired; the lock makes sure it never touches the
    socket after that.
    """

    def __init__(self, conn: Any, seconds: float) -> None:
        self.seconds = seconds
        self._conn = conn
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._finished = False
        self._fired = False
        threading.Thread(target=self._watch, name="http-deadline", daemon=True).start()

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        while True:
            with self._lock:
                if self._finished:
                    return
                self._fired = True
                sock = getattr(self._conn, "sock", None) or getattr(self._conn, "held_sock", None)
                if sock is not None:
                    try:
                        # The socket's own shutdown: an SSLSocket's would drop its TLS state.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                        return
                    except OSError:
                        pass  # not connected yet, or handed over to TLS: look again
            if self._done.wait(_DEADLINE_POLL_SECONDS):
                return

    def passed(self) -> bool:
        return self._fired or time.monotonic() >= self._at

    def finish(self) -> bool:
        """Stop watching; whether the deadline cut the attempt."""
        with self._lock:
            self._finished = True
            self._done.set()
            return self._fired


def _read_body(
    response: HTTPResponse, limits: RequestLimits, deadline: _Deadline, pool: Any, url: str
) -> io.BytesIO:
    """The raw (still encoded) body, read in chunks: never more than the limit is held."""
    limit = limits.max_body_bytes
    declared = response.length_remaining  # Content-Length, when there is one
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    body = io.BytesIO()
    size = 0
    while chunk := response.read(READ_CHUNK_BYTES, decode_content=False):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        body.write(chunk)
        if deadline.passed():
            raise DeadlineExceeded(pool, url, deadline.seconds)
    body.seek(0)
    return body


def read_content(response: requests.Response, max_bytes: int) -> bytes:
    """The body as requests decodes it (gzip, deflate, ...), refusing more than `max_bytes`
    of it with `BodyTooLarge`: the pools limit what crosses the wire, this what it expands
    to. Read with `stream=True`; requests' own `content` has no limit."""
    pieces: list[bytes] = []
    size = 0
    for piece in response.iter_content(DECODE_CHUNK_BYTES):
        size += len(piece)
        if size > max_bytes:
            raise BodyTooLarge(max_bytes)
        pieces.append(piece)
    return b"".join(pieces)


