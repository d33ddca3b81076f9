"""How the FHIR connector talks HTTP: requests with the practice's limits, the bearer
token (renewed once on a 401), status codes turned into `SourceError`s with the server's
`OperationOutcome` explanation, and the one-origin rule.

Retries are urllib3's only (`sources/http.py`): 429 (honouring `Retry-After`), 500, 502,
503, 504, resets, timeouts and bodies cut short, within `max_retries` per request. 4xx are
never retried; a 401 gets one new token (SMART Backend Services) and one more attempt.

Every URL the client sends a token to (next links, the bulk status URL, bulk files) must
be on the base URL's scheme, host and port: a token is never sent anywhere else.

NDJSON files are streamed (`stream_session`): a session on the same retry policy whose
bodies are not read ahead, so a file is never held in memory; a file cut short while it
streams is a `TransientSourceError` (the extraction is retried as a whole).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from balances_pipeline.config import Practice
from balances_pipeline.sources.errors import (
    AuthenticationError,
    EndpointMissingError,
    MalformedResponseError,
    ResponseTooLargeError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.fhir.auth import BearerAuth, TokenSource
from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.fhir.values import decode_json
from balances_pipeline.sources.http import (
    DEFAULT_CONNECT_TIMEOUT,
    BodyTooLarge,
    CountingSession,
    RequestLimits,
    read_content,
)
from balances_pipeline.sources.opendental.transport import _describe_failure, _framed

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
EXPLANATION_MAX_CHARS = 200
_EXPLANATION_READ_BYTES = 16 * 1024
_SCRUB_PATTERNS = (
    (re.compile(r"Bearer\s+\S+", re.IGNORECASE), "Bearer [redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted]"),
    (re.compile(r"-----BEGIN[^-]*-----.*?(-----END[^-]*-----|$)", re.DOTALL), "[redacted]"),
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CaseInsensitiveDict[str]
    body: bytes
    framed: bool


def explanation_text(body: bytes, secrets: Iterable[str]) -> str:
    """An error answer's explanation on one line: an `OperationOutcome`'s first
    `diagnostics` (else `details.text`), an OAuth `error: error_description`, a JSON
    string, or plain text; secrets scrubbed, at most EXPLANATION_MAX_CHARS."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        decoded: Any = decode_json(text)
    except ValueError:
        decoded = None
        if text.startswith("<"):  # an HTML error page says nothing worth a message
            text = ""
    if isinstance(decoded, str):
        text = decoded
    elif isinstance(decoded, dict):
        text = _outcome_text(decoded)
    elif decoded is not None:
        text = ""
    for pattern, replacement in _SCRUB_PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in secrets:
        for piece in (secret, *secret.splitlines()):
            if piece and len(piece.strip()) >= 4:
                text = text.replace(piece.strip(), "[redacted]")
    text = " ".join(text.split())
    if len(text) > EXPLANATION_MAX_CHARS:
        text = text[: EXPLANATION_MAX_CHARS - 3] + "..."
    return text


def _outcome_text(decoded: dict[str, Any]) -> str:
    if decoded.get("resourceType") == "OperationOutcome":
        issues = decoded.get("issue")
        issue = issues[0] if isinstance(issues, list) and issues else None
        if isinstance(issue, dict):
            if isinstance(issue.get("diagnostics"), str) and issue["diagnostics"].strip():
                return issue["diagnostics"]
            details = issue.get("details")
            if isinstance(details, dict) and isinstance(details.get("text"), str):
                return details["text"]
        return ""
    if isinstance(decoded.get("error"), str):  # OAuth 2.0 token endpoint errors
        description = decoded.get("error_description")
        return decoded["error"] + (f": {description}" if isinstance(description, str) else "")
    message = decoded.get("message")
    return message if isinstance(message, str) else ""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, f"{(parts.hostname or '').lower()}:{port}"


