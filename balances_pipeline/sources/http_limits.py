"""Limits of one request: a total deadline per attempt and a body-size limit, and the
body reading that enforces them (used by `http.py`, inside urllib3's retry loop)."""

from __future__ import annotations

import heapq
import io
import itertools
import os
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

    When the deadline passes, the watchdog (`_Watchdog`) shuts the connection's socket
    down, so the blocked read fails or ends at once: the socket the headers come on
    (`sock`), or the one the response kept when http.client let go of it (`held_sock`).
    While there is no socket to shut down yet it looks again every 50 ms: the TCP connect
    is bounded by the connect timeout, but a TLS handshake only by the read timeout of each
    of its reads (its socket is out of reach until it completes; the deadline cuts right
    after). `finish` stops it and says whether it fired; the lock makes sure it never
    touches the socket after that.
    """

    def __init__(self, conn: Any, seconds: float) -> None:
        self.seconds = seconds
        self._conn = conn
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._finished = False
        self._fired = False
        WATCHDOG.watch(self, self._at)

    def cut(self) -> bool:
        """At the deadline (the watchdog's thread): shut the socket down. False: no socket
        to shut down yet, look again later."""
        with self._lock:
            if self._finished:
                return True
            self._fired = True
            sock = getattr(self._conn, "sock", None) or getattr(self._conn, "held_sock", None)
            if sock is None:
                return False
            try:
                # The socket's own shutdown: an SSLSocket's would drop its TLS state.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return True
            except OSError:
                return False  # not connected yet, or handed over to TLS: look again

    @property
    def finished(self) -> bool:
        return self._finished

    def passed(self) -> bool:
        return self._fired or time.monotonic() >= self._at

    def finish(self) -> bool:
        """Stop watching; whether the deadline cut the attempt."""
        with self._lock:
            self._finished = True
            return self._fired


class _Watchdog:
    """One thread of the process that waits out every attempt's deadline (a heap of
    them) and cuts those still running: starting a thread per attempt cost about 0.4 ms
    a request here, a tenth of a small page's whole request."""

    PRUNE_EVERY = 1024  # finished attempts are dropped from the heap this often

    def __init__(self) -> None:
        self._start_afresh()
        # A forked child has no watchdog thread, and its parent's attempts are not its own.
        os.register_at_fork(after_in_child=self._start_afresh)

    def _start_afresh(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline, at: float) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadline",
                                                daemon=True)
                self._thread.start()
            order = next(self._order)
            if order % self.PRUNE_EVERY == 0:
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (at, order, deadline))
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def pending(self) -> int:
        """Attempts still watched (not finished)."""
        with self._wake:
            return sum(1 for entry in self._heap if not entry[2].finished)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                now = time.monotonic()
                if self._heap[0][0] > now:
                    self._wake.wait(self._heap[0][0] - now)
                    continue
                _, order, deadline = heapq.heappop(self._heap)
                if not deadline.cut():
                    heapq.heappush(self._heap,
                                   (now + _DEADLINE_POLL_SECONDS, order, deadline))


WATCHDOG = _Watchdog()


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


