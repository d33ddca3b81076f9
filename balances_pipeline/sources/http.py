"""HTTP plumbing shared by connectors: a `requests` session with bounded, counted retries.

Retries happen inside urllib3 (throttling, 5xx, connection resets, timeouts); a `Retry`
subclass reports every retry it grants to a `RequestStats`, so the counts in sync metadata
are what actually went over the wire rather than an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_BACKOFF_FACTOR = 0.5
DEFAULT_BACKOFF_JITTER = 0.5
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_RETRY_AFTER_MAX = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(slots=True)
class RequestStats:
    """What a connector did over HTTP during one extraction."""

    requests: int = 0  # HTTP attempts made, retries included
    retries: int = 0  # attempts that repeated an earlier one (urllib3 or body-level)
    pages: int = 0  # pages received and parsed

    def record_request(self) -> None:
        self.requests += 1

    def record_retry(self) -> None:
        # A granted retry is always followed by exactly one more attempt.
        self.retries += 1
        self.requests += 1

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "pages": self.pages}


class CountingRetry(Retry):
    """A urllib3 `Retry` that reports each retry it grants to a `RequestStats`.

    urllib3 replaces the Retry object on every increment (`new()`), so the stats reference
    is carried over explicitly. An increment that raises (retries exhausted) grants nothing
    and is not counted.
    """

    def __init__(
        self,
        *args: Any,
        stats: RequestStats | None = None,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_MAX,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.retry_after_cap = retry_after_cap

    def new(self, **kw: Any) -> CountingRetry:
        retry = super().new(**kw)
        retry.stats = self.stats
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        # Capped here rather than with `retry_after_max`, which older urllib3 2.x lacks.
        return min(super().parse_retry_after(retry_after), self.retry_after_cap)

    def increment(self, *args: Any, **kwargs: Any) -> CountingRetry:
        retry = super().increment(*args, **kwargs)
        if self.stats is not None:
            self.stats.record_retry()
        return retry


class CountingSession(requests.Session):
    """A `requests.Session` that knows its `RequestStats` and default timeouts."""

    stats: RequestStats
    timeout: tuple[float, float]
    backoff_factor: float

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        self.stats.record_request()
        return super().request(method, url, *args, **kwargs)


def build_retry(
    *,
    max_retries: int,
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    backoff_jitter: float | None = None,
    backoff_max: float = DEFAULT_BACKOFF_MAX,
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
    stats: RequestStats | None = None,
) -> CountingRetry:
    jitter = backoff_factor if backoff_jitter is None else backoff_jitter
    return CountingRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        redirect=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        backoff_jitter=jitter,
        backoff_max=backoff_max,
        retry_after_cap=retry_after_max,
        respect_retry_after_header=True,
        # Return the last 429/5xx so the caller can name it in its error message.
        raise_on_status=False,
        raise_on_redirect=False,
        stats=stats,
    )


def build_session(
    *,
    max_retries: int,
    verify_tls: bool,
    timeout_seconds: float = 30.0,
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT,
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    backoff_jitter: float | None = None,
    backoff_max: float = DEFAULT_BACKOFF_MAX,
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
    stats: RequestStats | None = None,
) -> CountingSession:
    """A session retrying GETs on 429/5xx, resets and timeouts; 401/403 are never retried.

    Every request gets a (connect, read) timeout unless the caller passes its own.
    `session.stats` counts attempts and retries exactly.
    """
    session = CountingSession()
    session.stats = stats if stats is not None else RequestStats()
    session.timeout = (min(connect_timeout_seconds, timeout_seconds), timeout_seconds)
    session.backoff_factor = backoff_factor
    session.verify = verify_tls
    retry = build_retry(
        max_retries=max_retries,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        stats=session.stats,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
