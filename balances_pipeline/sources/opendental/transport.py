"""How the Open Dental connector talks HTTP: retries, limits, TLS, failures described.

Retries, once per layer:

- Each request is retried inside urllib3 (`http.py`), one `Retry` and one budget
  (`max_retries`) per request: throttling, 5xx, refused or reset connections, timeouts,
  and bodies cut short of their Content-Length or last chunk, which urllib3 sees as
  broken reads because the session reads bodies inside its retry loop. This module has no
  retry loop of its own.
- When that budget runs out, `TransientSourceError` goes up to the orchestrator, which may
  run the whole extraction again later (the extract step's Dagster `RetryPolicy`).

Limits, the practice's own (`source.request_deadline_seconds`, `source.max_response_bytes`),
sent with every request whatever session the client was given:

- An attempt not complete `request_deadline_seconds` after it started (a server dripping
  its answer a byte at a time stays within every read timeout) is a transient fault,
  retried within the same budget as a read timeout: a slow answer is a fault on the way
  (congestion, an overloaded server or proxy), and asking again may well get a prompt one.
  A request so lasts at most `(max_retries + 1) * request_deadline_seconds` plus backoff.
- A body larger than `max_response_bytes`, on the wire or decompressed, fails the page with
  `ResponseTooLargeError`, not transient: asking again gets the same body. It is read in
  chunks and dropped at the limit, so the limit bounds the memory a page takes.

A *complete* 2xx answer whose body is not a JSON list (an object, an HTML page, JSON with
a syntax error, a body that will not decompress) fails the page with
`MalformedResponseError`, which is not transient: nothing is retried. The framing proves
the bytes arrived as the server sent them, so the body is the server's answer, and asking
again gets the same answer (a wrong `base_url`, a proxy's login page, an API change, or a
server bug on that page). Retrying would only delay the failure by the backoff and the
orchestrator's minutes while loading the source; skipping the page as "rejected" would
publish a practice with accounts silently missing. The sync fails and the published data
stays as it was, with the reason in `sync_runs`. The one exception is a body with no
framing (neither Content-Length nor chunked, delimited by the connection closing): its end
cannot be checked, so an unusable one may have been cut short and is reported as
transient.

TLS: the practice's `verify_tls` is sent with every request, so neither the session's
default nor `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` can turn it around (those may still name
the CA bundle that verifies, when `verify_tls` is true).

The `Authorization` value lives only in a redacting auth object: it never reaches a
message, a log record or a repr.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from requests.auth import AuthBase
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from balances_pipeline.sources.http import (
    DeadlineExceeded,
)
from balances_pipeline.sources.rows import Page

DEFAULT_PAGE_SIZE = 100
# The remote API caps pages at 100 rows whatever Limit says, so a 100-row page is never
# taken as the last one, even when a larger page_size was asked for.
REMOTE_MAX_PAGE_ROWS = 100

RowT = TypeVar("RowT")
PageParser = Callable[[str, list[Any], int, set[str]], Page[RowT]]


class _ODFHIRAuth(AuthBase):
    """Sets `Authorization: ODFHIR dev/cust`; its repr never shows the value."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request

    def __repr__(self) -> str:
        return "<ODFHIR authorization (redacted)>"


def _describe_failure(exc: requests.RequestException) -> str:
    # requests wraps urllib3's final error (MaxRetryError.reason) in a ConnectionError.
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, DeadlineExceeded):
        return f"response not complete after {reason.seconds:g} s (request_deadline_seconds)"
    # NewConnectionError subclasses ConnectTimeoutError (and requests calls it ConnectTimeout).
    if isinstance(reason, NewConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return "read timeout"
    if isinstance(reason, ProtocolError):
        if any(isinstance(arg, http.client.IncompleteRead) for arg in reason.args):
            return "response body cut short"
        return "connection broken"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


def _framed(response: requests.Response) -> bool:
    """Whether the body's end could be checked: a Content-Length, or chunked encoding."""
    encoding = response.headers.get("Transfer-Encoding", "").lower()
    return "Content-Length" in response.headers or "chunked" in encoding


def _server_clock(response: requests.Response, zone: Any) -> datetime | None:
    """The server's clock from its `Date` header (GMT), converted to server-local time with
    the practice's time zone, as a naive datetime (or None)."""
    header = response.headers.get("Date")
    if not header:
        return None
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).replace(tzinfo=None)


EXPLANATION_MAX_CHARS = 200
_EXPLANATION_READ_BYTES = 16 * 1024
_SECRET_PATTERN = re.compile(r"ODFHIR\s+\S+", re.IGNORECASE)
_PERMISSION_PATTERN = re.compile(r"permission (?:for|to) ([A-Za-z][A-Za-z ]{0,40}?)[.!]?$",
                                 re.IGNORECASE)


def explanation_text(body: bytes, secrets: tuple[str, ...]) -> str:
    """The explanation of an error answer on one line: a JSON string body decoded, any
    secret scrubbed, at most EXPLANATION_MAX_CHARS characters."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, str):
        text = decoded
    elif isinstance(decoded, dict):
        text = str(decoded.get("message") or decoded.get("Message") or "")
    elif decoded is not None:  # a list, a number: no explanation
        text = ""
    text = _SECRET_PATTERN.sub("ODFHIR [redacted]", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    if len(text) > EXPLANATION_MAX_CHARS:
        text = text[: EXPLANATION_MAX_CHARS - 3] + "..."
    return text


LEDGER_PATH_SHORTQUERY = "ShortQuery"
LEDGER_PATH_REST = "REST fallback"
REST_PATIENTS_ENDPOINT = "/patients/Simple"


