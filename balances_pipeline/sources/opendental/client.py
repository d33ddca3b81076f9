"""Open Dental API v1 connector: paged reads of `/reports/Aging` and `/patients`.

Transport faults (429, 5xx, resets, timeouts) are retried inside urllib3 (see `http.py`);
a body that arrives broken or is not a JSON list is re-requested here, a bounded number
of times, and counted as a retry too. The `Authorization` value lives only in a redacting
auth object: it never reaches a message, a log record or a repr.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar

import requests
from requests.auth import AuthBase
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from balances_pipeline.config import OpenDentalSource, Practice
from balances_pipeline.sources.credentials import opendental_authorization
from balances_pipeline.sources.errors import (
    AuthenticationError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.http import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CONNECT_TIMEOUT,
    CountingSession,
    RequestStats,
    build_session,
)
from balances_pipeline.sources.opendental.rows import (
    AGING_ENDPOINT,
    PATIENTS_ENDPOINT,
    changed_since_parameter,
    decode_json_list,
    ledger_page_parser,
    parse_aging_page,
    parse_patient_page,
)
from balances_pipeline.sources.rows import AgingReportRow, Page, PatientRow

logger = logging.getLogger(__name__)

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
    # NewConnectionError subclasses ConnectTimeoutError (and requests calls it ConnectTimeout).
    if isinstance(reason, NewConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return "read timeout"
    if isinstance(reason, ProtocolError):
        return "connection broken"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


def _server_clock(response: requests.Response) -> datetime | None:
    """The server's clock from its `Date` header, as a naive datetime (or None)."""
    header = response.headers.get("Date")
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


