"""The ledger of ledger mode, read as the real API allows: through `PUT /queries/ShortQuery`
when the key has the Queries permission, else the REST fallback (`/patients/Simple`,
`/procedurelogs` incremental, `/claimprocs` and `/paysplits` in full, `/adjustments` per
patient). A mixin of `OpenDentalClient`: it pages through the client's own requests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from balances_pipeline.sources.errors import (
    EndpointMissingError,
    MalformedResponseError,
    PermissionMissingError,
)
from balances_pipeline.sources.opendental.page_sql import REST_PAGE_SQL, SHORT_QUERY_PAGE_SQL
from balances_pipeline.sources.opendental.rows import (
    ADJUSTMENTS_ENDPOINT,
    CLAIMPROCS_ENDPOINT,
    LEDGER_RELATIONS,
    PATIENTS_ENDPOINT,
    PAYSPLITS_ENDPOINT,
    PROCEDURES_ENDPOINT,
    ledger_page_parser,
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
from balances_pipeline.sources.opendental.transport import (
    LEDGER_PATH_REST,
    LEDGER_PATH_SHORTQUERY,
    REMOTE_MAX_PAGE_ROWS,
    REST_PATIENTS_ENDPOINT,
)
from balances_pipeline.sources.opendental.values import (
    parse_integer,
    parse_timestamp,
)
from balances_pipeline.sources.rows import JsonPage, Page

logger = logging.getLogger(__name__)


class LedgerReads:
    """The ledger reads of `OpenDentalClient` (see the module docstring)."""

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
        except EndpointMissingError as missing:
            # An API version without ShortQuery (or a proxy refusing PUT): the REST
            # endpoints still read the ledger.
            logger.info("practice %s: %s not served (HTTP %d): reading the ledger through "
                        "REST", self.practice.id, SHORT_QUERY_ENDPOINT, missing.status)
            self.ledger_path = LEDGER_PATH_REST
            self.missing_endpoint = f"HTTP {missing.status}"
            self._clock_pending = True
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
        return self._decode_rows(*self._short_query_body(sql, offset), SHORT_QUERY_ENDPOINT,
                                 offset)

    def _short_query_body(self, sql: str, offset: int) -> tuple[bytes, bool]:
        """Every SQL text sent goes through here: (body, framed) of one page."""
        return self._request_body("PUT", SHORT_QUERY_ENDPOINT, {"Offset": offset}, offset,
                                  body=json.dumps({"SqlCommand": sql}))

    def _short_query_pages(
        self, endpoint: str, since: datetime | None
    ) -> Iterator[Page[Any] | JsonPage]:
        """One ledger table's pages: `JsonPage`s validated set-based where DuckDB reads
        them exactly (`page_sql.py`), else read row by row after `to_rest_row`."""
        sql = ledger_sql(endpoint, since, self.source.clinic_num)
        parse = ledger_page_parser(endpoint)
        offset = 0
        while True:
            body = self._short_query_body(sql, offset)
            self.stats.pages += 1
            page, count = self._page(
                endpoint, *body, offset, SHORT_QUERY_PAGE_SQL[endpoint],
                lambda rows, at=offset: parse(
                    self.practice.id, [to_rest_row(endpoint, row) for row in rows], at, None),
                requested=SHORT_QUERY_ENDPOINT,
            )
            if count:
                yield page
            if count < SHORT_QUERY_PAGE_ROWS:
                break
            offset += count

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

            if self.source.clinic_num is not None:  # rows kept by scope: row by row
                return self._pages(endpoint, params, filtered, keys_across_pages=False)
            return self._pages(endpoint, params, parse, keys_across_pages=False,
                               set_based=REST_PAGE_SQL[endpoint])

        def procedures() -> Iterator[Page[Any]]:
            since = changed_since.get(PROCEDURES_ENDPOINT)
            params = {"DateTStamp": format_timestamp(since)} if since else {}
            yield from in_scope(PROCEDURES_ENDPOINT, params)

        def adjustments() -> Iterator[Page[Any]]:
            for pat_num in sorted(scope):
                yield from self._pages(
                    ADJUSTMENTS_ENDPOINT, {"PatNum": str(pat_num)},
                    ledger_page_parser(ADJUSTMENTS_ENDPOINT), keys_across_pages=False,
                    set_based=REST_PAGE_SQL[ADJUSTMENTS_ENDPOINT],
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
            "missing_endpoint": self.missing_endpoint,
            "full_requests": f"about {1 + pages(patients) + patients + 3} plus the pages of "
                             "procedurelogs, claimprocs and paysplits (whole tables)",
            "full_detail": f"{pages(patients)} pages of /patients/Simple ({patients} patients), "
                           f"{patients} requests of /adjustments (one per patient)",
            "incremental_requests": f"about {1 + pages(patients) + patients + 2} plus the "
                                    "pages of claimprocs and paysplits (whole tables)",
            "incremental_detail": "only /procedurelogs reads changes; the REST API has no "
                                  "changed-since filter on the others",
        }



def _pages_for(rows: int) -> int:
    """Requests to page `rows` rows at 100 a page (a last, shorter page always ends it)."""
    return rows // REMOTE_MAX_PAGE_ROWS + 1


PATIENT_LEDGER_FIELDS = ("PatNum", "Guarantor", "LName", "FName", "PatStatus", "DateTStamp")


def _pat_num(row: Any) -> int | None:
    if not isinstance(row, dict):
        return None
    number, _ = parse_integer(row.get("PatNum"))
    return number
