"""HTTP plumbing shared by connectors: a `requests` session with bounded, counted retries.

Every retry happens inside urllib3, under one `Retry` with one backoff formula and one
budget per request: throttling and 5xx (`status`), refused or timed-out connections
(`connect`), and everything that can go wrong while the answer arrives (`read`): a reset
or a read timeout before or *during* the body, and a body cut short of its framing
(Content-Length, or chunked encoding without its last chunk). For that last part the
session's connection pools read each body in full inside urllib3's retry loop
(`preload_content`), where a short body is a `ProtocolError` like any other broken read;
requests then gets the body from memory. Connectors read pages of JSON, which requests
would hold in memory whole anyway.

What a complete body says is not this layer's business: a connector decides what to do
with one it cannot use (see `opendental/client.py`). A `Retry` subclass reports every
retry it grants to a `RequestStats`, so the counts in sync metadata are what actually went
over the wire rather than an estimate.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPResponse, PoolManager
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
    retries: int = 0  # attempts that repeated an earlier one, whatever the reason
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


# -- bodies read inside urllib3's retry loop ------------------------------------------------


class _BufferedResponse(HTTPResponse):
    """A response whose body urllib3 has already read in full, served again from memory."""


def _buffered(response: HTTPResponse, method: str) -> HTTPResponse:
    if isinstance(response, _BufferedResponse):  # from a nested (retrying) urlopen
        return response
    return _BufferedResponse(
        body=io.BytesIO(response.data or b""),
        headers=response.headers,
        status=response.status,
        version=response.version,
        reason=response.reason,
        preload_content=False,
        decode_content=response.decode_content,
        original_response=response._original_response,  # requests reads cookies from it
        msg=response.msg,
        retries=response.retries,
        request_method=method,
        request_url=response.url,
    )


class _BodyReadingPool(HTTPConnectionPool):
    """Reads each response body during `urlopen`, so urllib3's `Retry` covers it.

    requests asks for `preload_content=False` (it reads bodies itself, after urllib3's
    retries are over); here the body is read in `urlopen`, whose own retry loop sees a
    short or broken body as a read error. urllib3 retries by calling `urlopen` again with
    the same arguments, so every attempt reads its body the same way.
    """

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> HTTPResponse:
        kwargs["preload_content"] = True
        return _buffered(super().urlopen(method, url, *args, **kwargs), method)


@functools.cache
def _body_reading(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    if issubclass(pool_class, _BodyReadingPool):
        return pool_class
    return type(f"BodyReading{pool_class.__name__}", (_BodyReadingPool, pool_class), {})


def _read_bodies_in_retries(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {
        scheme: _body_reading(pool_class)
        for scheme, pool_class in manager.pool_classes_by_scheme.items()
    }
    return manager


class BodyReadingAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose pools (proxied ones too) read bodies inside urllib3's retries."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _read_bodies_in_retries(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _read_bodies_in_retries(super().proxy_manager_for(proxy, **proxy_kwargs))


# -- the session ------------------------------------------------------------------------------


class CountingSession(requests.Session):
    """A `requests.Session` that knows its `RequestStats` and default timeouts."""

    stats: RequestStats
    timeout: tuple[float, float]

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
    """At most `max_retries` retries per request, whatever mix of faults caused them.

    Waits between attempts: none before the first retry, then `backoff_factor * 2**(n-1)`
    plus up to `backoff_jitter` at random, never more than `backoff_max`; a 429/503's
    `Retry-After` is honoured up to `retry_after_max`.
    """
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
    """A session retrying GETs on 429/5xx, resets, timeouts and cut-short bodies; 401/403
    are never retried.

    Every request gets a (connect, read) timeout unless the caller passes its own.
    `session.stats` counts attempts and retries exactly.
    """
    session = CountingSession()
    session.stats = stats if stats is not None else RequestStats()
    session.timeout = (min(connect_timeout_seconds, timeout_seconds), timeout_seconds)
    session.verify = verify_tls
    retry = build_retry(
        max_retries=max_retries,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        stats=session.stats,
    )
    adapter = BodyReadingAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
