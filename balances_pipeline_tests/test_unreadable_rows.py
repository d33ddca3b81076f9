"""No override ends because of a sync that could not read its account: a rejected row whose
account cannot be identified keeps every override on an account missing from the sync
(and, in ledger mode, on any account); a rejected row of a known account keeps that
account's override. Both source modes, against a scripted Open Dental server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.staff.overrides import build_request, set_overrides
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

PRACTICE = "unread_dental"
AGING = "/reports/Aging"


@pytest.fixture
def practices(server: FakeOpenDental, tmp_path, balances_home, monkeypatch):
    monkeypatch.setenv(DEVELOPER_KEY_ENV, DEV_KEY)
    monkeypatch.setenv(f"TEST_{PRACTICE.upper()}_CUSTOMER_KEY", CUST_KEY)
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")

    def load(**source):
        path = write_practices_file(tmp_path / "practices.yaml",
                                    [practice_entry(PRACTICE, server.url, source=source)])
        monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(path))
        return load_practices(path)

    return load


def override(practices, account_id: str) -> str:
    request = build_request(practices, PRACTICE, account_id, "1.00", None, "payment plan",
                            "alice")
    [result] = set_overrides(layout(), practices, [request])
    return result.override_id


def active() -> set[str]:
    return {row["account_id"] for row in query("SELECT account_id FROM active_overrides")}


def ended() -> list[tuple[str, str]]:
    return [(row["account_id"], row["event"]) for row in query(
        "SELECT account_id, event FROM override_events WHERE event IN ('expired', 'superseded')"
        " ORDER BY sequence")]


def shown(account_id: str) -> list[dict]:
    return query("SELECT is_overridden, patient_portion FROM outstanding_balances"
                 " WHERE account_id = ?", [account_id])


# -- aging_report mode --------------------------------------------------------------------


def report(*, unreadable: dict[int, object] | None = None, skip: tuple[int, ...] = (),
           **changed: dict) -> list:
    """Aging rows of accounts 5001..5200; `unreadable` replaces a row's PatNum."""
    rows = []
    for pat_num in range(5001, 5201):
        if pat_num in skip:
            continue
        row = aging_row(pat_num, **changed.get(str(pat_num), {}))
        if unreadable and pat_num in unreadable:
            row["PatNum"] = unreadable[pat_num]
        rows.append(row)
    return rows


def test_an_unreadable_account_id_does_not_expire_its_override(server, practices) -> None:
    files = practices()
    server.rows[AGING] = report()
    sync_practice(files.practice(PRACTICE))
    override(files, "5020")

    server.rows[AGING] = report(unreadable={5020: "5020x"})
    outcome = sync_practice(files.practice(PRACTICE))
    assert outcome.counts.rows_rejected == 1
    [rejected] = query("SELECT account_id, row_key FROM rejected_rows")
    assert rejected == {"account_id": None, "row_key": None}
    assert ended() == [] and active() == {"5020"}
    assert shown("5020") == []  # kept, but not applied: the account has no row this sync

    server.rows[AGING] = report()  # readable again: the override applies again
    sync_practice(files.practice(PRACTICE))
    assert shown("5020") == [{"is_overridden": True, "patient_portion": Decimal("1.00")}]
    assert ended() == []


def test_a_row_that_is_not_an_object_keeps_every_missing_accounts_override(
    server, practices
) -> None:
    files = practices()
    server.rows[AGING] = report()
    sync_practice(files.practice(PRACTICE))
    override(files, "5020")
    server.rows[AGING] = [*report(skip=(5020,)), ["not", "an", "object"]]
    sync_practice(files.practice(PRACTICE))
    assert ended() == [] and active() == {"5020"}


def test_a_rejected_row_of_a_known_account_keeps_its_override(server, practices) -> None:
    files = practices()
    server.rows[AGING] = report()
    sync_practice(files.practice(PRACTICE))
    override(files, "5020")
    server.rows[AGING] = report(**{"5020": {"Bal_0_30": "12.3.4", "PatientPortion": 1}})
    sync_practice(files.practice(PRACTICE))
    assert query("SELECT account_id FROM rejected_rows") == [{"account_id": "5020"}]
    assert ended() == [] and active() == {"5020"}


