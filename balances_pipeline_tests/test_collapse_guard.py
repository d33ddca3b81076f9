"""A sync whose account count collapses (to zero, or by more than max_account_drop_fraction
of the previous successful sync) is not published and ends no override until a person
accepts the drop with `balances sync accept-drop`; the acceptance is used once."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, materialize

from balances_pipeline.cli import main
from balances_pipeline.config import load_practices
from balances_pipeline.defs.assets import build_sync_assets
from balances_pipeline.defs.partitions import practice_partitions
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.pipeline.errors import SyncFailed
from balances_pipeline.settings import Settings
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.staff.overrides import build_request, set_overrides
from balances_pipeline.storage.working_db import WorkingDatabase
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
    server_fixture,  # noqa: F401 - a pytest fixture
)

PRACTICE = "alpha_dental"


def empty_source(server, practice_id: str) -> dict[str, list]:
    """Make the simulator answer every list endpoint (and the aging report) with no rows,
    HTTP 200; returns the rows taken away."""
    ledger = server.ledger(practice_id)
    with ledger.lock:
        taken = {name: list(table.rows) for name, table in ledger.tables.items()}
        for table in ledger.tables.values():
            table.rows.clear()
        ledger.version += 1
    return taken


def restore_source(server, practice_id: str, taken: dict[str, list]) -> None:
    ledger = server.ledger(practice_id)
    with ledger.lock:
        for name, rows in taken.items():
            ledger.tables[name].rows[:] = rows
        ledger.version += 1


def published(practice_id: str = PRACTICE) -> list[dict]:
    return query("SELECT * FROM account_balances WHERE practice_id = ? ORDER BY account_id",
                 [practice_id])


def events() -> list[str]:
    return [e["event"] for e in query("SELECT event FROM override_events ORDER BY sequence")]


def runs(practice_id: str = PRACTICE) -> list[dict]:
    return query("SELECT status, error, error_class, accounts FROM sync_runs"
                 " WHERE practice_id = ? ORDER BY started_at", [practice_id])


def acceptances() -> list[tuple]:
    with WorkingDatabase(layout()).connect() as con:
        return con.execute(
            "SELECT practice_id, reason, actor, accepted_at IS NOT NULL, used_by_sync_id,"
            " accounts, previous_accounts FROM drop_acceptances ORDER BY accepted_at"
        ).fetchall()


def accept_drop(capsys, practice_id: str = PRACTICE, reason: str = "practice closed",
                actor: str = "dana") -> tuple[int, str, str]:
    code = main(["sync", "accept-drop", "--practice", practice_id, "--reason", reason,
                 "--actor", actor])
    out, err = capsys.readouterr()
    return code, out, err


def with_override(simulated) -> str:
    """Sync alpha_dental, set an override on its first account; returns the account."""
    sync_practice(simulated.practice(PRACTICE))
    account_id = published()[0]["account_id"]
    request = build_request(simulated.practices, PRACTICE, account_id, "1.00", None,
                            "payment plan", "alice")
    set_overrides(layout(), simulated.practices, [request])
    return account_id


def test_an_empty_answer_fails_keeps_the_data_and_the_overrides(simulated) -> None:
    account_id = with_override(simulated)
    before = published()
    assert len(before) > 100
    empty_source(simulated.server, PRACTICE)
    with pytest.raises(SyncFailed) as raised:
        sync_practice(simulated.practice(PRACTICE))
    message = str(raised.value)
    assert message == (
        f"practice {PRACTICE}: 0 accounts, previous sync had {len(before)} (a drop of 100%,"
        " more than max_account_drop_fraction 50%); if this is genuine, run"
        f" `balances sync accept-drop --practice {PRACTICE} --reason ... --actor ...`"
        " and sync again"
    )
    assert published() == before
    assert events() == ["set"]
    [active] = query("SELECT account_id FROM active_overrides")
    assert active["account_id"] == account_id
    assert query("SELECT is_overridden FROM outstanding_balances WHERE account_id = ?",
                 [account_id]) == [{"is_overridden": True}]
    assert [(r["status"], r["error"], r["error_class"]) for r in runs()] == [
        ("success", None, None), ("failed", message, "AccountCountCollapsed")
    ]
    # Not a one-off: it keeps failing until a person decides.
    with pytest.raises(SyncFailed, match="0 accounts, previous sync had"):
        sync_practice(simulated.practice(PRACTICE))
    assert published() == before and events() == ["set"]


def test_a_genuine_drop_is_accepted_once_and_audited(simulated, capsys) -> None:
    with_override(simulated)
    count = len(published())
    empty_source(simulated.server, PRACTICE)
    with pytest.raises(SyncFailed):
        sync_practice(simulated.practice(PRACTICE))

    code, out, err = accept_drop(capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"drop accepted for {PRACTICE} by dana (acceptance acc_")
    assert acceptances() == [(PRACTICE, "practice closed", "dana", True, None, None, None)]

    outcome = sync_practice(simulated.practice(PRACTICE))
    assert outcome.accounts == 0 and published() == []
    assert events() == ["set", "expired"]  # a person confirmed: the account is gone
    assert acceptances() == [
        (PRACTICE, "practice closed", "dana", True, outcome.sync_id, 0, count)
    ]
    # A sync with 0 accounts after 0 is no drop; the acceptance is not used again.
    again = sync_practice(simulated.practice(PRACTICE))
    assert again.accounts == 0
    assert [r["status"] for r in runs()] == ["success", "failed", "success", "success"]
    assert acceptances()[0][4] == outcome.sync_id


def test_an_acceptance_is_used_by_the_next_sync_even_without_a_drop(simulated, capsys) -> None:
    sync_practice(simulated.practice(PRACTICE))
    assert accept_drop(capsys)[0] == 0
    healthy = sync_practice(simulated.practice(PRACTICE))  # uses it up: nothing lingers
    assert acceptances()[0][4:] == (healthy.sync_id, healthy.accounts, healthy.accounts)
    before = published()
    empty_source(simulated.server, PRACTICE)
    with pytest.raises(SyncFailed, match="a drop of 100%"):
        sync_practice(simulated.practice(PRACTICE))
    assert published() == before


def test_a_first_sync_is_never_a_drop_and_other_practices_are_not_affected(
    simulated, capsys
) -> None:
    empty_source(simulated.server, "gamma_dental")
    assert sync_practice(simulated.practice("gamma_dental")).accounts == 0
    sync_practice(simulated.practice(PRACTICE))
    assert accept_drop(capsys, "beta_dental")[0] == 0
    empty_source(simulated.server, PRACTICE)
    with pytest.raises(SyncFailed, match=f"practice {PRACTICE}: 0 accounts"):
        sync_practice(simulated.practice(PRACTICE))  # beta's acceptance is not alpha's
    assert acceptances()[0][4] is None


def test_accept_drop_bad_input_is_one_line_and_records_nothing(simulated, capsys) -> None:
    code, out, err = accept_drop(capsys, practice_id="nobody_dental")
    assert (code, out) == (2, "") and err == "balances: error: unknown practice 'nobody_dental'\n"
    code, out, err = accept_drop(capsys, reason="   ")
    assert (code, err) == (2, "balances: error: reason is required\n")
    code, out, err = accept_drop(capsys, actor="x" * 201)
    assert (code, err) == (2, "balances: error: actor is longer than 200 characters\n")
    assert acceptances() == []


def test_the_dagster_step_fails_with_the_one_line_error(simulated) -> None:
    with DagsterInstance.ephemeral() as instance:
        def run():
            return materialize(
                build_sync_assets(practice_partitions(simulated.practices)),
                partition_key=PRACTICE, instance=instance,
                resources=resources_from(Settings.from_env()), raise_on_error=False,
            )

        assert run().success
        before = published()
        empty_source(simulated.server, PRACTICE)
        result = run()
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "practice_balances"
    assert (
        f"practice {PRACTICE}: 0 accounts, previous sync had {len(before)} (a drop of 100%"
        in failure.step_failure_data.error.message
    )
    assert published() == before


def test_ledger_mode_full_refresh_collapse_fails_and_heals(
    tmp_path, balances_home, monkeypatch
) -> None:
    from balances_pipeline.simulator import SimPractice, SimulatorServer

    monkeypatch.setenv(DEVELOPER_KEY_ENV, "dev")
    monkeypatch.setenv("TEST_LEDGER_DENTAL_CUSTOMER_KEY", "k-ledger")
    monkeypatch.setenv("BALANCES_AS_OF", "2026-11-30")
    sim = SimPractice("ledger_dental", "k-ledger", accounts=150, seed=4)
    with SimulatorServer([sim], "dev") as server:
        path = write_practices_file(tmp_path / "p.yaml", [
            practice_entry("ledger_dental", server.url, source={"mode": "ledger"}),
        ])
        practice = load_practices(path).practice("ledger_dental")  # daily: always full
        first = sync_practice(practice)
        before = published("ledger_dental")
        taken = empty_source(server, "ledger_dental")
        with pytest.raises(SyncFailed, match=(
            f"practice ledger_dental: 0 accounts, previous sync had {first.accounts}"
        )):
            sync_practice(practice)
        assert published("ledger_dental") == before
        # The raw ledger the failed sync replaced is replaced again by the next full sync.
        restore_source(server, "ledger_dental", taken)
        healed = sync_practice(practice)
        assert healed.mode == "full" and healed.accounts == first.accounts
        assert [
            {k: v for k, v in row.items() if k not in ("sync_id", "synced_at")}
            for row in published("ledger_dental")
        ] == [{k: v for k, v in row.items() if k not in ("sync_id", "synced_at")}
              for row in before]


# -- partial drops, against a scripted server ---------------------------------------------


@pytest.fixture
def scripted(server: FakeOpenDental, tmp_path, balances_home, monkeypatch):
    """A practice on the scripted server; `practice(**entry)` rewrites its practices file."""
    monkeypatch.setenv(DEVELOPER_KEY_ENV, DEV_KEY)
    monkeypatch.setenv("TEST_SMALL_DENTAL_CUSTOMER_KEY", CUST_KEY)
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 201)]

    def practice(**entry):
        path = write_practices_file(tmp_path / "practices.yaml",
                                    [practice_entry("small_dental", server.url, **entry)])
        monkeypatch.setenv("BALANCES_PRACTICES_FILE", str(path))
        return load_practices(path).practice("small_dental")

    return server, practice


def test_a_drop_above_the_share_fails_and_one_at_it_passes(scripted) -> None:
    server, practice = scripted
    sync_practice(practice())
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 100)]  # 101 of 200 gone
    with pytest.raises(SyncFailed) as raised:
        sync_practice(practice())
    assert str(raised.value).startswith(
        "practice small_dental: 99 accounts, previous sync had 200 (a drop of 50.5%, more"
        " than max_account_drop_fraction 50%); if this is genuine"
    )
    assert len(published("small_dental")) == 200
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 101)]  # exactly half
    assert sync_practice(practice()).accounts == 100


def test_the_share_is_per_practice(scripted) -> None:
    server, practice = scripted
    sync_practice(practice(max_account_drop_fraction=0.1))
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 171)]  # 15% fewer
    with pytest.raises(SyncFailed, match=r"a drop of 15%, more than max_account_drop_fraction"
                                         r" 10%\)"):
        sync_practice(practice(max_account_drop_fraction=0.1))
    assert sync_practice(practice(max_account_drop_fraction=0.9)).accounts == 170
    # Even a practice that allows any drop never publishes zero accounts unconfirmed.
    server.rows["/reports/Aging"] = []
    with pytest.raises(SyncFailed, match=(
        r"0 accounts, previous sync had 170 \(a drop of 100%, a sync with no accounts"
        r" always needs confirming\)"
    )):
        sync_practice(practice(max_account_drop_fraction=1))
