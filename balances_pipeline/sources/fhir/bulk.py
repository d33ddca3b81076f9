"""FHIR Bulk Data `$export` of a Group's Accounts, for large practices.

Kick-off `GET [base]/Group/<id>/$export?_type=Account,Patient[&_since=<instant>]` with
`Prefer: respond-async` → 202 and `Content-Location`; the status URL is polled honouring
`Retry-After` (seconds or an HTTP date; 2 s when absent), for at most
`bulk_poll_max_seconds` in all (then the export is cancelled with a DELETE and the read
fails); 200 gives the manifest. Each `output` file of type Account is streamed line by line
into pages of `BULK_PAGE_ROWS` accounts: a file is never held in memory (a line is at most
`max_response_bytes`). The Patient files are read first, keeping only each patient's name
(for accounts whose guarantor carries no `display`); an incremental export's Patient files
hold only changed patients, and a name not found there is the published one. Any `error`
entry of the manifest fails the read with the text of
its first OperationOutcome: accounts missing from an export would otherwise leave the
practice. The status URL and file URLs must be on the base URL's origin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import requests

from balances_pipeline.sources.errors import (
    MalformedResponseError,
    SchemaDriftError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.fhir.auth import BearerAuth
from balances_pipeline.sources.fhir.bundle import accounts_page
from balances_pipeline.sources.fhir.mapping import Names, human_name
from balances_pipeline.sources.fhir.transport import (
    FHIR_JSON,
    FhirTransport,
    date_header,
    explanation_text,
    http_date,
)
from balances_pipeline.sources.fhir.values import decode_json, format_instant, parse_instant
from balances_pipeline.sources.http import DECODE_CHUNK_BYTES
from balances_pipeline.sources.rows import Page, SourceBalanceRow

logger = logging.getLogger(__name__)

BULK_PAGE_ROWS = 1000
DEFAULT_POLL_SECONDS = 2.0
MIN_POLL_SECONDS = 0.5
NDJSON = "application/fhir+ndjson"
_ERROR_READ_BYTES = 64 * 1024


def _sleep(seconds: float) -> None:  # a seam for tests
    time.sleep(seconds)


@dataclass(frozen=True)
class Manifest:
    account_files: list[str]
    requires_token: bool
    transaction_time: datetime | None
    kickoff_clock: datetime | None
    patient_files: tuple[str, ...] = ()


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    moment = http_date(value)
    return None if moment is None else max(0.0, (moment - datetime.now(UTC)).total_seconds())


def run_export(transport: FhirTransport, changed_since: datetime | None) -> Manifest:
    """Kick off the export, poll it to completion and read its manifest."""
    source, practice = transport.source, transport.practice
    group = source.bulk_group_id
    params = {"_type": "Account,Patient"}
    if changed_since is not None:
        params["_since"] = format_instant(changed_since)
    response = transport.get(f"{source.base_url}/Group/{group}/$export", what="bulk kick-off",
                             params=params,
                             headers={"Prefer": "respond-async", "Accept": FHIR_JSON})
    with response:
        status, location = response.status_code, response.headers.get("Content-Location")
        kickoff_clock = date_header(response.headers)
    where = transport.where("bulk kick-off")
    if status != 202 or not location:
        raise MalformedResponseError(f"{where}: expected 202 with Content-Location, got HTTP "
                                     f"{status}")
    status_url = urljoin(f"{source.base_url}/", location)
    transport.require_same_origin(status_url, "bulk status URL")
    logger.info("practice %s: bulk export of Group %s started", practice.id, group)
    manifest = _poll(transport, status_url)
    return _read_manifest(transport, manifest, kickoff_clock)


def _poll(transport: FhirTransport, status_url: str) -> Any:
    limit = transport.source.bulk_poll_max_seconds
    deadline = time.monotonic() + limit
    polls = 0
    while True:
        polls += 1
        response = transport.get(status_url, what="bulk status", headers={"Accept":
                                                                          "application/json"})
        if response.status_code == 200:
            answer = transport.read(response, "bulk status", transport.stats_retries())
            body = transport.decode(answer, "bulk status")
            logger.info("practice %s: bulk export complete after %d polls",
                        transport.practice.id, polls)
            return body
        with response:
            status = response.status_code
            wait = retry_after_seconds(response.headers.get("Retry-After"))
        if status != 202:
            raise MalformedResponseError(f"{transport.where('bulk status')}: unexpected HTTP "
                                         f"{status}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _cancel(transport, status_url)
            raise SourceError(f"{transport.where('bulk export')}: not complete after "
                              f"{limit:g} s (bulk_poll_max_seconds)")
        wait = DEFAULT_POLL_SECONDS if wait is None else max(wait, MIN_POLL_SECONDS)
        _sleep(min(wait, remaining))


def _cancel(transport: FhirTransport, status_url: str) -> None:
    """Best effort: tell the server the export is no longer wanted."""
    try:
        auth = BearerAuth(transport.tokens) if transport.tokens else None
        transport.session.request("DELETE", status_url, auth=auth, timeout=transport.timeout,
                                  allow_redirects=False, verify=transport.practice.verify_tls,
                                  limits=transport.limits).close()
    except (requests.RequestException, SourceError):
        pass


def _read_manifest(transport: FhirTransport, body: Any, kickoff_clock: datetime | None
                   ) -> Manifest:
    where = transport.where("bulk manifest")
    if not isinstance(body, dict) or not isinstance(body.get("output", []), list) \
            or not isinstance(body.get("error", []), list):
        raise SchemaDriftError(f"{where}: not a Bulk Data manifest (output, error)")
    requires_token = body.get("requiresAccessToken") is not False
    errors = [entry for entry in body.get("error", []) if isinstance(entry, dict)]
    if errors:
        raise SourceError(f"{where}: the export reported {len(errors)} error file(s): "
                          f"{_error_text(transport, errors[0], requires_token)}")
    files: dict[str, list[str]] = {"Account": [], "Patient": []}
    skipped = 0
    for entry in body.get("output", []):
        if not isinstance(entry, dict) or entry.get("type") not in files:
            skipped += 1
            continue
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise SchemaDriftError(f"{where}: an output entry has no url")
        url = urljoin(f"{transport.source.base_url}/", url)
        transport.require_same_origin(url, "bulk file URL")
        files[entry["type"]].append(url)
    logger.info("practice %s: bulk manifest: %d Account and %d Patient files (%d other "
                "outputs ignored)", transport.practice.id, len(files["Account"]),
                len(files["Patient"]), skipped)
    return Manifest(files["Account"], requires_token,
                    parse_instant(body.get("transactionTime")), kickoff_clock,
                    tuple(files["Patient"]))


def _error_text(transport: FhirTransport, entry: dict[str, Any], requires_token: bool) -> str:
    url = entry.get("url")
    if not isinstance(url, str) or not url:
        return "(no error file)"
    url = urljoin(f"{transport.source.base_url}/", url)
    transport.require_same_origin(url, "bulk error file URL")
    response = transport.get(url, what="bulk error file", authorized=requires_token,
                             stream_body=True, headers={"Accept": NDJSON})
    with response:
        try:
            head = next(response.iter_content(_ERROR_READ_BYTES), b"")
        except requests.RequestException:
            head = b""
    first = next((line for line in head.splitlines() if line.strip()), b"")
    return explanation_text(first, transport.secrets()) or "(no diagnostics)"


def _lines(response: requests.Response, max_line: int, where: str) -> Iterator[bytes]:
    pending = b""
    for chunk in response.iter_content(DECODE_CHUNK_BYTES):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
        if len(pending) > max_line:
            raise MalformedResponseError(f"{where}: a line longer than {max_line} bytes "
                                         "(max_response_bytes)")
    if pending:
        yield pending


def _resources(transport: FhirTransport, url: str, what: str, requires_token: bool,
               resource_type: str) -> Iterator[dict[str, Any]]:
    """The resources of one NDJSON file, streamed line by line."""
    where = transport.where(what)
    response = transport.get(url, what=what, authorized=requires_token, stream_body=True,
                             headers={"Accept": NDJSON})
    line_number = 0
    with response:
        try:
            for line in _lines(response, transport.limits.max_body_bytes, where):
                line_number += 1
                if not line.strip():
                    continue
                try:
                    resource = decode_json(line)
                except (ValueError, UnicodeError):
                    raise MalformedResponseError(f"{where}: line {line_number} is not "
                                                 "JSON") from None
                if not isinstance(resource, dict) \
                        or resource.get("resourceType") != resource_type:
                    raise SchemaDriftError(f"{where}: line {line_number} is not a "
                                           f"{resource_type}")
                yield resource
        except requests.exceptions.ContentDecodingError:
            raise MalformedResponseError(f"{where}: body could not be decompressed") from None
        except requests.RequestException:
            raise TransientSourceError(f"{where}: cut short after {line_number} lines"
                                       ) from None


def patient_names(transport: FhirTransport, manifest: Manifest) -> Names:
    """Every exported patient's name ("Family, Given"), by reference key."""
    names: Names = {}
    for number, url in enumerate(manifest.patient_files, start=1):
        for resource in _resources(transport, url, f"bulk Patient file {number}",
                                   manifest.requires_token, "Patient"):
            if isinstance(resource.get("id"), str):
                names[("Patient", resource["id"])] = human_name(resource)
    return names


def file_pages(transport: FhirTransport, url: str, number: int, requires_token: bool,
               incremental: bool, names: Names | None = None
               ) -> Iterator[Page[SourceBalanceRow]]:
    """One NDJSON file of Accounts, streamed in pages of BULK_PAGE_ROWS accounts."""
    what = f"bulk file {number}"
    practice = transport.practice
    batch: list[dict[str, Any]] = []
    offset = 0

    def page() -> Page[SourceBalanceRow]:
        transport.session.stats.pages += 1
        return accounts_page(practice.id, batch, names or {}, offset,
                             currency=practice.currency, incremental=incremental,
                             where=f"{what} at account {offset}")

    for resource in _resources(transport, url, what, requires_token, "Account"):
        batch.append(resource)
        if len(batch) >= BULK_PAGE_ROWS:
            yield page()
            offset += len(batch)
            batch = []
    if batch:
        yield page()
        offset += len(batch)
    logger.info("practice %s: %s read: %d accounts", practice.id, what, offset)
