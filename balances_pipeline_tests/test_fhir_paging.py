"""FHIR connector: searchset paging, incremental reads, server errors and schema drift."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from balances_pipeline.sources.errors import (
    MalformedResponseError,
    SchemaDriftError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline_tests.fhir_fake import (
    FakeFhir,
    Reply,
    account,
    dumps,
    fhir_fixture,  # noqa: F401
    make_client,
    outcome,
    read_all,
)


def accounts(count: int, **kwargs: object) -> list[dict]:
    return [account(f"a{n}", [("patient", "current", f"{n + 1}.00")], **kwargs)  # type: ignore[arg-type]
            for n in range(count)]


def test_many_next_links_followed(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(23)
    with make_client(fhir, page_size=4) as client:
        pages = list(client.account_balance_pages(None)[0])
        assert client.facts().read_path == "search"
        assert client.stats.pages == 6
    assert [page.offset for page in pages] == [0, 4, 8, 12, 16, 20]
    ids = [row.account_id for page in pages for row in page.rows]
    assert ids == [f"a{n}" for n in range(23)]
    searches = fhir.requests_to("account")
    assert len(searches) == 6
    first = searches[0].query
    assert first["_count"] == ["4"] and first["status"] == ["active"]
    assert "_lastUpdated" not in first
    assert all(s.headers["accept"] == "application/fhir+json" for s in searches)


def test_next_loop_detected(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(10)
    first_next: list[str] = []

    def loop(page: int, url: str) -> str:
        if page == 1:
            first_next.append(url)
        return first_next[0]  # page 2 points back at page 2

    fhir.next_link = loop
    with make_client(fhir, page_size=3) as client, \
            pytest.raises(SourceError, match="paging loop"):
        read_all(client)
    assert len(fhir.requests_to("account")) == 2


def test_next_link_to_another_host_refused(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(5)
    fhir.next_link = lambda page, url: url.replace("127.0.0.1", "localhost")
    with make_client(fhir, page_size=2) as client, \
            pytest.raises(SourceError, match="another scheme, host or port"):
        read_all(client)
    assert len(fhir.requests_to("account")) == 1


def test_next_link_to_another_scheme_refused(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(5)
    fhir.next_link = lambda page, url: url.replace("http://", "https://")
    with make_client(fhir, page_size=2) as client, pytest.raises(SourceError, match="refused"):
        read_all(client)


def test_incremental_read_sends_last_updated_and_marks_leavers(fhir: FakeFhir) -> None:
    fhir.accounts = [
        account("old", [("patient", "current", "5")], updated="2026-11-01T00:00:00Z"),
        account("changed", [("patient", "30", "7.50")], updated="2026-11-29T12:00:00Z"),
        account("closed", [("patient", "30", "7.50")], status="inactive",
                updated="2026-11-29T12:30:00Z"),
        account("paid", [("patient", "30", "0")], updated="2026-11-29T13:00:00Z"),
        account("error", [], status="entered-in-error", updated="2026-11-29T13:00:00Z"),
    ]
    with make_client(fhir) as client:
        rows, rejected = read_all(client, datetime(2026, 11, 29, 11, 50, 30, 999))
    (search,) = fhir.requests_to("account")
    assert search.query["_lastUpdated"] == ["ge2026-11-29T11:50:30Z"]
    assert "status" not in search.query
    assert rejected == []
    got = {row.account_id: row for row in rows}
    assert set(got) == {"changed", "closed", "paid", "error"}
    assert got["changed"].active and got["changed"].bucket_31_60 == Decimal("7.50")
    for leaver in ("closed", "paid", "error"):
        row = got[leaver]
        assert not row.active
        assert row.balance_total == Decimal("0.00") == row.bucket_31_60


def test_full_read_drops_inactive_even_without_status_filter(fhir: FakeFhir) -> None:
    fhir.accounts = [account("on", [("patient", "current", "5")]),
                     account("off", [("patient", "current", "5")], status="inactive")]
    with make_client(fhir, search_status_active=False, include_guarantor=False) as client:
        rows, _ = read_all(client)
    assert [row.account_id for row in rows] == ["on"]
    (search,) = fhir.requests_to("account")
    assert "status" not in search.query and "_include" not in search.query


def test_server_clock_from_first_answer(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(3)
    with make_client(fhir, page_size=2) as client:
        before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        read_all(client)
        after = datetime.now(UTC).replace(tzinfo=None)
    assert client.server_clock is not None
    assert before.replace(second=0) <= client.server_clock <= after


def test_operation_outcome_text_in_errors(fhir: FakeFhir) -> None:
    fhir.script["account"] = [Reply(400, outcome("Unknown search parameter 'foo'\nsecond"))]
    with make_client(fhir) as client, pytest.raises(SourceError) as failure:
        read_all(client)
    message = str(failure.value)
    assert message == ("practice test_fhir: Account search page 1: HTTP 400: Unknown search "
                       "parameter 'foo' second")


def test_details_text_used_without_diagnostics(fhir: FakeFhir) -> None:
    body = dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "too-costly", "details": {"text": "Too many results"}}]})
    fhir.script["account"] = [Reply(422, body)]
    with make_client(fhir) as client, pytest.raises(SourceError, match="Too many results"):
        read_all(client)


def test_server_errors_retried_then_transient(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(2)
    fhir.script["account"] = [Reply(503, outcome("busy"), {"Retry-After": "0"}),
                              Reply(500, outcome("oops"))]
    with make_client(fhir) as client:
        rows, _ = read_all(client)
        assert client.stats.retries == 2
    assert len(rows) == 2
    fhir.script["account"] = [Reply(503, outcome("still busy"))] * 3
    with make_client(fhir, max_retries=2) as client, \
            pytest.raises(TransientSourceError, match="HTTP 503 after 2 retries: still busy"):
        read_all(client)


def test_page_that_is_not_a_bundle_is_schema_drift(fhir: FakeFhir) -> None:
    fhir.script["account"] = [Reply(200, dumps({"resourceType": "Patient", "id": "x"}))]
    with make_client(fhir) as client, pytest.raises(SchemaDriftError, match="not a FHIR Bundle"):
        read_all(client)
    fhir.script["account"] = [Reply(200, b"<html>login</html>")]
    with make_client(fhir) as client, pytest.raises(MalformedResponseError, match="not JSON"):
        read_all(client)


def test_every_account_without_id_is_schema_drift(fhir: FakeFhir) -> None:
    fhir.accounts = [account(None, [("patient", "current", "1")]) for _ in range(3)]
    with make_client(fhir) as client, pytest.raises(SchemaDriftError, match="'id'"):
        read_all(client)


def test_check_connection_counts_only(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(15, display="Secret, Name")
    with make_client(fhir) as client:
        found = client.check_connection()
    assert found["fhir_version"] == "4.0.1"
    assert found["accounts_total"] == 15
    assert found["accounts_first_page"] == 10 and found["more_pages"] is True
    assert found["auth"] == "smart_backend" and found["bulk_export"] == "not configured"
    assert "Secret" not in repr(found)
