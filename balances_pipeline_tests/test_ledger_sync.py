"""Ledger mode end to end on the simulator: agreement with the PMS's own aging, incremental
syncs in proportion to the change, deletions caught by the full refresh, history."""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.pipeline.errors import SyncFailed
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import Faults, SimPractice, SimulatorServer
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    write_practices_file,
)
from balances_pipeline_tests.conftest import warehouse_query as query
from balances_pipeline_tests.independent_aging import age_accounts

# Each test runs in both layouts: on this machine, and the warehouse on DuckLake.
pytestmark = pytest.mark.usefixtures("both_layouts")

D = Decimal
FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"


@pytest.fixture
def two_modes(tmp_path, balances_home, monkeypatch):
    """The same seeded practice served twice: one synced in ledger mode, one from the report."""
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev")
    monkeypatch.setenv("TEST_LEDGER_DENTAL_CUSTOMER_KEY", "k-ledger")
    monkeypatch.setenv("TEST_REPORT_DENTAL_CUSTOMER_KEY", "k-report")
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    today = date(2026, 11, 30)
    # The ledger practice's key has the Queries permission: ledger mode reads ShortQuery
    # (test_ledger_paths.py covers the REST fallback on the same data).
    sims = [SimPractice("ledger_dental", "k-ledger", accounts=400, seed=9, today=today,
                        queries_permission=True),
            SimPractice("report_dental", "k-report", accounts=400, seed=9, today=today)]
    with SimulatorServer(sims, "dev") as server:
        path = write_practices_file(tmp_path / "p.yaml", [
            practice_entry("ledger_dental", server.url, sync={"frequency": "hourly"},
                           source={"mode": "ledger"}),
            practice_entry("report_dental", server.url),
        ])
        yield server, load_practices(path)


def od_buckets(practice_id: str) -> dict[str, tuple]:
    """Open Dental's four buckets (a credit balance is a negative Bal_0_30)."""
    return {row[0]: row[1:] for row in query(
        "SELECT account_id,"
        " CASE WHEN source_mode = 'ledger' AND balance_total < 0 THEN balance_total"
        "      ELSE bucket_0_30 END, bucket_31_60, bucket_61_90, bucket_over_90, balance_total,"
        " insurance_estimate, writeoff_estimate, patient_portion"
        " FROM account_balances WHERE practice_id = ?", [practice_id])}


def test_ledger_and_aging_report_modes_agree_on_every_account(two_modes) -> None:
    server, practices = two_modes
    ledger = sync_practice(practices.practice("ledger_dental"))
    sync_practice(practices.practice("report_dental"))
    from_ledger, from_report = od_buckets("ledger_dental"), od_buckets("report_dental")
    assert len(from_ledger) > 100 and from_ledger == from_report
    assert ledger.discrepancies == {}  # the reconciliation against the report found nothing
    five = query("SELECT bucket_0_30 + bucket_31_60 + bucket_61_90 + bucket_91_120"
                 " + bucket_over_120, greatest(balance_total, 0), bucket_over_90,"
                 " bucket_91_120 + bucket_over_120 FROM account_balances"
                 " WHERE practice_id = 'ledger_dental'")
    assert all(row[0] == row[1] and row[2] == row[3] for row in five)
    assert query("SELECT count(*) FROM account_balances WHERE practice_id = 'ledger_dental'"
                 " AND days_outstanding IS NULL AND balance_total > 0") == [(0,)]


def report_buckets(server: SimulatorServer, practice_id: str) -> dict[str, tuple]:
    """The simulator's own aging report of its whole ledger: what a full sync must give."""
    return {
        str(row["PatNum"]): (row["Bal_0_30"], row["Bal_31_60"], row["Bal_61_90"],
                             row["BalOver90"], row["BalTotal"], row["InsPayEst"],
                             row["InsWoEst"], row["PatientPortion"])
        for row in server.aging_report(practice_id, date(2026, 11, 30))
    }


def test_incremental_requests_follow_the_change_and_equal_a_full_sync(two_modes) -> None:
    server, practices = two_modes
    practice = practices.practice("ledger_dental")
    full = sync_practice(practice)
    totals_before = dict(query("SELECT account_id, balance_total FROM account_balances"
                               " WHERE practice_id = 'ledger_dental'"))
    account = next(a for a, total in sorted(totals_before.items()) if total > 50)
    ledger = server.ledger("ledger_dental")
    ledger.add_row("paysplits", {"PatNum": int(account), "SplitAmt": D("50.00"),
                                 "DatePay": "2026-11-28"})
    ledger.add_row("adjustments", {"PatNum": int(account), "AdjAmt": D("12.34"),
                                   "AdjDate": "2026-11-28"})
    server.reset_request_log()
    incremental = sync_practice(practice)
    assert incremental.mode == "incremental"
    # The server's clock (SELECT NOW()), then one ShortQuery page per ledger table,
    # whatever the practice's size.
    assert len(server.requests) == 6
    assert {r.endpoint for r in server.requests} == {"queries/ShortQuery"}
    assert full.counts.requests > 5 * 10
    totals_after = dict(query("SELECT account_id, balance_total FROM account_balances"
                              " WHERE practice_id = 'ledger_dental'"))
    assert totals_after[account] == totals_before[account] - D("50.00") + D("12.34")
    assert od_buckets("ledger_dental") == report_buckets(server, "ledger_dental")


