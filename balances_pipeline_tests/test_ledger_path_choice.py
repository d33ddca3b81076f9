"""Which path ledger mode takes, decided by the server's answer to `SELECT NOW()` through
`PUT /queries/ShortQuery`: rows (ShortQuery), a 401 naming the Queries permission or an
endpoint the server does not serve (the REST fallback, saying why), anything else an error.
Over real HTTP against the scripted fake (`opendental_fake.py`)."""

from __future__ import annotations

import pytest

from balances_pipeline.sources.errors import AuthenticationError, TransientSourceError
from balances_pipeline.sources.opendental.transport import (
    LEDGER_PATH_REST,
    LEDGER_PATH_SHORTQUERY,
)
from balances_pipeline_tests.opendental_fake import (
    FakeOpenDental,
    Reply,
    keys_fixture,  # noqa: F401 (fixture)
    make_client,
    patient_row,
    server_fixture,  # noqa: F401 (fixture)
)


def test_rows_from_now_mean_shortquery(server: FakeOpenDental) -> None:
    server.short_query = Reply(body=b'[{"NOW()": "2026-11-30 10:15:00"}]')
    with make_client(server, mode="ledger") as client:
        assert client.choose_ledger_path() == LEDGER_PATH_SHORTQUERY
        assert client.server_clock.isoformat() == "2026-11-30T10:15:00"
        assert client.missing_permission is None and client.missing_endpoint is None


def test_a_key_without_queries_takes_the_rest_fallback(server: FakeOpenDental) -> None:
    with make_client(server, mode="ledger") as client:
        assert client.choose_ledger_path() == LEDGER_PATH_REST
        assert client.missing_permission == "Queries"


@pytest.mark.parametrize("status", [404, 405, 501])
def test_a_server_without_shortquery_takes_the_rest_fallback(
    server: FakeOpenDental, status: int
) -> None:
    server.short_query = Reply(status=status, body=b'"Not found."')
    server.rows["/patients"] = [patient_row(1, 1), patient_row(2, 1)]
    with make_client(server, mode="ledger") as client:
        assert client.choose_ledger_path() == LEDGER_PATH_REST
        assert client.missing_endpoint == f"HTTP {status}"
        assert client.missing_permission is None
        estimate = client.ledger_cost_estimate()
    assert estimate["missing_endpoint"] == f"HTTP {status}"
    assert "2 requests of /adjustments" in estimate["full_detail"]


def test_a_wrong_key_is_an_error_not_a_fallback(server: FakeOpenDental) -> None:
    server.short_query = Reply(status=401, body=b'"Invalid authorization."')
    with make_client(server, mode="ledger") as client, pytest.raises(AuthenticationError) as e:
        client.choose_ledger_path()
    assert "authentication failed" in str(e.value)


def test_a_failing_server_is_an_error_not_a_fallback(server: FakeOpenDental) -> None:
    server.short_query = Reply(status=503, body=b'"Down."')
    with make_client(server, mode="ledger", max_retries=1) as client, pytest.raises(
        TransientSourceError
    ):
        client.choose_ledger_path()
