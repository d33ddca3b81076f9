"""Open Dental API v1 connector: paged reads of `/reports/Aging`, `/patients` and the ledger.

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
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
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
    MalformedResponseError,
    PermissionMissingError,
    ResponseTooLargeError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.http import (
    DEFAULT_CONNECT_TIMEOUT,
    BodyTooLarge,
    CountingSession,
    DeadlineExceeded,
    RequestLimits,
    RequestStats,
    build_session,
    read_content,
)
from balances_pipeline.sources.opendental.rows import (
    ADJUSTMENTS_ENDPOINT,
    AGING_ENDPOINT,
    CLAIMPROCS_ENDPOINT,
    LEDGER_RELATIONS,
    PATIENTS_ENDPOINT,
    PAYSPLITS_ENDPOINT,
    PROCEDURES_ENDPOINT,
    ledger_page_parser,
    parse_aging_page,
    parse_patient_page,
)
from balances_pipeline.sources.opendental.shortquery import (
    SHORT_QUERY_ENDPOINT,
    SHORT_QUERY_PAGE_ROWS,
    clock_sql,
    count_sql,
    format_timestamp,
    ledger_sql,
    to_rest_row,
)
from balances_pipeline.sources.opendental.values import (
    decode_json_list,
    parse_integer,
    parse_timestamp,
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


class OpenDentalClient:
    """Reads one practice's Open Dental API; `stats` counts requests, retries and pages."""

    def __init__(
        self,
        practice: Practice,
        *,
        authorization: str | None = None,
        session: CountingSession | None = None,
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
                request_deadline_seconds=self.source.request_deadline_seconds,
                max_response_bytes=self.source.max_response_bytes,
            )
        self._session = session
        self.stats: RequestStats = session.stats
        read_timeout = self.source.timeout_seconds
        self._timeout = (min(DEFAULT_CONNECT_TIMEOUT, read_timeout), read_timeout)
        self._limits = RequestLimits(
            deadline_seconds=self.source.request_deadline_seconds,
            max_body_bytes=self.source.max_response_bytes,
        )
        # From the first answer's `Date` header: the server's clock, for incremental cursors.
        self.server_clock: datetime | None = None
        # Ledger mode: which path (ShortQuery or the REST fallback), and the permission
        # whose absence made it fall back.
        self.ledger_path: str | None = None
        self.missing_permission: str | None = None
        self._clock_pending = False  # REST fallback: the clock from serverDateTime
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
        if self.source.clinic_num is not None:
            params["ClinicNum"] = str(self.source.clinic_num)
        return self._pages(AGING_ENDPOINT, params, parse_aging_page)

    def patient_pages(self) -> Iterator[Page[PatientRow]]:
        """Every patient, page by page."""
        return self._pages(PATIENTS_ENDPOINT, {}, parse_patient_page)

    def choose_ledger_path(self) -> str:
        """ShortQuery when the key has the Queries permission, else the REST fallback.

        Asks `SELECT NOW()` once: its answer is the server's clock when the read began (the
        next cursors); a 401 naming the missing permission means the REST fallback.
        """
        if self.ledger_path is not None:
            return self.ledger_path
        try:
            rows = self._short_query_rows(clock_sql(), 0)
        except PermissionMissingError as missing:
            logger.info("practice %s: no %s permission: reading the ledger through REST",
                        self.practice.id, missing.permission)
            self.ledger_path = LEDGER_PATH_REST
            self.missing_permission = missing.permission
            self._clock_pending = True  # from the first /patients/Simple answer instead
            return self.ledger_path
        first = rows[0] if rows and isinstance(rows[0], dict) else {}
        clock = parse_timestamp(next(iter(first.values()), None)) if first else None
        if clock is None:
            raise MalformedResponseError(
                f"practice {self.practice.id}: {SHORT_QUERY_ENDPOINT}: SELECT NOW() "
                "answered no timestamp"
            )
        self.server_clock = clock
        self.ledger_path = LEDGER_PATH_SHORTQUERY
        return self.ledger_path

    def ledger_sources(self, changed_since: dict[str, datetime]) -> list[Iterator[Page[Any]]]:
        """The ledger's page iterators, one per endpoint in `LEDGER_RELATIONS` order: all
        rows, or those changed at or after `changed_since[endpoint]` where given. Keys
        repeated across pages are left to staging's duplicate-key check."""
        if self.choose_ledger_path() == LEDGER_PATH_SHORTQUERY:
            return [self._short_query_pages(endpoint, changed_since.get(endpoint))
                    for endpoint in LEDGER_RELATIONS]
        return self._rest_ledger_sources(changed_since)

    # -- ledger through ShortQuery ---------------------------------------------------------

    def _short_query_rows(self, sql: str, offset: int) -> list[Any]:
        body = json.dumps({"SqlCommand": sql})
        return self._request_rows("PUT", SHORT_QUERY_ENDPOINT, {"Offset": offset}, offset,
                                  body=body)

    def _short_query_pages(self, endpoint: str, since: datetime | None) -> Iterator[Page[Any]]:
        sql = ledger_sql(endpoint, since, self.source.clinic_num)
        parse = ledger_page_parser(endpoint)
        offset = 0
        while True:
            rows = self._short_query_rows(sql, offset)
            self.stats.pages += 1
            page = parse(self.practice.id, [to_rest_row(endpoint, row) for row in rows],
                         offset, None)
            if rows:
                yield page
            if len(rows) < SHORT_QUERY_PAGE_ROWS:
                break
            offset += len(rows)

    # -- ledger through the REST fallback --------------------------------------------------

    def _rest_ledger_sources(
        self, changed_since: dict[str, datetime]
    ) -> list[Iterator[Page[Any]]]:
        """`/patients/Simple` (every patient: the adjustments are read per patient and a
        clinic is its guarantors' families), `/procedurelogs` by `DateTStamp`,
        `/claimprocs` and `/paysplits` in full (no changed-since filter exists), and
        `/adjustments?PatNum=` once per patient in scope."""
        scope: set[int] = set()

        def patients() -> Iterator[Page[Any]]:
            kept = self._read_patients_in_scope()
            scope.update(kept_row["PatNum"] for kept_row in kept)
            parse = ledger_page_parser(PATIENTS_ENDPOINT)
            for start in range(0, len(kept), REMOTE_MAX_PAGE_ROWS):
                yield parse(self.practice.id, kept[start:start + REMOTE_MAX_PAGE_ROWS],
                            start, None)

        def in_scope(endpoint: str, params: dict[str, str]) -> Iterator[Page[Any]]:
            parse = ledger_page_parser(endpoint)

            def filtered(practice_id: str, rows: list[Any], offset: int, seen: Any) -> Any:
                if self.source.clinic_num is not None:
                    rows = [row for row in rows if _pat_num(row) in scope]
                return parse(practice_id, rows, offset, seen)

            return self._pages(endpoint, params, filtered, keys_across_pages=False)

        def procedures() -> Iterator[Page[Any]]:
            since = changed_since.get(PROCEDURES_ENDPOINT)
            params = {"DateTStamp": format_timestamp(since)} if since else {}
            yield from in_scope(PROCEDURES_ENDPOINT, params)

        def adjustments() -> Iterator[Page[Any]]:
            for pat_num in sorted(scope):
                yield from self._pages(
                    ADJUSTMENTS_ENDPOINT, {"PatNum": str(pat_num)},
                    ledger_page_parser(ADJUSTMENTS_ENDPOINT), keys_across_pages=False,
                )

        return [patients(), procedures(), in_scope(CLAIMPROCS_ENDPOINT, {}),
                in_scope(PAYSPLITS_ENDPOINT, {}), adjustments()]

    def _read_patients_in_scope(self) -> list[dict[str, Any]]:
        """Every patient of `/patients/Simple` (only the fields the pipeline reads; names
        only of guarantors), limited to the clinic's guarantors' families with a
        `clinic_num`. Sets the server clock from the first row's `serverDateTime`."""
        kept: list[dict[str, Any]] = []
        clinic_of: dict[int, int | None] = {}
        offset = 0
        while True:
            rows = self._get_rows(REST_PATIENTS_ENDPOINT, self._query({}, offset), offset)
            self.stats.pages += 1
            for row in rows:
                if not isinstance(row, dict):
                    kept.append(row)
                    continue
                if offset == 0 and "serverDateTime" in row and self._clock_pending:
                    clock = parse_timestamp(row["serverDateTime"])
                    if clock is not None:
                        self.server_clock = clock
                        self._clock_pending = False
                pat_num = _pat_num(row)
                guarantor, _ = parse_integer(row.get("Guarantor"))
                minimal = {name: row[name] for name in PATIENT_LEDGER_FIELDS if name in row}
                if pat_num is not None and guarantor is not None and pat_num != guarantor:
                    minimal["LName"] = minimal["FName"] = ""
                kept.append(minimal)
                if pat_num is not None:
                    clinic_of[pat_num] = parse_integer(row.get("ClinicNum"))[0]
            if len(rows) < min(self.source.page_size, REMOTE_MAX_PAGE_ROWS):
                break
            offset += len(rows)
        clinic = self.source.clinic_num
        if clinic is None:
            return kept
        return [row for row in kept if isinstance(row, dict)
                and clinic_of.get(parse_integer(row.get("Guarantor"))[0] or -1) == clinic]

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

    def ledger_cost_estimate(self) -> dict[str, Any]:
        """The ledger path and the requests a sync makes, estimated from row counts (counts
        only: `SELECT COUNT(*)` through ShortQuery, or paging `/patients/Simple`)."""
        path = self.choose_ledger_path()
        pages = _pages_for  # 100 rows a page: ShortQuery's and the Remote API's cap
        aging = 1  # and at least one page of /reports/Aging on full refreshes
        if path == LEDGER_PATH_SHORTQUERY:
            counts = {}
            for endpoint in LEDGER_RELATIONS:
                rows = self._short_query_rows(count_sql(endpoint, self.source.clinic_num), 0)
                first = rows[0] if rows and isinstance(rows[0], dict) else {}
                counts[endpoint] = parse_integer(first.get("n"))[0] or 0
            full = 1 + sum(pages(n) for n in counts.values())
            return {
                "path": path, "missing_permission": None,
                "full_requests": full + aging,
                "full_detail": "SELECT NOW(), then "
                + ", ".join(f"{pages(n)} pages of {endpoint.strip('/')} ({n} rows)"
                            for endpoint, n in counts.items())
                + ", and the aging report to reconcile",
                "incremental_requests": 1 + len(counts),
                "incremental_detail": "SELECT NOW(), then about one page per table",
            }
        patients = len(self._read_patients_in_scope())
        return {
            "path": path, "missing_permission": self.missing_permission,
            "full_requests": f"about {1 + pages(patients) + patients + 3} plus the pages of "
                             "procedurelogs, claimprocs and paysplits (whole tables)",
            "full_detail": f"{pages(patients)} pages of /patients/Simple ({patients} patients), "
                           f"{patients} requests of /adjustments (one per patient)",
            "incremental_requests": f"about {1 + pages(patients) + patients + 2} plus the "
                                    "pages of claimprocs and paysplits (whole tables)",
            "incremental_detail": "only /procedurelogs reads changes; the REST API has no "
                                  "changed-since filter on the others",
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

    # -- one page ----------------------------------------------------------------------

    def _where(self, endpoint: str, offset: int) -> str:
        return f"practice {self.practice.id}: {endpoint} offset {offset}"

    def _get_rows(self, endpoint: str, query: dict[str, Any], offset: int) -> list[Any]:
        return self._request_rows("GET", endpoint, query, offset)

    def _request_rows(
        self, method: str, endpoint: str, query: dict[str, Any], offset: int,
        body: str | None = None,
    ) -> list[Any]:
        """One page's rows. The session retries the request; raises `SourceError`s."""
        retries_before = self.stats.retries
        try:
            response = self._session.request(
                method,
                f"{self.source.base_url}{endpoint}",
                params=query,
                data=body.encode("utf-8") if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                auth=self._auth,
                timeout=self._timeout,
                allow_redirects=False,
                verify=self.practice.verify_tls,  # never the environment's (module doc)
                stream=True,  # the body is decompressed by `read_content`, within the limit
                limits=self._limits,
            )
        except BodyTooLarge as exc:
            raise self._too_large(exc, endpoint, offset) from None
        except requests.RequestException as exc:
            raise self._request_error(exc, endpoint, offset, retries_before) from None
        with response:
            self._check_status(response, endpoint, offset, retries_before)
            if self.server_clock is None:
                self.server_clock = _server_clock(response, self.practice.zone)
            try:
                body = read_content(response, self._limits.max_body_bytes)
            except BodyTooLarge as exc:
                raise self._too_large(exc, endpoint, offset) from None
            except requests.RequestException as exc:
                raise self._request_error(exc, endpoint, offset, retries_before) from None
        rows = decode_json_list(body)
        del body
        if rows is not None:
            return rows
        where = self._where(endpoint, offset)
        if not _framed(response):
            raise TransientSourceError(
                f"{where}: response body is not a JSON list and has no length to check "
                "(it may have been cut short)"
            )
        raise MalformedResponseError(f"{where}: response body is not a JSON list")

    def _too_large(self, exc: BodyTooLarge, endpoint: str, offset: int) -> SourceError:
        return ResponseTooLargeError(
            f"{self._where(endpoint, offset)}: response larger than {exc.limit} bytes "
            "(max_response_bytes)"
        )

    def _request_error(
        self, exc: requests.RequestException, endpoint: str, offset: int, retries_before: int
    ) -> SourceError:
        where = self._where(endpoint, offset)
        if isinstance(exc, requests.exceptions.SSLError):
            return SourceError(f"{where}: TLS handshake or certificate verification failed")
        if isinstance(exc, requests.exceptions.ContentDecodingError):
            # Read in full, so not cut short: what the server encoded will not decompress.
            return MalformedResponseError(f"{where}: response body could not be decompressed")
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            retries = self.stats.retries - retries_before
            failure = _describe_failure(exc)
            if failure.startswith("response not complete"):  # it has its own "after"
                return TransientSourceError(f"{where}: {failure}; gave up after {retries} retries")
            return TransientSourceError(f"{where}: {failure} after {retries} retries")
        return SourceError(f"{where}: {_describe_failure(exc)}")

    def _explanation(self, response: requests.Response) -> str:
        try:
            body = read_content(response, min(self._limits.max_body_bytes,
                                              _EXPLANATION_READ_BYTES))
        except (BodyTooLarge, requests.RequestException):
            return ""
        secrets = (self._auth._value, *self._auth._value.removeprefix("ODFHIR ").split("/"))
        return explanation_text(body, secrets)

    def _check_status(
        self, response: requests.Response, endpoint: str, offset: int, retries_before: int
    ) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        where = self._where(endpoint, offset)
        if status in (401, 403):
            explanation = self._explanation(response)
            said = f" (HTTP {status}: {explanation})" if explanation else f" (HTTP {status})"
            permission = _PERMISSION_PATTERN.search(explanation)
            if permission:
                name = permission.group(1).strip()
                logger.info("practice %s: HTTP %d from %s: no %s permission",
                            self.practice.id, status, endpoint, name)
                raise PermissionMissingError(
                    f"practice {self.practice.id}: the customer key lacks the {name} "
                    f"permission for {endpoint}{said}", name,
                )
            logger.error("practice %s: HTTP %d from %s", self.practice.id, status, endpoint)
            raise AuthenticationError(f"authentication failed for practice {self.practice.id}"
                                      f"{said}")
        if status == 429 or status in (500, 502, 503, 504):
            retries = self.stats.retries - retries_before
            raise TransientSourceError(f"{where}: HTTP {status} after {retries} retries")
        if 300 <= status < 400:
            raise SourceError(f"{where}: HTTP {status} (redirects are not followed)")
        explanation = self._explanation(response)
        raise SourceError(f"{where}: HTTP {status}" + (f": {explanation}" if explanation else ""))


def _pages_for(rows: int) -> int:
    """Requests to page `rows` rows at 100 a page (a last, shorter page always ends it)."""
    return rows // REMOTE_MAX_PAGE_ROWS + 1


PATIENT_LEDGER_FIELDS = ("PatNum", "Guarantor", "LName", "FName", "PatStatus", "DateTStamp")


def _pat_num(row: Any) -> int | None:
    if not isinstance(row, dict):
        return None
    number, _ = parse_integer(row.get("PatNum"))
    return number