def same_origin(url: str, base_url: str) -> bool:
    try:
        return _origin(url) == _origin(base_url)
    except ValueError:  # a port that is not a number
        return False


def http_date(value: str | None) -> datetime | None:
    """An HTTP date (`Date`, `Retry-After`) as an aware UTC datetime, or None."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def date_header(headers: Any) -> datetime | None:
    """The `Date` header as naive UTC, or None."""
    moment = http_date(headers.get("Date") if headers is not None else None)
    return moment.replace(tzinfo=None) if moment else None


def streaming_session(session: CountingSession, base_url: str) -> CountingSession:
    """A session sharing `session`'s stats, timeouts, limits and retry policy whose bodies
    are streamed rather than read ahead (for NDJSON files)."""
    stream = CountingSession()
    stream.stats = session.stats
    stream.timeout = session.timeout
    stream.limits = session.limits
    stream.verify = session.verify
    retry = session.get_adapter(base_url).max_retries
    adapter = HTTPAdapter(max_retries=retry)
    stream.mount("http://", adapter)
    stream.mount("https://", adapter)
    return stream


class FhirTransport:
    """The requests of one client: `get` for FHIR endpoints (token, 401 renewal, status),
    `send_plain` for discovery and the token endpoint (no token)."""

    def __init__(self, practice: Practice, source: FhirSource, session: CountingSession,
                 tokens: TokenSource | None = None) -> None:
        self.practice = practice
        self.source = source
        self.session = session
        self.stream_session = streaming_session(session, source.base_url)
        self.tokens: TokenSource | None = tokens
        read_timeout = source.timeout_seconds
        self.timeout = (min(DEFAULT_CONNECT_TIMEOUT, read_timeout), read_timeout)
        self.limits = RequestLimits(deadline_seconds=source.request_deadline_seconds,
                                    max_body_bytes=source.max_response_bytes)
        self.extra_secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"FhirTransport(practice={self.practice.id!r})"

    def secrets(self) -> tuple[str, ...]:
        return (*(self.tokens.secrets() if self.tokens else ()), *self.extra_secrets)

    def where(self, what: str) -> str:
        return f"practice {self.practice.id}: {what}"

    def explain(self, answer: Answer | requests.Response) -> str:
        body = answer.body if isinstance(answer, Answer) else self._small_body(answer)
        return explanation_text(body[:_EXPLANATION_READ_BYTES], self.secrets())

    def _small_body(self, response: requests.Response) -> bytes:
        try:
            return read_content(response, _EXPLANATION_READ_BYTES)
        except (BodyTooLarge, requests.RequestException):
            return b""

    def require_same_origin(self, url: str, what: str) -> None:
        if not same_origin(url, self.source.base_url):
            raise SourceError(f"{self.where(what)}: URL on another scheme, host or port than "
                              "base_url refused (a token is never sent elsewhere)")

    # -- requests ----------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, *, stream_body: bool, auth: Any,
              **kwargs: Any) -> tuple[requests.Response, int]:
        session = self.stream_session if stream_body else self.session
        retries_before = self.stats_retries()
        try:
            response = session.request(
                method, url, auth=auth, timeout=self.timeout, allow_redirects=False,
                verify=self.practice.verify_tls, stream=True, limits=self.limits, **kwargs)
        except BodyTooLarge as exc:
            raise self._too_large(exc, what) from None
        except requests.RequestException as exc:
            raise self.request_error(exc, what, retries_before) from None
        return response, retries_before

    def stats_retries(self) -> int:
        return self.session.stats.retries

    def read(self, response: requests.Response, what: str, retries_before: int) -> Answer:
        with response:
            try:
                body = read_content(response, self.limits.max_body_bytes)
            except BodyTooLarge as exc:
                raise self._too_large(exc, what) from None
            except requests.RequestException as exc:
                raise self.request_error(exc, what, retries_before) from None
        return Answer(response.status_code, response.headers, body, _framed(response))

    def send_plain(self, method: str, url: str, *, what: str, **kwargs: Any) -> Answer:
        """One request without a token (discovery, the token endpoint); any status."""
        response, retries_before = self._send(method, url, what, stream_body=False,
                                              auth=None, **kwargs)
        return self.read(response, what, retries_before)

    def get(self, url: str, *, what: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None, authorized: bool = True,
            stream_body: bool = False) -> requests.Response:
        """A GET with the bearer token; a 401 gets one new token and one more attempt.
        Returns a 2xx response (its body unread); other statuses raise."""
        renewed = False
        while True:
            auth = BearerAuth(self.tokens) if authorized and self.tokens else None
            response, retries_before = self._send("GET", url, what, stream_body=stream_body,
                                                  auth=auth, params=params, headers=headers)
            if (response.status_code == 401 and auth is not None and not renewed
                    and self.tokens is not None and self.tokens.renewable):
                response.close()
                logger.info("practice %s: HTTP 401 from %s: renewing the access token",
                            self.practice.id, what)
                self.tokens.renew()
                renewed = True
                continue
            self.check_status(response, what, retries_before)
            return response

    def get_answer(self, url: str, *, what: str, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> Answer:
        response = self.get(url, what=what, params=params, headers=headers)
        return self.read(response, what, self.stats_retries())

    def get_json(self, url: str, *, what: str, params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> tuple[Any, Answer]:
        answer = self.get_answer(url, what=what, params=params, headers=headers)
        return self.decode(answer, what), answer

    def decode(self, answer: Answer, what: str) -> Any:
        try:
            return decode_json(answer.body)
        except (ValueError, UnicodeError):
            pass
        if not answer.framed:
            raise TransientSourceError(f"{self.where(what)}: response body is not JSON and "
                                       "has no length to check (it may have been cut short)")
        raise MalformedResponseError(f"{self.where(what)}: response body is not JSON")

    # -- failures ----------------------------------------------------------------------

    def _too_large(self, exc: BodyTooLarge, what: str) -> SourceError:
        return ResponseTooLargeError(f"{self.where(what)}: response larger than {exc.limit} "
                                     "bytes (max_response_bytes)")

    def request_error(self, exc: requests.RequestException, what: str,
                      retries_before: int) -> SourceError:
        where = self.where(what)
        if isinstance(exc, requests.exceptions.SSLError):
            return SourceError(f"{where}: TLS handshake or certificate verification failed")
        if isinstance(exc, requests.exceptions.ContentDecodingError):
            return MalformedResponseError(f"{where}: response body could not be decompressed")
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            retries = self.stats_retries() - retries_before
            failure = _describe_failure(exc)
            if failure.startswith("response not complete"):
                return TransientSourceError(f"{where}: {failure}; gave up after {retries} "
                                            "retries")
            return TransientSourceError(f"{where}: {failure} after {retries} retries")
        return SourceError(f"{where}: {_describe_failure(exc)}")

    def check_status(self, response: requests.Response, what: str,
                     retries_before: int) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        where = self.where(what)
        explanation = self.explain(response)
        response.close()
        if status in (401, 403):
            said = f" (HTTP {status}: {explanation})" if explanation else f" (HTTP {status})"
            logger.error("practice %s: HTTP %d from %s", self.practice.id, status, what)
            raise AuthenticationError(f"authentication failed for practice {self.practice.id}"
                                      f"{said}")
        said = f": {explanation}" if explanation else ""
        if status == 429 or status in (500, 502, 503, 504):
            retries = self.stats_retries() - retries_before
            raise TransientSourceError(f"{where}: HTTP {status} after {retries} retries{said}")
        if 300 <= status < 400:
            raise SourceError(f"{where}: HTTP {status} (redirects are not followed)")
        if status in (404, 405, 501):
            raise EndpointMissingError(f"{where}: HTTP {status}{said}", status)
        raise SourceError(f"{where}: HTTP {status}{said}")
