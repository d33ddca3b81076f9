"""HTTP plumbing shared by connectors: a `requests` session with bounded, counted retries,
a deadline on every attempt and a limit on every body.

Every retry happens inside urllib3, under one `Retry` with one backoff formula and one
budget per request: throttling and 5xx (`status`), refused or timed-out connections
(`connect`), and everything that can go wrong while the answer arrives (`read`): a reset
or a read timeout before or *during* the body, a body cut short of its framing
(Content-Length, or chunked encoding without its last chunk), and an attempt still not
complete at its deadline. For that last part the session's connection pools read each body
in full inside urllib3's retry loop (`_BodyReadingPool`), where a short body is a
`ProtocolError` like any other broken read; requests then gets the body from memory.

Limits (`RequestLimits`, per request, the session's own as defaults):

- **Deadline.** `timeout_seconds` bounds one socket read, so a server sending a byte now
  and then could keep a request alive for ever. Each attempt, from connecting to the
  body's last byte, gets `deadline_seconds` of wall clock (a TLS handshake: see
  `_Deadline`): a watchdog shuts the attempt's socket down when it passes, whichever read
  it is blocked in, and the attempt fails with
  `DeadlineExceeded`, a read error to urllib3: retried within the same budget, counted like
  any retry. A request so lasts at most `(max_retries + 1) * deadline_seconds` plus the
  backoff between attempts.
- **Body size.** Bodies are read in chunks of `READ_CHUNK_BYTES`, never more than
  `max_body_bytes` of them (a larger Content-Length fails before reading): `BodyTooLarge`,
  which urllib3 does not retry (it is the server's answer; asking again gets the same) and
  requests does not wrap. `read_content` applies the same limit to the decompressed body.

What a complete body says is not this layer's business: a connector decides what to do
with one it cannot use (see `opendental/client.py`). A `Retry` subclass reports every
retry it grants to a `RequestStats`, so the counts in sync metadata are what actually went
over the wire rather than an estimate.

TLS: the session's `verify` is sent with every request explicitly. requests merges
environment settings into each request, and with `REQUESTS_CA_BUNDLE` or `CURL_CA_BUNDLE`
set that bundle replaced a session-level `verify=False`. Passed explicitly, `False` stays
`False`; `True` still lets those variables name the CA bundle to verify against (a
private CA). Proxies from the environment apply as before, read once per session and
host rather than for every request (a session serves one sync).
"""

from __future__ import annotations

import functools
import io
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPResponse, PoolManager
from urllib3.util.retry import Retry

from balances_pipeline.sources.http_limits import (  # noqa: F401 - part of this module's interface
    _DEADLINE_POLL_SECONDS,
    CURRENT_LIMITS,
    DECODE_CHUNK_BYTES,
    DEFAULT_LIMITS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_DEADLINE,
    READ_CHUNK_BYTES,
    BodyTooLarge,
    DeadlineExceeded,
    RequestLimits,
    _Deadline,
    _read_body,
    read_content,
)

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
    """A response whose body has already been read in full, served again from memory."""


