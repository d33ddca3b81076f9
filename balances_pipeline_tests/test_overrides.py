"""Manual overrides: every view shows them, syncs keep/supersede/expire them, nothing loses them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from balances_pipeline.config import load_practices
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.defs.staff_jobs import manual_override_job
from balances_pipeline.pipeline.recompute import rebuild_published
from balances_pipeline.settings import Settings
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.simulator import Faults
from balances_pipeline.staff.overrides import (
    OverrideError,
    build_request,
    clear_override,
    read_import_file,
    set_overrides,
)
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_dicts as query

# Each test runs in both layouts: on this machine, and the warehouse on DuckLake.
pytestmark = pytest.mark.usefixtures("both_layouts")

D = Decimal
BALANCES = str(Path(sys.executable).parent / "balances")
PRACTICE = "alpha_dental"


def account(account_id: str) -> dict:
    [row] = query(
        "SELECT * FROM outstanding_balances WHERE practice_id = ? AND account_id = ?",
        [PRACTICE, account_id],
    )
    return row


def working_events() -> list[tuple]:
    with WorkingDatabase(layout()).connect() as con:
        return con.execute("SELECT * FROM override_events ORDER BY sequence").fetchall()


def set_override(simulated, account_id: str, patient: str | None = None,
                 insurance: str | None = None, reason: str = "payment plan", actor: str = "alice"):
    practices = simulated.practices
    request = build_request(practices, PRACTICE, account_id, patient, insurance, reason, actor)
    [result] = set_overrides(layout(), practices, [request])
    return result


@pytest.fixture
def synced(simulated):
    """alpha_dental synced once; an account with a positive patient portion and old buckets."""
    sync_practice(simulated.practice(PRACTICE))
    [row] = query(
        "SELECT account_id FROM account_balances WHERE practice_id = ? AND patient_portion > 100"
        " AND bucket_over_90 > 0 AND insurance_portion = 0 ORDER BY account_id LIMIT 1",
        [PRACTICE],
    )
    return simulated, row["account_id"]


def test_an_override_shows_in_every_view_at_once(synced) -> None:
    simulated, account_id = synced
    before = account(account_id)
    [summary_before] = query("SELECT * FROM aging_summary WHERE practice_id = ?", [PRACTICE])
    result = set_override(simulated, account_id, patient="25.00")

    after = account(account_id)
    assert after["is_overridden"] and after["override_id"] == result.override_id
    assert after["patient_portion"] == D("25.00")
    assert after["synced_patient_portion"] == before["patient_portion"]
    assert after["balance_total"] == D("25.00") + after["insurance_portion"] + (
        after["writeoff_estimate"])
    [summary] = query("SELECT * FROM aging_summary WHERE practice_id = ?", [PRACTICE])
    difference = before["patient_portion"] - D("25.00")
    assert summary["balance_total"] == summary_before["balance_total"] - difference
    assert summary["patient_portion"] == summary_before["patient_portion"] - difference
    assert summary["overridden_account_count"] == 1
    [active] = query("SELECT * FROM active_overrides")
    assert (active["override_id"], active["base_patient_portion"]) == (
        result.override_id, before["patient_portion"]
    )
    assert query("SELECT count(*) AS n FROM account_balances WHERE account_id = ? AND "
                 "patient_portion = ?", [account_id, before["patient_portion"]])[0]["n"] == 1


def test_a_sync_with_the_source_unchanged_keeps_it(synced) -> None:
    simulated, account_id = synced
    result = set_override(simulated, account_id, patient="25.00")
    sync_practice(simulated.practice(PRACTICE))
    after = account(account_id)
    assert after["override_id"] == result.override_id and after["patient_portion"] == D("25.00")
    assert [e["event"] for e in query("SELECT event FROM override_events")] == ["set"]
    assert query("SELECT * FROM override_conflicts") == []


def test_a_changed_account_supersedes_it_and_lists_the_conflict(synced) -> None:
    simulated, account_id = synced
    result = set_override(simulated, account_id, patient="25.00")
    synced_before = account(account_id)["synced_patient_portion"]
    ledger = simulated.server.ledger(PRACTICE)
    today = simulated.server.now(PRACTICE).date().isoformat()
    ledger.add_row("paysplits", {"PatNum": int(account_id), "SplitAmt": D("40.00"),
                                 "DatePay": today})
    sync_practice(simulated.practice(PRACTICE))

    after = account(account_id)
    assert not after["is_overridden"]
    assert after["patient_portion"] == synced_before - D("40.00")
    [conflict] = query("SELECT * FROM override_conflicts")
    assert conflict["override_id"] == result.override_id
    assert conflict["new_patient_portion"] == synced_before - D("40.00")
    assert conflict["base_patient_portion"] == synced_before
    assert [e["event"] for e in query("SELECT event FROM override_events ORDER BY sequence")] == [
        "set", "superseded"
    ]
    assert query("SELECT * FROM active_overrides") == []
    clear_override(layout(), simulated.practices, PRACTICE, account_id, "reviewed", "bob")
    assert query("SELECT * FROM override_conflicts") == []


def test_an_account_paid_off_expires_it(synced) -> None:
    simulated, account_id = synced
    set_override(simulated, account_id, patient="25.00")
    balance = account(account_id)["synced_balance_total"]
    ledger = simulated.server.ledger(PRACTICE)
    today = simulated.server.now(PRACTICE).date().isoformat()
    ledger.add_row("paysplits", {"PatNum": int(account_id), "SplitAmt": balance,
                                 "DatePay": today})
    sync_practice(simulated.practice(PRACTICE))
    assert query("SELECT * FROM outstanding_balances WHERE account_id = ?", [account_id]) == []
    assert [e["event"] for e in query("SELECT event FROM override_events ORDER BY sequence")] == [
        "set", "expired"
    ]
    assert query("SELECT * FROM active_overrides") == []
    assert query("SELECT * FROM override_conflicts") == []


def test_a_second_override_replaces_the_first(synced) -> None:
    simulated, account_id = synced
    first = set_override(simulated, account_id, patient="25.00")
    second = set_override(simulated, account_id, insurance="0.00", actor="bob")
    events = query("SELECT override_id, event FROM override_events ORDER BY sequence")
    assert events == [
        {"override_id": first.override_id, "event": "set"},
        {"override_id": first.override_id, "event": "replaced"},
        {"override_id": second.override_id, "event": "set"},
    ]
    row = account(account_id)
    assert row["override_id"] == second.override_id
    assert row["patient_portion"] == row["synced_patient_portion"]


def test_bad_input_changes_nothing(synced) -> None:
    simulated, account_id = synced
    practices = simulated.practices
    cases = [
        ((PRACTICE, "no_such_account", "1.00", None, "r", "a"), "unknown account"),
        (("nope_dental", account_id, "1.00", None, "r", "a"), "unknown practice"),
        ((PRACTICE, account_id, "1.001", None, "r", "a"), "patient portion: '1.001'"),
        ((PRACTICE, account_id, "1e3", None, "r", "a"), "is not an amount"),
        ((PRACTICE, account_id, "1000000000.00", None, "r", "a"), "is not an amount"),
        ((PRACTICE, account_id, "NaN", None, "r", "a"), "is not an amount"),
        ((PRACTICE, account_id, "1.00", None, "  ", "a"), "reason is required"),
        ((PRACTICE, account_id, "1.00", None, "x" * 501, "a"), "longer than 500"),
        ((PRACTICE, account_id, None, None, "r", "a"), "give a patient portion"),
        ((PRACTICE, account_id, "1.00", None, "r", ""), "actor is required"),
    ]
    snapshot_before = layout().current_dir.joinpath(PRACTICE).resolve()
    for arguments, message in cases:
        with pytest.raises(OverrideError, match=message):
            set_overrides(layout(), practices, [build_request(practices, *arguments)])
    assert working_events() == []
    assert layout().current_dir.joinpath(PRACTICE).resolve() == snapshot_before
    with pytest.raises(OverrideError, match="has no override"):
        clear_override(layout(), practices, PRACTICE, account_id, "r", "a")


def test_import_is_all_or_nothing_and_names_the_bad_row(synced, tmp_path) -> None:
    simulated, account_id = synced
    others = [r["account_id"] for r in query(
        "SELECT account_id FROM account_balances WHERE account_id <> ? ORDER BY account_id"
        " LIMIT 2", [account_id])]
    bad = tmp_path / "overrides.csv"
    bad.write_text(
        "practice_id,account_id,patient_portion,insurance_portion,reason\n"
        f"{PRACTICE},{account_id},10.00,,plan\n"
        f"{PRACTICE},{others[0]},12.5x,,plan\n"
        f"{PRACTICE},{others[1]},,0,denied\n",
        encoding="utf-8",
    )
    done = subprocess.run([BALANCES, "override", "import", str(bad), "--actor", "carol"],
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "balances: error: overrides.csv row 3: patient portion: '12.5x' is not an amount"
        " (digits, optional minus, at most two decimals, below 1,000,000,000)"
    )
    assert working_events() == []
    good = tmp_path / "good.csv"
    good.write_text(bad.read_text().replace("12.5x", "12.50"), encoding="utf-8")
    requests, where = read_import_file(good, simulated.practices, "carol")
    set_overrides(layout(), simulated.practices, requests, where=where)
    assert len(query("SELECT * FROM active_overrides")) == 3


def test_cli_set_and_clear_then_list(synced) -> None:
    _, account_id = synced
    common = ["--practice", PRACTICE, "--account", account_id]
    done = subprocess.run(
        [BALANCES, "override", "set", *common, "--patient-portion", "30.00", "--reason",
         "hardship", "--actor", "dana"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "outstanding_balances and aging_summary are updated" in done.stdout
    assert account(account_id)["patient_portion"] == D("30.00")
    shown = subprocess.run([BALANCES, "account", "show", *common],
                           capture_output=True, text=True, timeout=120)
    assert "active override ovr_" in shown.stdout and "hardship" in shown.stdout
    done = subprocess.run(
        [BALANCES, "override", "clear", *common, "--reason", "resolved", "--actor", "dana"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not account(account_id)["is_overridden"]
    listed = subprocess.run([BALANCES, "override", "list", "--all"],
                            capture_output=True, text=True, timeout=120)
    assert [line.split("\t")[2] for line in listed.stdout.splitlines()[1:]] == ["set", "cleared"]


def test_launchpad_job_sets_an_override(synced) -> None:
    simulated, account_id = synced
    config = {"ops": {"apply_manual_override": {"config": {
        "practice_id": PRACTICE, "account_id": account_id, "patient_portion": "55.10",
        "reason": "agreed by phone", "actor": "erin",
    }}}}
    resources = resources_from(Settings.from_env())
    result = manual_override_job.execute_in_process(run_config=config, resources=resources)
    assert result.success
    assert account(account_id)["patient_portion"] == D("55.10")
    bad = {"ops": {"apply_manual_override": {"config": {
        **config["ops"]["apply_manual_override"]["config"], "patient_portion": "55.101"}}}}
    failed = manual_override_job.execute_in_process(
        run_config=bad, resources=resources, raise_on_error=False)
    assert not failed.success
    assert account(account_id)["patient_portion"] == D("55.10")


def test_no_sync_refresh_rematerialization_migration_or_rebuild_rewrites_events(synced) -> None:
    simulated, account_id = synced
    set_override(simulated, account_id, patient="25.00")
    set_override(simulated, account_id, patient="20.00")
    events = working_events()
    assert len(events) == 3
    sync_practice(simulated.practice(PRACTICE))  # a full refresh
    assert working_events() == events
    with DagsterInstance.ephemeral() as instance:
        assets = build_sync_assets(practice_partitions(simulated.practices))
        resources = resources_from(Settings.from_env())
        # Re-materialize only the balances step: recomputes from the published balances.
        only_balances = materialize(
            assets, partition_key=PRACTICE, instance=instance, resources=resources,
            selection=["account_balances", "manual_overrides", "outstanding_balances",
                       "aging_summary"],
        )
        assert only_balances.success
    assert working_events() == events
    WorkingDatabase(layout())._migrated = False
    with WorkingDatabase(layout()).connect():
        pass  # migrations run again on open; none may touch the events
    assert working_events() == events
    rebuild_published(layout(), simulated.practices)
    assert working_events() == events
    assert account(account_id)["patient_portion"] == D("20.00")
    assert len(query("SELECT * FROM override_events")) == 3


def test_an_override_during_a_sync_is_neither_lost_nor_applied_twice(synced) -> None:
    simulated, account_id = synced
    synced_portion = account(account_id)["patient_portion"]
    simulated.server.set_faults(PRACTICE, Faults(slow_seconds=1.5))
    errors: list[BaseException] = []

    def run_sync() -> None:
        try:
            sync_practice(simulated.practice(PRACTICE))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    worker = threading.Thread(target=run_sync)
    worker.start()
    time.sleep(0.5)  # the sync is extracting (slow pages)
    started = time.monotonic()
    result = set_override(simulated, account_id, patient="25.00")
    assert time.monotonic() - started < 5, "the override waited for the whole extraction"
    worker.join(timeout=120)
    assert not errors
    row = account(account_id)
    assert row["override_id"] == result.override_id
    assert row["patient_portion"] == D("25.00") and row["synced_patient_portion"] == synced_portion
    [summary] = query("SELECT overridden_account_count FROM aging_summary")
    assert summary["overridden_account_count"] == 1
    assert [e["event"] for e in query("SELECT event FROM override_events")] == ["set"]


def test_sync_runs_as_of_is_unchanged_by_recompute(synced) -> None:
    simulated, account_id = synced
    [before] = query("SELECT as_of_date, sync_id FROM account_balances LIMIT 1")
    set_override(simulated, account_id, patient="25.00")
    [after] = query("SELECT as_of_date, sync_id FROM outstanding_balances LIMIT 1")
    assert after == before and isinstance(after["as_of_date"], date)
    assert len(query("SELECT * FROM sync_runs")) == 1
    assert load_practices(simulated.practices_file).ids == simulated.practices.ids


@pytest.mark.parametrize("both_layouts", ["lake"], indirect=True)
def test_an_override_from_another_machine_during_a_publish_is_applied(
    synced, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only the DuckLake layout can have it: another machine's staff change lands between a
    sync's reading the overrides and its publish (on one machine the practice's publish
    lock keeps them apart). The sync's publish must not leave the override unapplied."""
    simulated, account_id = synced
    from balances_pipeline.pipeline import publish_sync

    other_machine = {**os.environ, "BALANCES_HOME": str(tmp_path / "other_machine_home")}
    reconcile = publish_sync.reconcile_overrides
    entered: list[str] = []

    def reconcile_while_another_machine_sets_one(*args, **kwargs):
        events = reconcile(*args, **kwargs)  # the sync has read the active overrides
        if not entered:
            done = subprocess.run(
                [BALANCES, "override", "set", "--practice", PRACTICE, "--account", account_id,
                 "--patient-portion", "25.00", "--reason", "hardship", "--actor", "erin"],
                env=other_machine, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            entered.append(done.stdout)
        return events

    monkeypatch.setattr(publish_sync, "reconcile_overrides",
                        reconcile_while_another_machine_sets_one)
    sync_practice(simulated.practice(PRACTICE))
    assert entered
    row = account(account_id)
    assert row["patient_portion"] == D("25.00") and row["override_id"] is not None
    [summary] = query("SELECT overridden_account_count FROM aging_summary")
    assert summary["overridden_account_count"] == 1
    [(day_portion,)] = [tuple(r.values()) for r in query(
        "SELECT patient_portion FROM balance_history WHERE practice_id = ? AND account_id = ?",
        [PRACTICE, account_id])]
    assert day_portion == D("25.00")
