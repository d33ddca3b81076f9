"""A FHIR practice and a file-drop practice through Dagster end to end: the `dagster asset
materialize` CLI in a subprocess, against the simulator's FHIR endpoint over HTTP and an
aging export in a folder; their balances exact to the cent and their collection targets
those of the rule, computed here from the simulator's own figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline.simulator.aging_files import (
    practice_aging_rows,
    source_block,
    write_aging_file,
)
from balances_pipeline_tests.conftest import warehouse_query as query
from balances_pipeline_tests.conftest import write_practices_file

DAGSTER = str(Path(sys.executable).parent / "dagster")
TODAY = date(2026, 11, 30)
RULE = {"id": "statement", "action": "reminder", "min_patient_balance": "25.00",
        "min_days_outstanding": 31}


def private_and_public() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def deployment(tmp_path, balances_home, monkeypatch):
    private, public = private_and_public()
    monkeypatch.setenv("PEDS_FHIR_KEY", private)
    monkeypatch.setenv("BALANCES_AS_OF", TODAY.isoformat())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    folder = tmp_path / "drops"
    folder.mkdir()
    export = practice_aging_rows(SimPractice("sunrise", None, accounts=80, seed=61), TODAY)
    path = write_aging_file(export, folder, TODAY)
    os.utime(path, (time.time() - 3600,) * 2)
    ehr = SimPractice("peds", None, accounts=120, seed=62, today=TODAY,
                      fhir_client_id="e2e-client", fhir_public_key_pem=public)
    with SimulatorServer([ehr], developer_key="unused") as server:
        practices = write_practices_file(tmp_path / "practices.yaml", [
            {"id": "peds", "name": "Peds", "timezone": "America/Chicago",
             "source": {"type": "fhir", "base_url": server.fhir_url("peds"),
                        "client_id": "e2e-client", "private_key_env": "PEDS_FHIR_KEY"},
             "collection_rules": [RULE]},
            {"id": "sunrise", "name": "Sunrise", "timezone": "America/Chicago",
             "source": source_block(folder), "collection_rules": [RULE]},
        ])
        monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(practices))
        yield server, export


def materialize(practice_id: str) -> None:
    done = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions",
         "--select", "*", "--partition", practice_id],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def figures(practice_id: str) -> dict[str, tuple[Decimal, Decimal]]:
    return {row[0]: (row[1], row[2]) for row in query(
        "SELECT account_id, balance_total, patient_portion FROM account_balances"
        " WHERE practice_id = ?", [practice_id])}


def targets(practice_id: str) -> set[str]:
    return {row[0] for row in query(
        "SELECT account_id FROM collection_targets WHERE practice_id = ? AND rule_id = ?",
        [practice_id, RULE["id"]])}


def expected_targets(rows: list[tuple[Decimal, Decimal, int | None]], ids: list[str]
                     ) -> set[str]:
    return {account for account, (patient, days) in zip(ids, rows, strict=True)
            if patient >= Decimal(RULE["min_patient_balance"]) and days is not None
            and days >= RULE["min_days_outstanding"]}


def oldest(buckets: tuple[Decimal, ...], lower_bounds: tuple[int, ...], nonzero: bool
           ) -> int | None:
    found = None
    for amount, bound in zip(buckets, lower_bounds, strict=True):
        if (amount != 0) if nonzero else (amount > 0):
            found = bound
    return found


def test_a_fhir_and_a_file_drop_practice_through_dagster(deployment) -> None:
    server, export = deployment
    materialize("peds")
    materialize("sunrise")

    accounts = {a.id: a for a in server.fhir_accounts("peds").values() if a.has_balance}
    expected_fhir = {
        a.id: (a.balance_total,
               sum(a.patient, Decimal("0.00")) if a.split else a.balance_total)
        for a in accounts.values()
    }
    assert figures("peds") == expected_fhir
    expected_file = {str(r["PatNum"]): (r["BalTotal"],
                                        r["BalTotal"] - r["InsPayEst"] - r["InsWoEst"])
                     for r in export}
    assert figures("sunrise") == expected_file

    fhir_days = [oldest(a.total, (0, 31, 61, 91, 121), nonzero=True)
                 for a in accounts.values()]
    assert targets("peds") == expected_targets(
        [(expected_fhir[a.id][1], days) for a, days in zip(accounts.values(), fhir_days,
                                                            strict=True)],
        list(accounts))
    file_days = [oldest((r["Bal_0_30"], r["Bal_31_60"], r["Bal_61_90"], r["BalOver90"]),
                        (0, 31, 61, 91), nonzero=False) if r["BalTotal"] > 0 else None
                 for r in export]
    assert targets("sunrise") == expected_targets(
        [(expected_file[str(r["PatNum"])][1], days) for r, days in zip(export, file_days,
                                                                       strict=True)],
        [str(r["PatNum"]) for r in export])
    assert targets("peds") and targets("sunrise")
    runs = query("SELECT practice_id, status, source_mode FROM sync_runs ORDER BY 1")
    assert runs == [("peds", "success", "fhir"), ("sunrise", "success", "file_drop")]
