"""Every request attempt has a total deadline (`request_deadline_seconds`): a server
that drips its answer is cut there, and the cut is retried within the budget."""

from __future__ import annotations

import time

import pytest
import requests

from balances_pipeline.sources.errors import (
    TransientSourceError,
)
from balances_pipeline.sources.http import DeadlineExceeded, RequestLimits, build_session
from balances_pipeline.sources.http_limits import WATCHDOG
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    FakeOpenDental,
    Reply,
    collect,
    patient_row,
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


def test_a_dripping_body_stops_at_the_deadline(raw: RawServer) -> None:
    # Each byte arrives well within the read timeout; before, the request took 6 s.
    raw.default = drip_body(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert str(error) == (
        f"{WHERE}: response not complete after 1 s (request_deadline_seconds); "
        "gave up after 0 retries"
    )
    assert 0.95 <= elapsed < 2.5  # not the 6 s the server would take
    [served] = raw.served
    waited = time.monotonic() + 2  # the server notices the hang-up at its next byte
    while served.ended is None and time.monotonic() < waited:
        time.sleep(0.02)
    assert served.ended is not None and served.ended - served.started < 2.5
    assert served.sent < len(head("Content-Length: 60")) + 20  # not the whole body
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (1, 0, 0)


def test_dripping_headers_stop_at_the_deadline(raw: RawServer) -> None:
    raw.default = drip_headers(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert "response not complete after 1 s (request_deadline_seconds)" in str(error)
    assert 0.95 <= elapsed < 2.5  # not the 6 s the server would take


def test_an_unframed_body_cut_at_the_deadline_is_not_taken_as_complete(raw: RawServer) -> None:
    # Without framing, the end of the body is the connection closing, which is also what
    # cutting it at the deadline looks like from inside the read: still a deadline.
    raw.default = drip_body(6, framed=False)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=1, max_retries=0)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert "response not complete after 1 s (request_deadline_seconds)" in str(error)
    assert elapsed < 2.5


def test_the_deadline_is_retried_within_the_budget_and_counted(raw: RawServer) -> None:
    raw.script = [drip_body(6), drip_headers(6)]  # then a prompt answer
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=0.6, max_retries=2)
    elapsed, result = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    rows, rejected = result
    assert [row.guarantor_id for row in rows] == [1, 2] and rejected == []
    assert 1.15 <= elapsed < 3.5
    assert len(raw.served) == 3
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (3, 2, 1)


def test_the_deadline_on_every_attempt_is_transient_after_the_budget(raw: RawServer) -> None:
    raw.default = drip_body(6)
    client = client_for(raw, timeout_seconds=0.5, request_deadline_seconds=0.6, max_retries=1)
    elapsed, error = timed(lambda: collect(client.aging_report_pages(AS_OF)))
    assert isinstance(error, TransientSourceError)
    assert str(error) == (
        f"{WHERE}: response not complete after 0.6 s (request_deadline_seconds); "
        "gave up after 1 retries"
    )
    assert 1.15 <= elapsed < 3  # two attempts of 0.6 s, not two of 6 s
    assert (len(raw.served), client.stats.requests, client.stats.retries) == (2, 2, 1)


def test_the_deadline_is_a_read_error_of_the_sessions_retry(raw: RawServer) -> None:
    raw.script = [drip_body(6)]
    session = build_session(max_retries=3, verify_tls=True, backoff_factor=0.01)
    response = session.get(raw.url, limits=RequestLimits(deadline_seconds=0.5))
    assert response.status_code == 200
    retry = response.raw.retries
    [attempt] = retry.history
    assert isinstance(attempt.error, DeadlineExceeded)
    assert (retry.total, retry.read, retry.status) == (2, 2, 3)
    assert (session.stats.requests, session.stats.retries) == (2, 1)


def test_a_silent_keep_alive_server_is_cut_and_the_pool_recovers() -> None:
    # HTTP/1.1 keep-alive (the connection keeps its socket): an answer withheld for 3 s,
    # within the session's 30 s read timeout, is cut at the deadline; the next request on
    # the same session gets a fresh connection.
    fake = FakeOpenDental({"/patients": [patient_row(1, 1)]}).start()
    session = build_session(max_retries=0, verify_tls=True)
    url, headers = f"{fake.url}/patients", {"Authorization": AUTHORIZATION}
    try:
        assert len(session.get(url, headers=headers).json()) == 1  # a pooled connection
        fake.script = [Reply(delay=3)]
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError) as raised:
            session.get(url, headers=headers, limits=RequestLimits(deadline_seconds=1))
        assert time.monotonic() - started < 2.5
        assert isinstance(raised.value.args[0].reason, DeadlineExceeded)
        assert len(session.get(url, headers=headers).json()) == 1
        assert (session.stats.requests, session.stats.retries) == (3, 0)
    finally:
        fake.stop()


def test_prompt_requests_are_unaffected_by_the_deadline(raw: RawServer) -> None:
    client = client_for(raw, timeout_seconds=1, request_deadline_seconds=1)
    for _ in range(3):
        rows, _ = collect(client.aging_report_pages(AS_OF))
        assert len(rows) == 2
    time.sleep(1.2)  # a deadline left running would cut a later request or connection
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 2
    assert (client.stats.requests, client.stats.retries) == (4, 0)
    assert len(watchdog_threads()) == 1  # one watchdog for every attempt
    assert WATCHDOG.pending() == 0  # each attempt's deadline gone with it