def _buffered(response: HTTPResponse, body: io.BytesIO, method: str) -> HTTPResponse:
    return _BufferedResponse(
        body=body,
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
    """Reads each response body during `urlopen`, so urllib3's `Retry` covers it, within
    the request's limits (`CURRENT_LIMITS`).

    requests asks for `preload_content=False` (it reads bodies itself, after urllib3's
    retries are over). Here `urlopen` is told the body is preloaded (so the connection goes
    back to the pool once it is read), and `_make_request`, which urllib3 calls for every
    attempt inside its retry loop, reads it in chunks, under the attempt's deadline and the
    body limit. A short or broken body is a read error there, like the deadline; urllib3
    retries by calling `urlopen` again with the same arguments.
    """

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> HTTPResponse:
        kwargs["preload_content"] = True
        return super().urlopen(method, url, *args, **kwargs)

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        limits = CURRENT_LIMITS.get()
        kwargs["preload_content"] = False
        deadline = _Deadline(conn, limits.deadline_seconds)
        response = None
        try:
            response = super()._make_request(conn, method, url, *args, **kwargs)
            body = _read_body(response, limits, deadline, self, url)
        except Exception as error:
            cut = deadline.finish()
            if response is not None:
                response.close()
            if cut and not isinstance(error, BodyTooLarge | DeadlineExceeded):
                # Whatever the cut looked like from inside the read (a reset, a short body).
                raise DeadlineExceeded(self, url, limits.deadline_seconds) from error
            raise
        if deadline.finish():
            # The cut can look like the end of a body without framing: never take it so.
            response.close()
            raise DeadlineExceeded(self, url, limits.deadline_seconds)
        return _buffered(response, body, method)


class _SocketHoldingConnection:
    """A connection that remembers the socket its response is read from.

    http.client drops `sock` from a connection whose answer will close it (`Connection:
    close`, or no framing), handing the socket over to the response; `held_sock` keeps it
    within reach of the attempt's deadline. Mixed into the pool's own connection class.
    """

    held_sock: socket.socket | None = None

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        self.held_sock = None
        return super().connect(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        self.held_sock = self.sock  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


@functools.cache
def _socket_holding(connection_class: type) -> type:
    if issubclass(connection_class, _SocketHoldingConnection):
        return connection_class
    name = f"SocketHolding{connection_class.__name__}"
    return type(name, (_SocketHoldingConnection, connection_class), {})


@functools.cache
def _body_reading(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    if issubclass(pool_class, _BodyReadingPool):
        return pool_class
    connection_class = _socket_holding(pool_class.ConnectionCls)
    return type(
        f"BodyReading{pool_class.__name__}",
        (_BodyReadingPool, pool_class),
        {"ConnectionCls": connection_class},
    )


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
    """A `requests.Session` that knows its `RequestStats`, default timeouts and limits.

    `request` (and so `get`) takes `limits=RequestLimits(...)` for one request; without it
    the session's own apply. `verify` is always passed on explicitly (see the module doc).
    """

    stats: RequestStats
    timeout: tuple[float, float]
    limits: RequestLimits

    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        *args: Any,
        limits: RequestLimits | None = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        self.stats.record_request()
        token = CURRENT_LIMITS.set(limits or self.limits)
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            CURRENT_LIMITS.reset(token)

    def __init__(self) -> None:
        super().__init__()
        self._environment_settings: dict[tuple, dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        # requests reads the proxy variables anew for every request (about 1 ms each, a
        # scan of os.environ); a session serves one sync, so once per host and settings.
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream,
               verify, cert)
        try:
            settings = self._environment_settings[key]
        except KeyError:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment_settings[key] = settings
        except TypeError:  # a cert given as a list, say: nothing to key on
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        return {**settings, "proxies": dict(settings["proxies"])}


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
        allowed_methods=frozenset({"GET", "PUT"}),  # PUT: ShortQuery, a read-only query
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
    request_deadline_seconds: float = DEFAULT_REQUEST_DEADLINE,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    stats: RequestStats | None = None,
) -> CountingSession:
    """A session retrying GETs on 429/5xx, resets, timeouts, cut-short bodies and attempts
    past their deadline; 401/403 and too-large bodies are never retried.

    Every request gets a (connect, read) timeout and `RequestLimits` unless the caller
    passes its own. `session.stats` counts attempts and retries exactly.
    """
    session = CountingSession()
    session.stats = stats if stats is not None else RequestStats()
    session.timeout = (min(connect_timeout_seconds, timeout_seconds), timeout_seconds)
    session.limits = RequestLimits(request_deadline_seconds, max_response_bytes)
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


def source_session(source: Any, verify_tls: bool) -> CountingSession:
    """The session of an API source, from its config's request options (`ApiSourceConfig`:
    retries, read timeout, per-attempt deadline, body limit)."""
    return build_session(
        max_retries=source.max_retries,
        verify_tls=verify_tls,
        timeout_seconds=source.timeout_seconds,
        request_deadline_seconds=source.request_deadline_seconds,
        max_response_bytes=source.max_response_bytes,
    )