def test_without_unreadable_rows_a_missing_account_still_expires(server, practices) -> None:
    files = practices()
    server.rows[AGING] = report()
    sync_practice(files.practice(PRACTICE))
    override(files, "5020")
    override(files, "5030")
    # Aging report: one row per account, so an unreadable row can only hide an account;
    # a listed account that changed is superseded as before.
    server.rows[AGING] = report(unreadable={5100: "x"}, **{"5030": {"InsPayEst": 40.0}})
    sync_practice(files.practice(PRACTICE))
    assert ended() == [("5030", "superseded")] and active() == {"5020"}
    server.rows[AGING] = report(skip=(5020,))
    sync_practice(files.practice(PRACTICE))
    assert ended() == [("5030", "superseded"), ("5020", "expired")]


# -- ledger mode --------------------------------------------------------------------------

# Guarantors 5001..5250, each its own patient; 6040 is a dependent of 5040 (5040's only
# charges are 6040's); 5030 has two procedures. No payments: every account owes its fees.
GUARANTORS = range(5001, 5251)


def procedure(proc_num: int, pat_num: object, fee: object = 100.0) -> dict:
    return {"ProcNum": proc_num, "PatNum": pat_num, "ProcDate": "2026-11-01", "ProcFee": fee,
            "UnitQty": 1, "BaseUnits": 0, "ProcStatus": "C",
            "DateTStamp": "2026-11-01 10:00:00"}


def ledger(*, patnum: dict[int, object] | None = None, fee: dict[int, object] | None = None,
           skip: tuple[int, ...] = ()) -> dict[str, list]:
    """The ledger endpoints' rows; `patnum`/`fee` replace a procedure's PatNum/ProcFee (by
    ProcNum: a guarantor's procedure has its PatNum; 1030 is 5030's second; 6040's is
    16040)."""
    patients = [patient_row(g, g) for g in GUARANTORS] + [patient_row(6040, 5040)]
    procs = [procedure(g, g) for g in GUARANTORS if g != 5040]
    procs += [procedure(1030, 5030, 50.0), procedure(16040, 6040)]
    for row in procs:
        if patnum and row["ProcNum"] in patnum:
            row["PatNum"] = patnum[row["ProcNum"]]
        if fee and row["ProcNum"] in fee:
            row["ProcFee"] = fee[row["ProcNum"]]
    procs = [row for row in procs if row["ProcNum"] not in skip]
    return {"/patients": patients, "/procedurelogs": procs, "/claimprocs": [],
            "/paysplits": [], "/adjustments": [], AGING: []}


@pytest.fixture
def ledger_practice(server, practices):
    files = practices(mode="ledger")  # daily: every sync is a full refresh
    server.rows.update(ledger())
    first = sync_practice(files.practice(PRACTICE))
    assert first.mode == "full" and first.accounts == len(GUARANTORS)
    for account_id in ("5020", "5030", "5040"):
        override(files, account_id)
    return files


def test_ledger_an_unreadable_patient_keeps_every_override(server, ledger_practice) -> None:
    files = ledger_practice
    # 5020's only charge and one of 5030's two name a patient that cannot be read: 5020 is
    # missing from the sync, 5030 has a smaller balance; neither is known to be final.
    server.rows.update(ledger(patnum={5020: "5020x", 1030: "abc"}))
    outcome = sync_practice(files.practice(PRACTICE))
    assert outcome.counts.rows_rejected == 2
    assert shown("5020") == []
    assert ended() == [] and active() == {"5020", "5030", "5040"}
    assert shown("5030") == [{"is_overridden": True, "patient_portion": Decimal("1.00")}]

    server.rows.update(ledger())  # read cleanly again: nothing was lost
    sync_practice(files.practice(PRACTICE))
    assert ended() == [] and all(shown(a)[0]["is_overridden"] for a in ("5020", "5030"))


def test_ledger_a_dependents_rejected_row_keeps_the_guarantors_override(
    server, ledger_practice
) -> None:
    files = ledger_practice
    # 6040's procedure (its guarantor 5040's only charge) is rejected: the reject names
    # patient 6040, and the account it touches is 5040's.
    server.rows.update(ledger(fee={16040: "12.3.4"}))
    sync_practice(files.practice(PRACTICE))
    assert query("SELECT account_id FROM rejected_rows") == [{"account_id": "6040"}]
    assert shown("5040") == []
    assert ended() == [] and active() == {"5020", "5030", "5040"}


def test_ledger_clean_syncs_still_expire_and_supersede(server, ledger_practice) -> None:
    files = ledger_practice
    server.rows.update(ledger(skip=(5020, 1030)))
    sync_practice(files.practice(PRACTICE))
    assert sorted(ended()) == [("5020", "expired"), ("5030", "superseded")]