def test_a_deleted_row_goes_at_the_next_full_refresh(two_modes, monkeypatch) -> None:
    server, practices = two_modes
    practice = practices.practice("ledger_dental")
    sync_practice(practice)
    ledger = server.ledger("ledger_dental")
    [(account, total)] = query(
        "SELECT account_id, balance_total FROM account_balances WHERE practice_id ="
        " 'ledger_dental' AND balance_total > 0 ORDER BY account_id LIMIT 1")
    family = {row["PatNum"] for row in ledger.patients if row["Guarantor"] == int(account)}
    split = next(row for row in ledger.paysplits
                 if row["PatNum"] in family and row["SplitAmt"] > 0)
    ledger.delete_row("paysplits", split["SplitNum"])
    incremental = sync_practice(practice)
    assert incremental.mode == "incremental"
    assert dict(od_buckets("ledger_dental"))[account][4] == total  # not seen yet
    monkeypatch.setenv("BALANCES_AS_OF", "2026-12-01")  # the next local day: a full refresh
    refreshed = sync_practice(practice)
    assert refreshed.mode == "full"
    assert od_buckets("ledger_dental") == {
        str(row["PatNum"]): (row["Bal_0_30"], row["Bal_31_60"], row["Bal_61_90"],
                             row["BalOver90"], row["BalTotal"], row["InsPayEst"],
                             row["InsWoEst"], row["PatientPortion"])
        for row in server.aging_report("ledger_dental", date(2026, 12, 1))
    }
    assert refreshed.discrepancies == {}
    assert od_buckets("ledger_dental")[account][4] != total


def test_history_keeps_one_row_per_account_and_day(two_modes, monkeypatch) -> None:
    server, practices = two_modes
    practice = practices.practice("ledger_dental")
    sync_practice(practice)
    sync_practice(practice)  # the same day again: replaces that day
    monkeypatch.setenv("BALANCES_AS_OF", "2026-12-01")
    sync_practice(practice)
    rows = query("SELECT snapshot_date, count(*), count(DISTINCT account_id)"
                 " FROM balance_history WHERE practice_id = 'ledger_dental' GROUP BY 1 ORDER BY 1")
    assert [row[0] for row in rows] == [date(2026, 11, 30), date(2026, 12, 1)]
    assert all(row[1] == row[2] for row in rows)


def test_history_retention(two_modes, monkeypatch) -> None:
    _, practices = two_modes
    practice = practices.practice("report_dental").model_copy(update={"history_days": 2})
    for day in ("2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29"):
        monkeypatch.setenv("BALANCES_AS_OF", day)
        sync_practice(practice)
    kept = [row[0] for row in query("SELECT DISTINCT snapshot_date FROM balance_history"
                                    " ORDER BY 1")]
    assert kept == [date(2026, 11, 27), date(2026, 11, 28), date(2026, 11, 29)]


@pytest.mark.parametrize("as_of", ["2026-11-30", "2027-02-15"])
def test_the_third_party_ledger_equals_an_independent_computation(
    as_of, tmp_path, balances_home, monkeypatch
) -> None:
    tables = json.loads(gzip.decompress(FIXTURE.read_bytes()))["tables"]
    expected = age_accounts(tables, date.fromisoformat(as_of))
    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev")
    monkeypatch.setenv("TEST_OMAHA_DENTAL_CUSTOMER_KEY", "cust")
    monkeypatch.setenv("BALANCES_AS_OF", as_of)
    sim = SimPractice("omaha_dental", "cust", dataset=FIXTURE, today=date(2026, 11, 29))
    with SimulatorServer([sim], "dev") as server:
        path = write_practices_file(tmp_path / "p.yaml", [
            practice_entry("omaha_dental", server.url, source={"mode": "ledger"})])
        outcome = sync_practice(load_practices(path).practice("omaha_dental"))
    columns = ["bucket_0_30", "bucket_31_60", "bucket_61_90", "bucket_91_120", "bucket_over_120",
               "balance_total", "insurance_estimate", "writeoff_estimate", "patient_portion",
               "days_outstanding"]
    actual = {int(row[0]): dict(zip(columns, row[1:], strict=True)) for row in query(
        f"SELECT account_id, {', '.join(columns)} FROM account_balances")}  # noqa: S608
    assert set(actual) == set(expected) and len(actual) > 100
    for family, figures in expected.items():
        assert actual[family] == {c: figures[c] for c in columns}, family
    assert outcome.discrepancies == {}
    assert timedelta(0) <= outcome.finished_at - outcome.started_at


def test_ledger_rows_shifting_between_pages_are_never_double_counted(
    two_modes, monkeypatch
) -> None:
    server, practices = two_modes
    practice = practices.practice("ledger_dental")
    sync_practice(practice)
    before = od_buckets("ledger_dental")
    server.set_faults("ledger_dental", Faults(duplicate_rows=True))
    monkeypatch.setenv("BALANCES_AS_OF", "2026-12-01")  # a full refresh: many pages
    with pytest.raises(SyncFailed, match="staged twice in stg_"):
        sync_practice(practice)
    assert od_buckets("ledger_dental") == before


def test_only_account_holders_names_are_kept(two_modes) -> None:
    server, practices = two_modes
    sync_practice(practices.practice("ledger_dental"))
    ledger_file = layout().pipeline_dir / "ledger" / "ledger_dental.duckdb"
    con = duckdb.connect(str(ledger_file), read_only=True)
    try:
        named = con.execute(
            "SELECT count(*) FILTER (WHERE display_name IS NOT NULL AND pat_num <> guarantor_id),"
            " count(*) FILTER (WHERE display_name IS NOT NULL), count(*) FROM ledger_patients"
        ).fetchall()[0]
    finally:
        con.close()
    dependents_named, named_total, patients = named
    assert dependents_named == 0 and 0 < named_total < patients
    assert not list((layout().staging_dir("ledger_dental")).glob("*.duckdb"))
