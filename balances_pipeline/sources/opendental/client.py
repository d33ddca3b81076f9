"""Open Dental API v1 connector: paged reads of `/reports/Aging`, `/patients` and the
ledger (`ledger.py`: through ShortQuery or the REST fallback). How requests are retried and
bounded, and why, is in `transport.py`.

The `Authorization` value lives only in a redacting auth object: it never reaches a
message, a log record or a repr.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import date, datetime
from types import TracebackType
from typing import Any

import requests

from balances_pipeline.config import OpenDentalSource, Practice
from balances_pipeline.sources.credentials import opendental_authorization
from balances_pipeline.sources.errors import (
    AuthenticationError,
    EndpointMissingError,
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
    RequestLimits,
    RequestStats,
    read_content,
    source_session,
)
from balances_pipeline.sources.opendental.ledger import LedgerReads
from balances_pipeline.sources.opendental.page_sql import REST_PAGE_SQL, scan_json_list
from balances_pipeline.sources.opendental.rows import (
    AGING_ENDPOINT,
    PATIENTS_ENDPOINT,
    parse_aging_page,
    parse_patient_page,
)
from balances_pipeline.sources.opendental.transport import (
    _EXPLANATION_READ_BYTES,
    _PERMISSION_PATTERN,
    DEFAULT_PAGE_SIZE,
    REMOTE_MAX_PAGE_ROWS,
    PageParser,
    RowT,
    _describe_failure,
    _framed,
    _ODFHIRAuth,
    _server_clock,
    explanation_text,
)
from balances_pipeline.sources.opendental.values import (
    decode_json_list,
)
from balances_pipeline.sources.rows import (
    AgingReportRow,
    JsonPage,
    JsonPageSql,
    Page,
    PatientRow,
)

logger = logging.getLogger(__name__)


class OpenDentalClient(LedgerReads):
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
            session = source_session(self.source, practice.verify_tls)
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
        self.missing_endpoint: str | None = None  # ShortQuery not served: the HTTP answer
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
        return self._pages(AGING_ENDPOINT, params, parse_aging_page,
                           set_based=REST_PAGE_SQL[AGING_ENDPOINT])

    def patient_pages(self) -> Iterator[Page[PatientRow]]:
        """Every patient, page by page."""
        return self._pages(PATIENTS_ENDPOINT, {}, parse_patient_page,
                           set_based=REST_PAGE_SQL[PATIENTS_ENDPOINT])

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
        keys_across_pages: bool = True, set_based: JsonPageSql | None = None,
    ) -> Iterator[Page[RowT] | JsonPage]:
        """Page through an endpoint. With `keys_across_pages`, a key seen on an earlier page
        raises DuplicateRowsError here; without, only repeats within a page are caught and
        the caller checks the rest (a million-key set would cost memory per row). With
        `set_based`, pages DuckDB reads exactly come as `JsonPage`s (staging checks keys
        across them)."""
        last_page_below = min(self.source.page_size, REMOTE_MAX_PAGE_ROWS)
        shared: set[str] | None = set() if keys_across_pages else None
        offset = 0
        while True:
            body = self._request_body("GET", endpoint, self._query(params, offset), offset)
            self.stats.pages += 1
            page, count = self._page(
                endpoint, *body, offset, set_based,
                lambda rows, at=offset: parse(self.practice.id, rows, at, shared),
            )
            logger.debug("practice %s: %s offset %d: %d rows", self.practice.id, endpoint,
                         offset, count)
            if count:
                yield page
            if count < last_page_below:
                break
            offset += count
        logger.info(
            "practice %s: %s read: %d rows in %d pages (%d requests, %d retries so far)",
            self.practice.id,
            endpoint,
            offset + count,
            self.stats.pages,
            self.stats.requests,
            self.stats.retries,
        )

    def _page(
        self, endpoint: str, body: bytes, framed: bool, offset: int,
        set_based: JsonPageSql | None, parse: Callable[[list[Any]], Page[Any]],
        requested: str | None = None,
    ) -> tuple[Page[Any] | JsonPage, int]:
        """(page, rows the server sent): a `JsonPage` of `endpoint` when DuckDB reads the
        body exactly (`page_sql.scan_json_list`), else the page read row by row; either
        way `parse` is the row-by-row reading. `requested`: the endpoint asked, if not
        `endpoint`."""

        def exact() -> Page[Any]:
            return parse(self._decode_rows(body, framed, requested or endpoint, offset))

        count = scan_json_list(body) if set_based is not None else None
        if count is None or set_based is None:
            rows = self._decode_rows(body, framed, requested or endpoint, offset)
            return parse(rows), len(rows)
        return JsonPage(endpoint, offset, count, body, set_based, exact), count

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
        return self._decode_rows(*self._request_body(method, endpoint, query, offset, body),
                                 endpoint, offset)

    def _request_body(
        self, method: str, endpoint: str, query: dict[str, Any], offset: int,
        body: str | None = None,
    ) -> tuple[bytes, bool]:
        """One page's body as received, and whether it was framed (a length the server
        stated, so not cut short). The session retries the request; raises
        `SourceError`s."""
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
        return body, _framed(response)

    def _decode_rows(self, body: bytes, framed: bool, endpoint: str, offset: int
                     ) -> list[Any]:
        rows = decode_json_list(body)
        if rows is not None:
            return rows
        where = self._where(endpoint, offset)
        if not framed:
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
        message = f"{where}: HTTP {status}" + (f": {explanation}" if explanation else "")
        if status in (404, 405, 501):
            raise EndpointMissingError(message, status)
        raise SourceError(message)


