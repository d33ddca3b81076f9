"""The Open Dental connector's faults over real HTTP on loopback: throttling, server
errors, broken connections, bodies cut short or unusable, and authentication.

Every transient fault is retried by the session's one urllib3 `Retry` (`sources/http.py`),
and counted exactly: `requests` are attempts over the wire, `retries` the repeated ones.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
import traceback
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

from balances_pipeline.sources.credentials import opendental_authorization
from balances_pipeline.sources.errors import (
    AuthenticationError,
    EndpointMissingError,
    InvalidCredentialError,
    MalformedResponseError,
    MissingCredentialError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.http import build_retry, build_session
from balances_pipeline.sources.opendental.client import OpenDentalClient
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    CUST_KEY,
    DEV_KEY,
    FakeOpenDental,
    Reply,
    aging_row,
    collect,
    keys_fixture,  # noqa: F401 - a pytest fixture
    make_client,
    make_practice,
    patient_row,
    server_fixture,  # noqa: F401 - a pytest fixture
    server_saw,
    sim_client,
    simulator_fixture,  # noqa: F401 - a pytest fixture
)


def test_429_retry_after_is_honoured_and_counted(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(status=429, body=b'"slow down"', headers={"Retry-After": "1"})]
    client = make_client(server)
    started = time.monotonic()
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert time.monotonic() - started >= 0.9
    assert len(rows) == 1
    assert len(server.seen) == 2
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (2, 1, 1)


def test_retry_after_is_capped() -> None:
    retry = build_retry(max_retries=3, retry_after_max=2.0)
    assert retry.parse_retry_after("3600") == 2.0
    assert retry.increment("GET", "/x", error=None).retry_after_cap == 2.0


def test_503_then_success(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1), aging_row(2)]
    server.script = [Reply(status=503, body=b"{}"), Reply(status=502, body=b"{}")]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 2
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_retries_exhausted_is_transient_error(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 301)]
    client = make_client(server, max_retries=2)
    pages = client.aging_report_pages(AS_OF)
    next(pages)
    next(pages)
    server.always = Reply(status=503, body=b"{}")
    with pytest.raises(TransientSourceError) as raised:
        next(pages)
    assert str(raised.value) == (
        "practice test_practice: /reports/Aging offset 200: HTTP 503 after 2 retries"
    )
    assert len(server.seen) == 2 + 3
    assert (client.stats.requests, client.stats.retries) == (5, 2)


def test_truncated_body_is_retried(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(truncate=True), Reply(truncate=True)]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_a_short_body_is_a_read_error_of_the_sessions_retry(server: FakeOpenDental) -> None:
    # The body is read inside urllib3's retry loop: one Retry, one backoff formula.
    server.rows["/patients"] = [patient_row(1, 1)]
    server.script = [Reply(truncate=True)]
    session = build_session(max_retries=3, verify_tls=True, backoff_factor=0.01)
    response = session.get(f"{server.url}/patients", headers={"Authorization": AUTHORIZATION})
    assert response.status_code == 200 and len(response.json()) == 1
    retry = response.raw.retries
    [attempt] = retry.history
    assert isinstance(attempt.error, ProtocolError) and "IncompleteRead" in str(attempt.error)
    assert (retry.total, retry.read, retry.status) == (2, 2, 3)
    assert (session.stats.requests, session.stats.retries) == (2, 1)


def test_truncated_body_every_time_is_transient_error(server: FakeOpenDental) -> None:
    server.always = Reply(body=b'[{"PatNum": 1}]', truncate=True)
    client = make_client(server, max_retries=2)
    with pytest.raises(TransientSourceError) as raised:
        collect(client.aging_report_pages(AS_OF))
    assert str(raised.value) == (
        "practice test_practice: /reports/Aging offset 0: response body cut short after 2 retries"
    )
    assert len(server.seen) == 3
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_status_and_body_faults_share_one_budget(server: FakeOpenDental) -> None:
    server.script = [Reply(status=503, body=b"{}"), Reply(truncate=True), Reply(drop=True)]
    client = make_client(server, max_retries=2)
    with pytest.raises(TransientSourceError, match="offset 0: connection broken after 2 retries"):
        collect(client.aging_report_pages(AS_OF))
    assert len(server.seen) == 3
    assert (client.stats.requests, client.stats.retries) == (3, 2)


def test_body_not_a_json_list_fails_at_once(server: FakeOpenDental) -> None:
    # Complete bodies that are not a JSON list are the server's answer: failed, not retried.
    server.always = Reply(body=b'{"not": "a list"}')
    client = make_client(server, max_retries=2)
    with pytest.raises(MalformedResponseError, match="not a JSON list$") as raised:
        collect(client.aging_report_pages(AS_OF))
    assert not isinstance(raised.value, TransientSourceError)
    assert len(server.seen) == 1
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_complete_but_broken_json_is_not_retried(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(body=b'[{"PatNum": 1, "patN')]  # Content-Length matches
    client = make_client(server)
    with pytest.raises(MalformedResponseError) as raised:
        collect(client.aging_report_pages(AS_OF))
    assert str(raised.value) == (
        "practice test_practice: /reports/Aging offset 0: response body is not a JSON list"
    )
    assert (len(server.seen), client.stats.requests, client.stats.retries) == (1, 1, 0)


def test_body_that_will_not_decompress_is_malformed(server: FakeOpenDental) -> None:
    server.always = Reply(body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    client = make_client(server)
    with pytest.raises(MalformedResponseError, match="offset 0: response body could not be"):
        collect(client.aging_report_pages(AS_OF))
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_gzipped_body_is_decoded(server: FakeOpenDental) -> None:
    body = gzip.compress(json.dumps([aging_row(1), aging_row(2)]).encode())
    server.script = [Reply(truncate=True), Reply(body=body, headers={"Content-Encoding": "gzip"})]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert [row.guarantor_id for row in rows] == [1, 2]
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_unusable_body_without_framing_is_transient(server: FakeOpenDental) -> None:
    # Without Content-Length or chunks, a body cut short cannot be told from a whole one.
    server.always = Reply(body=b'[{"PatNum": 1, "patN', unframed=True)
    client = make_client(server)
    with pytest.raises(TransientSourceError, match="offset 0: .* may have been cut short"):
        collect(client.aging_report_pages(AS_OF))
    assert (client.stats.requests, client.stats.retries) == (1, 0)
    server.always = Reply(body=json.dumps([aging_row(1)]).encode(), unframed=True)
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 1


def test_dropped_connection_is_retried(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    server.script = [Reply(drop=True)]
    client = make_client(server)
    rows, _ = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_read_timeout_exhausted_is_transient_error(server: FakeOpenDental) -> None:
    server.always = Reply(body=b"[]", delay=0.5)
    client = make_client(server, max_retries=1, timeout_seconds=0.1)
    with pytest.raises(TransientSourceError, match=r"offset 0: read timeout after 1 retries"):
        collect(client.aging_report_pages(AS_OF))
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_connection_refused_is_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    practice = make_practice(f"http://127.0.0.1:{port}/api/v1", max_retries=1)
    session = build_session(max_retries=1, verify_tls=True, backoff_factor=0.01)
    client = OpenDentalClient(practice, authorization=AUTHORIZATION, session=session)
    with pytest.raises(
        TransientSourceError, match="connection refused or host unreachable after 1 retries"
    ):
        client.check_connection()
    assert client.stats.retries == 1


# -- authentication and credentials -------------------------------------------------------


def test_401_fails_at_once(server: FakeOpenDental) -> None:
    client = make_client(server, authorization="ODFHIR wrong/key")
    with pytest.raises(AuthenticationError) as raised:
        collect(client.aging_report_pages(AS_OF))
    # What the server said, after scrubbing: the key never appears.
    assert str(raised.value) == (
        "authentication failed for practice test_practice (HTTP 401: Invalid authorization)"
    )
    assert "wrong/key" not in str(raised.value)
    assert len(server.seen) == 1
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_403_fails_at_once(server: FakeOpenDental) -> None:
    server.always = Reply(status=403, body=b"{}", headers={"Retry-After": "1"})
    client = make_client(server)
    with pytest.raises(AuthenticationError):
        collect(client.patient_pages())
    assert len(server.seen) == 1


def test_other_4xx_is_source_error(server: FakeOpenDental) -> None:
    server.always = Reply(status=404, body=b"{}")
    client = make_client(server)
    with pytest.raises(SourceError) as raised:
        collect(client.patient_pages())
    # Not retried, not an authentication failure: the server does not serve the endpoint.
    assert type(raised.value) is EndpointMissingError and raised.value.status == 404
    assert str(raised.value) == "practice test_practice: /patients offset 0: HTTP 404"


@pytest.mark.parametrize("value", [None, ""])
def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", DEV_KEY)
    if value is None:
        monkeypatch.delenv("TEST_OD_CUSTOMER_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", value)
    practice = make_practice("http://127.0.0.1:9/api/v1")
    with pytest.raises(MissingCredentialError) as raised:
        OpenDentalClient(practice)
    assert str(raised.value) == (
        "practice test_practice: environment variable TEST_OD_CUSTOMER_KEY is not set"
    )
    assert DEV_KEY not in str(raised.value)


def test_authorization_header_format(keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    practice = make_practice("http://h/api/v1")
    assert opendental_authorization(practice) == AUTHORIZATION
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY + "\n")  # pasted with a newline
    assert opendental_authorization(practice) == AUTHORIZATION


def test_unsendable_key_is_rejected_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OD_DEVELOPER_KEY", "abc\r\nX-Injected: 1")
    monkeypatch.setenv("TEST_OD_CUSTOMER_KEY", CUST_KEY)
    with pytest.raises(InvalidCredentialError) as raised:
        opendental_authorization(make_practice("http://h/api/v1"))
    assert str(raised.value) == (
        "practice test_practice: environment variable TEST_OD_DEVELOPER_KEY contains "
        "whitespace or control characters"
    )


def test_authorization_never_leaks(
    server: FakeOpenDental, keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    server.rows["/reports/Aging"] = [aging_row(1), aging_row(2, BalTotal="oops")]
    server.script = [
        Reply(status=429, body=b"{}", headers={"Retry-After": "0"}),
        Reply(truncate=True),
    ]
    practice = make_practice(server.url, max_retries=2)
    session = build_session(max_retries=2, verify_tls=True, backoff_factor=0.01)
    client = OpenDentalClient(practice, session=session)  # authorization from the env
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert len(rows) == 1 and len(rejected) == 1
    texts = [repr(client), repr(client._auth), repr(rejected[0])]
    server.always = Reply(status=503, body=b"{}")
    with pytest.raises(TransientSourceError) as transient:
        collect(client.aging_report_pages(AS_OF))
    server.always = Reply(status=401, body=b"{}")
    with pytest.raises(AuthenticationError) as auth:
        collect(client.patient_pages())
    for error in (transient.value, auth.value):
        texts.append("".join(traceback.format_exception(error)))
    texts.append(caplog.text)
    texts.extend(repr(record.args) for record in caplog.records)
    assert any("urllib3" in record.name for record in caplog.records)
    for text in texts:
        for secret in (AUTHORIZATION, DEV_KEY, CUST_KEY):
            assert secret not in text


# -- against the bundled simulator ----------------------------------------------------------


def test_simulator_wrong_key_is_401(simulator: Any) -> None:
    sim, _ = simulator
    client = sim_client(sim, authorization=f"ODFHIR {DEV_KEY}/wrong")
    with pytest.raises(AuthenticationError, match="^authentication failed for practice"):
        client.check_connection()
    assert client.stats.requests == 1
    assert server_saw(sim, 1, practice_id=None)


def test_simulator_rate_limit_is_honoured(simulator: Any) -> None:
    sim, module = simulator
    sim.set_faults("sim_practice", module.Faults(rate_limit_next=1, retry_after_seconds=1))
    client = sim_client(sim)
    started = time.monotonic()
    client.check_connection()
    assert time.monotonic() - started >= 0.9
    assert (client.stats.requests, client.stats.retries) == (2, 1)


def test_simulator_transport_faults_are_retried_and_counted(simulator: Any) -> None:
    sim, module = simulator
    clean, _ = collect(sim_client(sim).aging_report_pages(AS_OF))
    sim.reset_request_log()
    faults = module.Faults(
        rate_limit_next=1,
        retry_after_seconds=0,
        server_error_next=1,
        drop_connection_next=1,
        truncated_body_next=1,
    )
    sim.set_faults("sim_practice", faults)
    client = sim_client(sim)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert rows == clean and rejected == []
    assert client.stats.retries == 4
    assert server_saw(sim, client.stats.requests)