class OpenDentalClient:
    """Reads one practice's Open Dental API; `stats` counts requests, retries and pages."""

    def __init__(
        self,
        practice: Practice,
        *,
        authorization: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not isinstance(practice.source, OpenDentalSource):
            raise SourceError(f"practice {practice.id}: source is not opendental")
        self.practice = practice
        self.source: OpenDentalSource = practice.source
        self._auth = _ODFHIRAuth(authorization or opendental_authorization(practice))
        self._owns_session = session is None
        if session is None:
            session = build_session(
                max_retries=self.source.max_retries,
                verify_tls=practice.verify_tls,
                timeout_seconds=self.source.timeout_seconds,
            )
        self._session = session
        # A foreign session has no retry hook: only the attempts made from here are counted.
        self.stats: RequestStats = (
            session.stats if isinstance(session, CountingSession) else RequestStats()
        )
        read_timeout = self.source.timeout_seconds
        self._timeout = (min(DEFAULT_CONNECT_TIMEOUT, read_timeout), read_timeout)
        self._backoff_factor = getattr(session, "backoff_factor", DEFAULT_BACKOFF_FACTOR)
        if not practice.verify_tls and self.source.base_url.startswith("https:"):
            logger.warning("practice %s: TLS certificate verification is turned off", practice.id)

    def __repr__(self) -> str:
        return f"OpenDentalClient(practice={self.practice.id!r}, base_url={self.source.base_url!r})"

    def __enter__(self) -> OpenDentalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    # -- public reads -----------------------------------------------------------------

    def aging_report_pages(self, as_of: date) -> Iterator[Page[AgingReportRow]]:
        """Every guarantor of the aging report as of `as_of`, page by page."""
        params = {"DateAsOf": as_of.isoformat()}
        return self._pages(AGING_ENDPOINT, params, parse_aging_page)

    def patient_pages(self) -> Iterator[Page[PatientRow]]:
        """Every patient, page by page."""
        return self._pages(PATIENTS_ENDPOINT, {}, parse_patient_page)

    def ledger_pages(
        self, endpoint: str, changed_since: datetime | None = None
    ) -> Iterator[Page[Any]]:
        """Rows of one ledger endpoint (`/procedurelogs`, ...), all of them or only those
        changed at or after `changed_since` (the server's own clock, `DateTStamp` or
        `SecDateTEdit` by endpoint). Keys repeated across pages are left for the caller to
        find in its staging tables (`StagingDatabase.first_duplicate_key`)."""
        params = {}
        if changed_since is not None:
            stamp = changed_since.strftime("%Y-%m-%d %H:%M:%S")
            params[changed_since_parameter(endpoint)] = stamp
        return self._pages(
            endpoint, params, ledger_page_parser(endpoint), keys_across_pages=False
        )

    def check_connection(self) -> dict[str, Any]:
        """Read one page of `/patients`; counts only, no row content."""
        rows = self._get_rows(PATIENTS_ENDPOINT, self._query({}, 0), 0)
        self.stats.pages += 1
        page = parse_patient_page(self.practice.id, rows, 0, set())
        return {
            "practice_id": self.practice.id,
            "endpoint": PATIENTS_ENDPOINT,
            "rows": len(page.rows),
            "rejected": len(page.rejected),
            **self.stats.as_dict(),
        }

    # -- paging -----------------------------------------------------------------------

    def _query(self, params: dict[str, str], offset: int) -> dict[str, Any]:
        query: dict[str, Any] = {**params, "Offset": offset}
        if self.source.page_size != DEFAULT_PAGE_SIZE:
            query["Limit"] = self.source.page_size
        return query

    def _pages(
        self, endpoint: str, params: dict[str, str], parse: PageParser[RowT],
        keys_across_pages: bool = True,
    ) -> Iterator[Page[RowT]]:
        """Page through an endpoint. With `keys_across_pages`, a key seen on an earlier page
        raises DuplicateRowsError here; without, only repeats within a page are caught and
        the caller checks the rest (a million-key set would cost memory per row)."""
        last_page_below = min(self.source.page_size, REMOTE_MAX_PAGE_ROWS)
        shared: set[str] | None = set() if keys_across_pages else None
        offset = 0
        while True:
            rows = self._get_rows(endpoint, self._query(params, offset), offset)
            self.stats.pages += 1
            page = parse(self.practice.id, rows, offset, shared)
            logger.debug(
                "practice %s: %s offset %d: %d rows, %d rejected",
                self.practice.id,
                endpoint,
                offset,
                len(page.rows),
                len(page.rejected),
            )
            if rows:
                yield page
            if len(rows) < last_page_below:
                break
            offset += len(rows)
        logger.info(
            "practice %s: %s read: %d rows in %d pages (%d requests, %d retries so far)",
            self.practice.id,
            endpoint,
            offset + len(rows),
            self.stats.pages,
            self.stats.requests,
            self.stats.retries,
        )

    # -- one page, with body-level retries ----------------------------------------------

    def _where(self, endpoint: str, offset: int) -> str:
        return f"practice {self.practice.id}: {endpoint} offset {offset}"

    def _get_rows(self, endpoint: str, query: dict[str, Any], offset: int) -> list[Any]:
        body_retries = 0
        while True:
            rows, problem = self._attempt(endpoint, query, offset)
            if rows is not None:
                return rows
            if body_retries >= self.source.max_retries:
                raise TransientSourceError(
                    f"{self._where(endpoint, offset)}: {problem} after {body_retries} retries"
                )
            body_retries += 1
            # The session counts the next attempt itself; only the retry is counted here.
            self.stats.retries += 1
            logger.warning(
                "%s: %s, retry %d of %d",
                self._where(endpoint, offset),
                problem,
                body_retries,
                self.source.max_retries,
            )
            time.sleep(self._body_backoff(body_retries))

    def _body_backoff(self, retry_number: int) -> float:
        delay = self._backoff_factor * (2 ** (retry_number - 1))
        return min(DEFAULT_BACKOFF_MAX, delay + random.random() * self._backoff_factor)

    def _attempt(
        self, endpoint: str, query: dict[str, Any], offset: int
    ) -> tuple[list[Any] | None, str]:
        """(rows, "") or (None, why the body was unusable); raises on HTTP-level failures."""
        retries_before = self.stats.retries
        if not isinstance(self._session, CountingSession):
            self.stats.record_request()
        try:
            response = self._session.get(
                f"{self.source.base_url}{endpoint}",
                params=query,
                auth=self._auth,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            raise self._request_error(exc, endpoint, offset, retries_before) from None
        with response:
            self._check_status(response, endpoint, offset, retries_before)
            if self.server_clock is None:
                self.server_clock = _server_clock(response)
            try:
                body = response.content
            except requests.RequestException as exc:
                return None, f"response body broken ({type(exc).__name__})"
        rows = decode_json_list(body)
        if rows is None:
            return None, "response body is not a JSON list"
        return rows, ""

    # Set from the first answer's `Date` header: the server's clock, for incremental cursors.
    server_clock: datetime | None = None

    def _request_error(
        self, exc: requests.RequestException, endpoint: str, offset: int, retries_before: int
    ) -> SourceError:
        where = self._where(endpoint, offset)
        if isinstance(exc, requests.exceptions.SSLError):
            return SourceError(f"{where}: TLS handshake or certificate verification failed")
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            retries = self.stats.retries - retries_before
            return TransientSourceError(
                f"{where}: {_describe_failure(exc)} after {retries} retries"
            )
        return SourceError(f"{where}: {_describe_failure(exc)}")

    def _check_status(
        self, response: requests.Response, endpoint: str, offset: int, retries_before: int
    ) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403):
            logger.error("practice %s: HTTP %d from %s", self.practice.id, status, endpoint)
            raise AuthenticationError(f"authentication failed for practice {self.practice.id}")
        where = self._where(endpoint, offset)
        if status == 429 or status in (500, 502, 503, 504):
            retries = self.stats.retries - retries_before
            raise TransientSourceError(f"{where}: HTTP {status} after {retries} retries")
        if 300 <= status < 400:
            raise SourceError(f"{where}: HTTP {status} (redirects are not followed)")
        raise SourceError(f"{where}: HTTP {status}")
