"""FHIR R4/R5 connector: `Account` balances by search (`bundle.py`) or Bulk Data `$export`
(`bulk.py`), with a static bearer token or SMART Backend Services (`auth.py`), mapped to
`SourceBalanceRow`s (`mapping.py`). HTTP, retries and errors: `transport.py`.

Tokens and the private key live only in objects whose repr hides them; messages and logs
carry practice ids, counts and HTTP statuses, never a secret and never a name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Any

from balances_pipeline.config import Practice
from balances_pipeline.sources.clients import ReadFacts
from balances_pipeline.sources.credentials import secret_values
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.fhir.auth import SmartBackendTokens, StaticToken, TokenSource
from balances_pipeline.sources.fhir.bulk import file_pages, patient_names, run_export
from balances_pipeline.sources.fhir.bundle import read_bundle, search_pages, search_params
from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.fhir.transport import FHIR_JSON, FhirTransport
from balances_pipeline.sources.http import (
    CountingSession,
    RequestStats,
    source_session,
)
from balances_pipeline.sources.rows import Page

logger = logging.getLogger(__name__)

READ_PATH_SEARCH = "search"
READ_PATH_BULK = "bulk $export"


class FhirClient:
    """Reads one practice's FHIR server; `stats` counts requests, retries and pages."""

    def __init__(self, practice: Practice, *, session: CountingSession | None = None) -> None:
        if not isinstance(practice.source, FhirSource):
            raise SourceError(f"practice {practice.id}: source is not fhir")
        self.practice = practice
        self.source: FhirSource = practice.source
        self._owns_session = session is None
        if session is None:
            session = source_session(self.source, practice.verify_tls)
        self._session = session
        self.stats: RequestStats = session.stats
        self._transport = FhirTransport(practice, self.source, session)
        self._transport.extra_secrets = tuple(secret_values(practice))
        self._transport.tokens = self._token_source()
        # Naive UTC: the server's clock when the read began (Date header of the first
        # answer, else the Bundle's meta.lastUpdated; bulk: the manifest's transactionTime).
        self.server_clock: datetime | None = None
        self._read_path: str | None = None
        if not practice.verify_tls and self.source.base_url.startswith("https:"):
            logger.warning("practice %s: TLS certificate verification is turned off",
                           practice.id)

    def _token_source(self) -> TokenSource:
        if self.source.auth == "bearer":
            assert self.source.token_env
            return StaticToken(self.practice, self.source.token_env)
        transport = self._transport
        return SmartBackendTokens(self.practice, self.source, transport.send_plain,
                                  transport.explain)

    def __repr__(self) -> str:
        return f"FhirClient(practice={self.practice.id!r}, base_url={self.source.base_url!r})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._transport.stream_session.close()
        if self._owns_session:
            self._session.close()

    # -- reads ---------------------------------------------------------------------------

    def account_balance_pages(self, changed_since: datetime | None
                              ) -> list[Iterator[Page[Any]]]:
        """All accounts (`changed_since` None) or those changed at or after it (naive UTC),
        as page iterators: one for a search, one per NDJSON file for a bulk export (the
        export is started and polled to completion by this call)."""
        if self.source.bulk_group_id:
            self._read_path = READ_PATH_BULK
            manifest = run_export(self._transport, changed_since)
            self._set_clock(manifest.transaction_time or manifest.kickoff_clock)
            names = patient_names(self._transport, manifest)
            return [file_pages(self._transport, url, number, manifest.requires_token,
                               changed_since is not None, names)
                    for number, url in enumerate(manifest.account_files, start=1)]
        self._read_path = READ_PATH_SEARCH
        return [search_pages(self._transport, changed_since, self._set_clock)]

    def _set_clock(self, moment: datetime | None) -> None:
        if self.server_clock is None and moment is not None:
            self.server_clock = moment

    def facts(self) -> ReadFacts:
        return ReadFacts(read_path=self._read_path)

    def check_connection(self) -> dict[str, Any]:
        """The CapabilityStatement's FHIR version and one search page: counts only."""
        transport = self._transport
        base = self.source.base_url
        capability, _ = transport.get_json(f"{base}/metadata", what="metadata",
                                           headers={"Accept": FHIR_JSON})
        version = capability.get("fhirVersion") if isinstance(capability, dict) else None
        params = search_params(self.source, None)
        params["_count"] = str(min(self.source.page_size, 10))
        body, _ = transport.get_json(f"{base}/Account", what="Account search page 1",
                                     params=params, headers={"Accept": FHIR_JSON})
        accounts, _, next_url, _ = read_bundle(body, transport.where("Account search"))
        self.stats.pages += 1
        total = body.get("total")
        return {
            "practice_id": self.practice.id,
            "fhir_version": version if isinstance(version, str) else "unknown",
            "auth": self.source.auth,
            "accounts_total": total if isinstance(total, int) else "not reported",
            "accounts_first_page": len(accounts),
            "more_pages": next_url is not None,
            "bulk_export": (f"Group {self.source.bulk_group_id}" if self.source.bulk_group_id
                            else "not configured"),
            **self.stats.as_dict(),
        }
