"""FHIR practices synced through the pipeline against the bundled simulator over HTTP:
exact to the cent against an independent witness (the simulator's Open Dental aging report
of the same ledger), SMART Backend Services with RS384 and ES384 keys, Bulk `$export`,
and incremental `_lastUpdated` reads that cost what changed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from balances_pipeline.config import load_practices
from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline_tests.conftest import sync_practice, write_practices_file
from balances_pipeline_tests.conftest import warehouse_query as query

TODAY = date(2026, 11, 30)
SIM = "peds_ehr"
CLIENT = "balances-test-client"


def key_pair(private_key) -> tuple[str, str]:
    private = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def ehr(tmp_path, balances_home, monkeypatch):
    rsa_private, rsa_public = key_pair(rsa.generate_private_key(public_exponent=65537,
                                                                key_size=2048))
    ec_private, ec_public = key_pair(ec.generate_private_key(ec.SECP384R1()))
    monkeypatch.setenv("PEDS_RSA_KEY", rsa_private)
    monkeypatch.setenv("PEDS_EC_KEY", ec_private)
    monkeypatch.setenv("BALANCES_AS_OF", TODAY.isoformat())
    simulated = SimPractice(SIM, None, accounts=160, seed=31, today=TODAY,
                            timezone="America/New_York", fhir_client_id=CLIENT,
                            fhir_public_key_pem=rsa_public + ec_public,
                            fhir_bulk_retry_after_seconds=0, fhir_bulk_file_accounts=40)
    with SimulatorServer([simulated], developer_key="unused") as server:
        base = server.fhir_url(SIM)

        def fhir(practice_id: str, key_env: str, **source) -> dict:
            return {"id": practice_id, "name": practice_id.title(),
                    "timezone": "America/New_York", "sync": {"frequency": "hourly"},
                    "source": {"type": "fhir", "base_url": base, "auth": "smart_backend",
                               "client_id": CLIENT, "private_key_env": key_env, **source}}

        path = write_practices_file(tmp_path / "practices.yaml", [
            fhir("peds_search", "PEDS_EC_KEY"),
            fhir("peds_bulk", "PEDS_RSA_KEY", bulk_group_id="all"),
            {**fhir("peds_r5", "PEDS_RSA_KEY"), "sync": {"frequency": "daily"}},
        ])
        practices = load_practices(path)
        yield server, practices


def published(practice_id: str) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in query(
        "SELECT account_id, account_name, bucket_0_30, bucket_31_60, bucket_61_90,"
        " bucket_over_90, balance_total, insurance_estimate, patient_portion, source_mode"
        " FROM account_balances WHERE practice_id = ?", [practice_id])}


def witness(server: SimulatorServer, source_mode: str) -> dict[str, tuple]:
    """What the published balances must be, from the simulator's Open Dental aging report
    of the same ledger (Bal_* and InsPayEst), the names from its FHIR accounts. An account
    reporting totals only counts all of it as the patient's."""
    accounts = server.fhir_accounts(SIM)
    expected = {}
    for row in server.aging_report(SIM, TODAY):
        account = accounts[str(row["PatNum"])]
        insurance = row["InsPayEst"] if account.split else Decimal("0.00")
        expected[account.id] = (
            account.name, row["Bal_0_30"], row["Bal_31_60"], row["Bal_61_90"],
            row["BalOver90"], row["BalTotal"], insurance, row["BalTotal"] - insurance,
            source_mode,
        )
    return expected


def test_search_and_bulk_are_exact_to_the_cent(ehr) -> None:
    server, practices = ehr
    expected = witness(server, "fhir")
    assert len(expected) > 40
    assert any(not a.split for a in server.fhir_accounts(SIM).values() if a.has_balance)
    search = sync_practice(practices.practice("peds_search"))
    assert published("peds_search") == expected
    bulk = sync_practice(practices.practice("peds_bulk"))
    assert published("peds_bulk") == witness(server, "fhir_bulk")
    assert search.discrepancies.get("no_patient_insurance_split", 0) == sum(
        1 for a in server.fhir_accounts(SIM).values() if a.has_balance and not a.split)
    files = [r for r in server.requests if r.endpoint == "fhir/bulk/file"]
    assert len(files) >= 2  # the manifest's NDJSON files, one request each
    runs = query("SELECT practice_id, status, source_mode FROM sync_runs ORDER BY 1")
    assert runs == [("peds_bulk", "success", "fhir_bulk"), ("peds_search", "success", "fhir")]
    assert bulk.counts.requests >= 4  # token, kick-off, polls, files


def test_r5_native_balances_are_the_same(ehr, tmp_path, monkeypatch) -> None:
    server, _ = ehr
    entry = {"id": "peds_r5", "name": "Peds R5", "timezone": "America/New_York",
             "source": {"type": "fhir", "base_url": server.fhir_url(SIM, "r5"),
                        "auth": "smart_backend", "client_id": CLIENT,
                        "private_key_env": "PEDS_RSA_KEY"}}
    practices = load_practices(write_practices_file(tmp_path / "r5.yaml", [entry]))
    sync_practice(practices.practice("peds_r5"))
    assert published("peds_r5") == witness(server, "fhir")


def test_an_incremental_reads_what_changed_and_drops_what_left(ehr) -> None:
    server, practices = ehr
    practice = practices.practice("peds_search")
    full = sync_practice(practice)
    before = published("peds_search")
    ledger = server.ledger(SIM)
    paid = next(a for a, row in sorted(before.items()) if row[5] > Decimal("60"))
    # Paid off with no insurance pending: nothing left to report (with insurance pending
    # the account would still list its insurance and a negative patient entry).
    cleared = next(a for a, row in sorted(before.items())
                   if row[5] > 0 and row[6] == 0 and a != paid)
    ledger.add_row("paysplits", {"PatNum": int(paid), "SplitAmt": Decimal("20.00"),
                                 "DatePay": TODAY.isoformat()})
    ledger.add_row("paysplits", {"PatNum": int(cleared), "SplitAmt": before[cleared][5],
                                 "DatePay": TODAY.isoformat()})
    server.reset_request_log()

    incremental = sync_practice(practice)

    assert incremental.mode == "incremental"
    account_requests = [r for r in server.requests if r.endpoint == "fhir/r4/Account"]
    assert len(account_requests) == 1 < full.counts.requests
    assert incremental.counts.rows_extracted <= 3
    after = published("peds_search")
    assert cleared not in after  # paid off: no balance, so no longer listed
    assert after[paid][5] == before[paid][5] - Decimal("20.00")
    assert after == witness(server, "fhir")
