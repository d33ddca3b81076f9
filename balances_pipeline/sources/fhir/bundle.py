"""`Account` searches: searchset Bundles page by page, following `link` `next`.

`GET [base]/Account?_count=N` (+ `status=active` on full reads where the practice says the
server supports it; incremental reads send `_lastUpdated=ge<instant>` and no status filter,
so accounts that became inactive are seen) (+ `_include=Account:guarantor` for the
guarantors' names). Only entries with `search.mode` `match` (or none) are accounts;
included Patient/RelatedPerson give names. A `next` URL seen before (a loop) or on another
origin than `base_url` fails the read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import requests

from balances_pipeline.sources.errors import SchemaDriftError, SourceError
from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.fhir.mapping import ENDPOINT, Names, human_name, map_account
from balances_pipeline.sources.fhir.transport import FHIR_JSON, FhirTransport, date_header
from balances_pipeline.sources.fhir.values import format_instant, parse_instant
from balances_pipeline.sources.rows import Page, RejectedRow, SourceBalanceRow

logger = logging.getLogger(__name__)

NAME_RESOURCES = ("Patient", "RelatedPerson")


def search_params(source: FhirSource, changed_since: datetime | None) -> dict[str, str]:
    params = {"_count": str(source.page_size)}
    if changed_since is None:
        if source.search_status_active:
            params["status"] = "active"
    else:
        params["_lastUpdated"] = "ge" + format_instant(changed_since)
    if source.include_guarantor:
        params["_include"] = "Account:guarantor"
    return params


def accounts_page(
    practice_id: str, accounts: list[dict[str, Any]], names: Names, offset: int, *,
    currency: str, incremental: bool, where: str, endpoint: str = ENDPOINT,
) -> Page[SourceBalanceRow]:
    """Map one page of Account resources (a searchset page, or lines of an NDJSON file)."""
    if len(accounts) > 1 and all("id" not in account for account in accounts):
        raise SchemaDriftError(f"practice {practice_id}: source schema changed: field 'id' "
                               f"missing from every Account of {where}")
    page: Page[SourceBalanceRow] = Page(endpoint=endpoint, offset=offset)
    for account in accounts:
        result = map_account(account, names, currency=currency, incremental=incremental,
                             endpoint=endpoint)
        if isinstance(result, RejectedRow):
            page.rejected.append(result)
        elif result is not None:
            page.rows.append(result)
    return page


def read_bundle(body: Any, where: str) -> tuple[list[dict[str, Any]], Names, str | None, int]:
    """(accounts, names of included Patient/RelatedPerson, the next URL, outcome entries)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else None
        said = f" (resourceType {kind})" if isinstance(kind, str) and kind.isalnum() else ""
        raise SchemaDriftError(f"{where}: response is not a FHIR Bundle{said}")
    if body.get("type") != "searchset":
        raise SchemaDriftError(f"{where}: Bundle.type is not searchset")
    entries = body.get("entry", [])
    links = body.get("link", [])
    if not isinstance(entries, list) or not isinstance(links, list):
        raise SchemaDriftError(f"{where}: Bundle.entry or Bundle.link is not a list")
    accounts: list[dict[str, Any]] = []
    names: Names = {}
    outcomes = 0
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        kind = resource.get("resourceType")
        if kind == "OperationOutcome" or mode == "outcome":
            outcomes += 1
        elif kind == "Account" and mode in (None, "match"):
            accounts.append(resource)
        elif kind in NAME_RESOURCES and isinstance(resource.get("id"), str):
            names[kind, resource["id"]] = human_name(resource)
    next_url = None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url:
                raise SchemaDriftError(f"{where}: Bundle.link next has no url")
            next_url = url
    return accounts, names, next_url, outcomes


def search_pages(
    transport: FhirTransport, changed_since: datetime | None,
    on_clock: Callable[[datetime], None],
) -> Iterator[Page[SourceBalanceRow]]:
    """Every Account of the search, page by page."""
    source, practice = transport.source, transport.practice
    url = f"{source.base_url}/Account"
    params: dict[str, str] | None = search_params(source, changed_since)
    seen = {requests.Request("GET", url, params=params).prepare().url}
    offset = 0
    number = 1
    while True:
        what = f"Account search page {number}"
        body, answer = transport.get_json(url, what=what, params=params,
                                          headers={"Accept": FHIR_JSON})
        if number == 1:
            meta = body.get("meta") if isinstance(body, dict) else None
            clock = date_header(answer.headers) or parse_instant(
                meta.get("lastUpdated") if isinstance(meta, dict) else None)
            if clock is not None:
                on_clock(clock)
        accounts, names, next_url, outcomes = read_bundle(body, transport.where(what))
        del body
        page = accounts_page(practice.id, accounts, names, offset,
                             currency=practice.currency, incremental=changed_since is not None,
                             where=what)
        transport.session.stats.pages += 1
        logger.debug("practice %s: %s: %d accounts, %d rows, %d rejected, %d outcomes",
                     practice.id, what, len(accounts), len(page.rows), len(page.rejected),
                     outcomes)
        yield page
        offset += len(accounts)
        if next_url is None:
            break
        next_url = urljoin(f"{source.base_url}/", next_url)
        transport.require_same_origin(next_url, f"{what} next link")
        if next_url in seen:
            raise SourceError(f"{transport.where(what)}: the next link repeats an earlier "
                              "page (a paging loop)")
        seen.add(next_url)
        url, params = next_url, None
        number += 1
    logger.info("practice %s: Account search read: %d accounts in %d pages (%d requests, "
                "%d retries so far)", practice.id, offset, number, transport.session.stats.requests,
                transport.session.stats.retries)
