"""`max_rejected_fraction` holds per endpoint: the rows of another endpoint (`/patients`
beside the aging report, or the other ledger endpoints) never dilute one endpoint's
rejected rows. Against a scripted Open Dental server."""

from __future__ import annotations

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.pipeline.errors import SyncFailed
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    write_practices_file,
)
from balances_pipeline_tests.conftest import warehouse_dicts as query
from balances_pipeline_tests.opendental_fake import (
    CUST_KEY,
    DEV_KEY,
    FakeOpenDental,
    aging_row,
    patient_row,
    server_fixture,  # noqa: F401 - a pytest fixture
)

PRACTICE = "rules_dental"
AGING = "/reports/Aging"
RULES = [{"id": "remind", "action": "reminder"}]


@pytest.fixture
def practice(server: FakeOpenDental, tmp_path, balances_home, monkeypatch):
    monkeypatch.setenv(DEVELOPER_KEY_ENV, DEV_KEY)
    monkeypatch.setenv(f"TEST_{PRACTICE.upper()}_CUSTOMER_KEY", CUST_KEY)
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")

    def load(**entry):
        path = write_practices_file(tmp_path / "practices.yaml",
                                    [practice_entry(PRACTICE, server.url, **entry)])
        monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(path))
        return load_practices(path).practice(PRACTICE)

    return load


def published() -> list[dict]:
    return query("SELECT account_id, balance_total FROM account_balances ORDER BY account_id")


def statuses() -> list[tuple]:
    return [(r["status"], r["rows_rejected"]) for r in query(
        "SELECT status, rows_rejected FROM sync_runs ORDER BY started_at")]


def aging(count: int, bad: int = 0) -> list[dict]:
    """`count` aging rows, the first `bad` of them with an amount that does not parse."""
    return [aging_row(n, **({"Bal_0_30": "12.3.4"} if n <= bad else {}))
            for n in range(1, count + 1)]


def patients(guarantors: int, total: int, bad: int = 0) -> list[dict]:
    """`total` patients spread over the first `guarantors` accounts."""
    return [patient_row(n, (n - 1) % guarantors + 1,
                        **({"Guarantor": "x"} if n <= bad else {}))
            for n in range(1, total + 1)]


def test_patients_rows_do_not_dilute_the_aging_reports_limit(server, practice) -> None:
    rules = practice(collection_rules=RULES)
    server.rows.update({AGING: aging(109), "/patients": patients(109, 700)})
    sync_practice(rules)
    before = published()
    # 7 of 809 rows in all (0.9%) but 7 of the report's 109 (6.4%).
    server.rows[AGING] = aging(109, bad=7)
    with pytest.raises(SyncFailed) as raised:
        sync_practice(rules)
    assert str(raised.value).startswith(
        f"practice {PRACTICE}: 7 of 109 rows of /reports/Aging rejected (6.4%), more than"
        " max_rejected_fraction 1.0%"
    )
    assert published() == before
    assert statuses() == [("success", 0), ("failed", 7)]


def test_each_endpoint_within_its_limit_passes(server, practice) -> None:
    rules = practice(collection_rules=RULES)
    # 1 of 109 report rows is 0.9%; 7 of 700 patients is 1.0%: both at most 1%.
    server.rows.update({AGING: aging(109, bad=1), "/patients": patients(109, 700, bad=7)})
    outcome = sync_practice(rules)
    assert outcome.accounts == 108 and outcome.counts.rows_rejected == 8


def test_the_patients_endpoint_has_its_own_limit(server, practice) -> None:
    rules = practice(collection_rules=RULES)
    server.rows.update({AGING: aging(400), "/patients": patients(400, 100, bad=2)})
    with pytest.raises(SyncFailed, match=(
        r"2 of 100 rows of /patients rejected \(2\.0%\), more than max_rejected_fraction 1\.0%"
    )):
        sync_practice(rules)


def procedure(proc_num: int, pat_num: int, fee: object = 100.0) -> dict:
    return {"ProcNum": proc_num, "PatNum": pat_num, "ProcDate": "2026-11-01", "ProcFee": fee,
            "UnitQty": 1, "BaseUnits": 0, "ProcStatus": "C",
            "DateTStamp": "2026-11-01 10:00:00"}


def test_ledger_mode_limits_each_ledger_endpoint(server, practice) -> None:
    ledger = practice(source={"mode": "ledger"})
    procedures = [procedure(n, (n - 1) % 400 + 1) for n in range(1, 101)]
    server.rows.update({"/patients": patients(400, 400), "/procedurelogs": procedures,
                        "/claimprocs": [], "/paysplits": [], "/adjustments": [], AGING: []})
    sync_practice(ledger)
    before = published()
    # 3 of 500 ledger rows in all (0.6%) but 3 of the 100 procedures (3.0%).
    for row in procedures[:3]:
        row["ProcFee"] = "12.3.4"
    with pytest.raises(SyncFailed) as raised:
        sync_practice(ledger)
    assert str(raised.value).startswith(
        f"practice {PRACTICE}: 3 of 100 rows of /procedurelogs rejected (3.0%), more than"
        " max_rejected_fraction 1.0%"
    )
    assert published() == before
