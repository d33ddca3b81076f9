"""FHIR connector: Bulk Data `$export` (kick-off, polling with Retry-After, the manifest,
NDJSON files streamed in pages)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from balances_pipeline.sources.errors import SourceError, TransientSourceError
from balances_pipeline.sources.fhir import bulk
from balances_pipeline_tests.fhir_fake import (
    FakeFhir,
    Reply,
    account,
    dumps,
    fhir_fixture,  # noqa: F401
    make_client,
    outcome,
    patient,
    read_all,
)


@pytest.fixture(name="sleeps")
def sleeps_fixture(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(bulk, "_sleep", waited.append)
    return waited


def accounts(count: int, **kwargs: object) -> list[dict]:
    return [account(f"b{n}", [("patient", "current", f"{n}.25"), ("insurance", "90", "1")],
                    **kwargs) for n in range(count)]  # type: ignore[arg-type]


def test_export_polled_then_two_files_streamed(fhir: FakeFhir, sleeps: list[float],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "BULK_PAGE_ROWS", 4)
    fhir.accounts = accounts(11, display="Bulk, Name")
    fhir.bulk_polls, fhir.bulk_retry_after, fhir.bulk_files = 2, "3", 2
    with make_client(fhir, bulk_group_id="all-patients") as client:
        iterators = client.account_balance_pages(None)
        assert len(iterators) == 2
        pages = [page for pages in iterators for page in pages]
        assert client.facts().read_path == "bulk $export"
        assert client.server_clock is not None
        stats = client.stats
    assert sleeps == [3.0, 3.0]  # Retry-After honoured
    rows = [row for page in pages for row in page.rows]
    assert sorted(row.account_id for row in rows) == sorted(f"b{n}" for n in range(11))
    assert [len(page.rows) for page in pages] == [4, 2, 4, 1]  # 6 and 5 lines
    assert all(row.account_name == "Bulk, Name" for row in rows)
    assert {row.account_id: row.bucket_0_30 for row in rows}["b7"] == Decimal("7.25")
    (kickoff,) = fhir.requests_to("kickoff")
    assert kickoff.path == "/fhir/Group/all-patients/$export"
    assert kickoff.query == {"_type": ["Account,Patient"]}
    assert kickoff.headers["prefer"] == "respond-async"
    assert kickoff.headers["accept"] == "application/fhir+json"
    assert len(fhir.requests_to("status")) == 3
    files = fhir.requests_to("file")
    assert len(files) == 2 and all(f.authorization for f in files)
    # kick-off, 3 polls, 2 files, discovery and token
    assert stats.requests == 8 and stats.pages == 4


def test_names_come_from_the_exported_patients(fhir: FakeFhir, sleeps: list[float]) -> None:
    """A guarantor without `display`: the export's Patient file names it (only the name is
    kept: the Patient's birth date and address never leave the connector)."""
    fhir.accounts = [account("a1", [("patient", "current", "5")], patient="p1"),
                     account("a2", [("patient", "30", "7")], patient="p2", display="Shown")]
    fhir.patients = {"p1": patient("p1", "Rivera", "Ana", "Luz")}
    fhir.bulk_polls = 0
    with make_client(fhir, bulk_group_id="g1") as client:
        rows, _ = read_all(client, None)
    assert {row.account_id: row.account_name for row in rows} == {"a1": "Rivera, Ana Luz",
                                                                 "a2": "Shown"}
    assert "1 Main St" not in repr(rows) and "1980" not in repr(rows)


def test_incremental_export_sends_since(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.accounts = [account("old", [("patient", "current", "1")],
                             updated="2026-10-01T00:00:00Z"),
                     account("gone", [("patient", "current", "1")], status="inactive",
                             updated="2026-11-29T09:00:00Z")]
    fhir.bulk_polls = 0
    with make_client(fhir, bulk_group_id="g1") as client:
        rows, _ = read_all(client, datetime(2026, 11, 29, 8, 0))
    (kickoff,) = fhir.requests_to("kickoff")
    assert kickoff.query["_since"] == ["2026-11-29T08:00:00Z"]
    assert [(row.account_id, row.active) for row in rows] == [("gone", False)]


def test_retry_after_http_date_and_default(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.bulk_polls, fhir.bulk_retry_after = 1, None
    with make_client(fhir, bulk_group_id="g1") as client:
        read_all(client)
    assert sleeps == [bulk.DEFAULT_POLL_SECONDS]
    assert bulk.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert bulk.retry_after_seconds("7") == 7.0


def test_poll_bounded_by_bulk_poll_max_seconds(fhir: FakeFhir) -> None:
    fhir.bulk_polls, fhir.bulk_retry_after = 10**6, "0"
    with make_client(fhir, bulk_group_id="g1", bulk_poll_max_seconds=1) as client, \
            pytest.raises(SourceError, match=r"not complete after 1 s \(bulk_poll_max_seconds\)"):
        read_all(client)
    assert len(fhir.requests_to("delete")) == 1  # the export is cancelled


def test_manifest_errors_fail_with_their_outcome(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.bulk_polls = 0
    fhir.accounts = accounts(2)
    fhir.bulk_manifest_extra = {"error": [
        {"type": "OperationOutcome", "url": f"{fhir.url}/bulkfiles/x/error.ndjson"}]}
    # The fake serves error files of any job; its job id is in the status URL.
    fhir._jobs["x"] = {"polls": 0, "accounts": [], "time": "2026-11-29T00:00:00Z"}
    with make_client(fhir, bulk_group_id="g1") as client, \
            pytest.raises(SourceError, match="Group member 17 could not be exported"):
        read_all(client)


def test_file_on_another_host_refused(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.bulk_polls = 0
    fhir.bulk_manifest_extra = {"output": [
        {"type": "Account", "url": "https://storage.example.com/files/1.ndjson"}]}
    with make_client(fhir, bulk_group_id="g1") as client, \
            pytest.raises(SourceError, match="bulk file URL: URL on another"):
        read_all(client)
    assert fhir.requests_to("file") == []


def test_status_url_on_another_host_refused(fhir: FakeFhir) -> None:
    fhir.script["kickoff"] = [Reply(202, headers={
        "Content-Location": "http://localhost:9/status/1"})]
    with make_client(fhir, bulk_group_id="g1") as client, \
            pytest.raises(SourceError, match="bulk status URL"):
        read_all(client)


def test_failed_export_reports_outcome(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.script["status"] = [Reply(400, outcome("Group g1 has no members"))]
    with make_client(fhir, bulk_group_id="g1") as client, \
            pytest.raises(SourceError, match="bulk status: HTTP 400: Group g1 has no members"):
        read_all(client)


def test_files_without_access_token(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.bulk_polls, fhir.bulk_requires_token = 0, False
    fhir.accounts = accounts(3)
    with make_client(fhir, bulk_group_id="g1") as client:
        rows, _ = read_all(client)
    assert len(rows) == 3
    assert all(f.authorization is None for f in fhir.requests_to("file"))


def test_file_cut_short_is_transient(fhir: FakeFhir, sleeps: list[float]) -> None:
    fhir.bulk_polls, fhir.bulk_files = 0, 1
    fhir.accounts = accounts(3)
    lines = b"".join(dumps(a) + b"\n" for a in fhir.accounts)
    fhir.script["file"] = [Reply(200, lines[:-40], truncate=True)]
    with make_client(fhir, bulk_group_id="g1") as client, \
            pytest.raises(TransientSourceError, match="bulk file 1: cut short"):
        read_all(client)
