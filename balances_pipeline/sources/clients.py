"""The one shape every source has, and opening a practice's source client by its type.

A source is a package under `sources/` with its config model (`<type>/config.py`, listed in
`config.py`'s `Source` union) and a client class (listed in `_CLIENTS` below). What the
pipeline asks of a client depends on what its config says it `produces`
(`source_config.py`):

- every client is a context manager with `stats` (requests, retries, pages: the figures
  of `sync_runs`), `server_clock` (the source's clock when the read began, for the next
  cursor, or None) and `check_connection()` (counts for `balances source check`);
- `account_balances` sources (FHIR, file drops, and the next one) implement
  `AccountBalanceClient`: page iterators of `SourceBalanceRow`s and `RejectedRow`s, all
  accounts or those changed since a cursor, and `facts()` about what was read;
- Open Dental (`aging_report` and `ledger`) has its own reads
  (`OpenDentalClient.aging_report_pages`, `ledger_sources`).

Everything after the pages (staging, duplicate keys, the rejected-fraction limit, the
collapse guard, the transforms, publishing, overrides, rules) is the pipeline's and the
same for every source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Any, Protocol

from balances_pipeline.config import Practice
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.file_drop.config import FileDropSource
from balances_pipeline.sources.http import RequestStats
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline.sources.opendental.config import OpenDentalSource
from balances_pipeline.sources.rows import Page


@dataclass(frozen=True)
class ReadFacts:
    """What an `account_balances` client learnt while reading, recorded with the sync."""

    # The source's own as-of date (an aging file's report date), else None: the sync's.
    as_of_date: date | None = None
    # A file drop: the file read (name, SHA-256), recorded in `sync_runs`.
    source_file: str | None = None
    source_checksum: str | None = None
    # Where the read came from when the source has several ways (e.g. "bulk $export").
    read_path: str | None = None


class SourceClient(Protocol):
    stats: RequestStats
    server_clock: datetime | None

    def __enter__(self) -> SourceClient: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def check_connection(self) -> dict[str, Any]: ...


class AccountBalanceClient(SourceClient, Protocol):
    def account_balance_pages(
        self, changed_since: datetime | None
    ) -> list[Iterator[Page[Any]]]:
        """All accounts (`changed_since` None: a full read, accounts no longer listed leave
        the practice) or those changed at or after `changed_since` in the source's clock
        (an incremental read: an account that left is a row with `active=False`)."""
        ...

    def facts(self) -> ReadFacts:
        """Called after the pages were read."""
        ...


def _client_class(source: object) -> type | None:
    """The client class of a source model (each imported only when a practice uses it)."""
    if isinstance(source, OpenDentalSource):
        return OpenDentalClient
    if isinstance(source, FhirSource):
        from balances_pipeline.sources.fhir.client import FhirClient

        return FhirClient
    if isinstance(source, FileDropSource):
        from balances_pipeline.sources.file_drop.reader import FileDropClient

        return FileDropClient
    return None


def open_client(practice: Practice) -> SourceClient:
    """A connected client for the practice's source (credentials read from its env vars)."""
    client_class = _client_class(practice.source)
    if client_class is None:
        raise SourceError(
            f"practice {practice.id}: source type {practice.source.type} has no client"
        )
    return client_class(practice)
