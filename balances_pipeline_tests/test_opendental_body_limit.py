"""Every body has a size limit (`max_response_bytes`), on the wire or decompressed,
read in chunks so a huge page never sits in memory; and the limits' settings."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from balances_pipeline.sources.errors import (
    MalformedResponseError,
    ResponseTooLargeError,
    TransientSourceError,
)
from balances_pipeline.sources.http import build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    collect,
    make_practice,
)
from balances_pipeline_tests.raw_http_server import (  # noqa: F401 - raw is a fixture
    PAGE,
    SPACES,
    WHERE,
    Behaviour,
    Hangup,
    MiB,
    RawServer,
    Served,
    Wire,
    answer,
    client_for,
    drip_body,
    drip_headers,
    head,
    huge,
    raw_fixture,
    timed,
    watchdog_threads,
)

# -- the body-size limit ---------------------------------------------------------------------


def _peak_while(call: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        _, result = timed(call)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("framing", ["chunked", "unframed", "length"])
def test_a_huge_body_is_cut_off_at_the_limit_without_holding_it(
    raw: RawServer, framing: str
) -> None:
    # 256 MiB generated lazily: before, all of it was read into memory (and parsed).
    raw.default = huge(256 * MiB, framing)
    client = client_for(raw, max_response_bytes=MiB)
    peak, error = _peak_while(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, ResponseTooLargeError)
    assert not isinstance(error, TransientSourceError | MalformedResponseError)
    assert str(error) == f"{WHERE}: response larger than 1048576 bytes (max_response_bytes)"
    assert peak < 6 * MiB
    [served] = raw.served  # never retried
    assert served.sent < 48 * MiB  # the client hung up (what is left is socket buffers)
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (1, 0, 0)


def test_a_declared_length_over_the_limit_fails_before_reading(raw: RawServer) -> None:
    raw.default = huge(256 * MiB, "length")
    client = client_for(raw)  # the default limit, 64 MiB
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert str(error) == f"{WHERE}: response larger than 67108864 bytes (max_response_bytes)"
    assert elapsed < 1


def test_a_body_that_decompresses_beyond_the_limit_is_too_large(raw: RawServer) -> None:
    # 64 MiB of JSON in about 64 KiB of gzip: the limit is on what it decodes to as well.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    gzipped = packer.compress(b"[")
    for _ in range(64):
        gzipped += packer.compress(b" " * MiB)
    gzipped += packer.compress(b"]") + packer.flush()
    assert len(gzipped) < MiB

    def bomb(wire: Wire) -> None:
        wire.send(head(f"Content-Length: {len(gzipped)}", "Content-Encoding: gzip") + gzipped)

    raw.default = bomb
    client = client_for(raw, max_response_bytes=MiB)
    peak, error = _peak_while(lambda: collect(client.aging_report_pages(AS_OF)))
    assert str(error) == f"{WHERE}: response larger than 1048576 bytes (max_response_bytes)"
    assert peak < 8 * MiB
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_a_body_of_exactly_the_limit_is_read(raw: RawServer) -> None:
    body = PAGE + b" " * (2048 - len(PAGE))
    raw.default = answer(body)
    rows, _ = collect(client_for(raw, max_response_bytes=2048).aging_report_pages(AS_OF))
    assert len(rows) == 2
    raw.default = answer(body + b" ")
    with pytest.raises(ResponseTooLargeError, match="larger than 2048 bytes"):
        collect(client_for(raw, max_response_bytes=2048).aging_report_pages(AS_OF))


def test_the_limits_of_the_practice_apply_to_a_session_built_elsewhere(raw: RawServer) -> None:
    # The session's own limits are defaults; the practice's settings are sent per request.
    raw.default = answer(PAGE + b" " * 4096)
    practice = make_practice(raw.url, max_response_bytes=4096)
    session = build_session(max_retries=0, verify_tls=True)
    client = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
    with pytest.raises(ResponseTooLargeError, match="larger than 4096 bytes"):
        client.check_connection()


# -- the settings ----------------------------------------------------------------------------


def test_defaults() -> None:
    source = make_practice("http://h/api/v1").source
    assert (source.request_deadline_seconds, source.max_response_bytes) == (120, 64 * MiB)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"request_deadline_seconds": 0}, "request_deadline_seconds"),
        ({"request_deadline_seconds": -1}, "request_deadline_seconds"),
        ({"request_deadline_seconds": 3601}, "request_deadline_seconds"),
        ({"request_deadline_seconds": "soon"}, "request_deadline_seconds"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
        ({"max_response_bytes": 1023}, "max_response_bytes"),
        ({"max_response_bytes": 2**30 + 1}, "max_response_bytes"),
        ({"max_response_bytes": 1.5}, "max_response_bytes"),
        ({"timeout_seconds": 60, "request_deadline_seconds": 30}, "request_deadline_seconds"),
        ({"timeout_seconds": 300}, "request_deadline_seconds"),
    ],
)
def test_settings_are_validated(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        make_practice("http://h/api/v1", **settings)


def test_a_deadline_as_long_as_the_read_timeout_is_accepted() -> None:
    source = make_practice(
        "http://h/api/v1", timeout_seconds=300, request_deadline_seconds=300,
        max_response_bytes=2**30,
    ).source
    assert (source.request_deadline_seconds, source.max_response_bytes) == (300, 2**30)
