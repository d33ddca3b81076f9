"""Staff changes are reported to Dagster: one materialization per republished asset.

The launchpad jobs log them in their run; the `balances` CLI reports them as runless
events to the instance of $DAGSTER_HOME (a real instance in a temporary directory here),
and to none without DAGSTER_HOME. Metadata: ids and counts, never the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions

from balances_pipeline import cli
from balances_pipeline.defs.resources import resources_from
from balances_pipeline.defs.staff_jobs import (
    STAFF_JOBS,
    collection_block_job,
    manual_override_job,
)
from balances_pipeline.settings import Settings
from balances_pipeline_tests.conftest import sync_practice
from balances_pipeline_tests.conftest import warehouse_query as query

BALANCES = str(Path(sys.executable).parent / "balances")
OVERRIDE_ASSETS = ["manual_overrides", "outstanding_balances", "aging_summary"]
WITH_TARGETS = [*OVERRIDE_ASSETS, "collection_targets"]
REASON = "hardship plan agreed with the guarantor"
RULES = [{"id": "remind", "action": "reminder", "min_patient_balance": "25.00"}]


@pytest.fixture
def synced(simulated):
    """alpha_dental with a valid rule set and beta_dental with a broken one, both synced."""
    document = yaml.safe_load(simulated.practices_file.read_text())
    document["practices"][0]["collection_rules"] = RULES
    document["practices"][1]["collection_rules"] = [{"id": "broken", "action": "sue"}]
    simulated.practices_file.write_text(yaml.safe_dump(document))
    for practice_id in ("alpha_dental", "beta_dental"):
        sync_practice(simulated.practice(practice_id))
    return simulated


def an_account(practice_id: str, skip: int = 0) -> str:
    return query(
        "SELECT account_id FROM account_balances WHERE practice_id = ? AND patient_portion > 50"
        " ORDER BY account_id LIMIT 1 OFFSET ?", [practice_id, skip]
    )[0][0]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def reported(practice_id: str, asset: str) -> list[dict]:
    """The metadata of the instance's materializations of the asset's partition, oldest first."""
    with DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[practice_id]),
            limit=100, ascending=True,
        ).records
    return [{name: value.value for name, value in record.asset_materialization.metadata.items()}
            for record in records]


def all_reported() -> dict[tuple[str, str], list[dict]]:
    with DagsterInstance.get() as instance:
        keys = instance.get_asset_keys()
    return {
        (practice_id, key.to_user_string()): reported(practice_id, key.to_user_string())
        for key in keys for practice_id in ("alpha_dental", "beta_dental")
    }


def materialized(result) -> list[tuple[str, str, dict]]:
    return [
        (m.asset_key.to_user_string(), m.partition,
         {name: value.value for name, value in m.metadata.items()})
        for m in result.asset_materializations_for_node(result.job_def.nodes[0].name)
    ]


def test_the_launchpad_override_job_reports_collection_targets_when_re_evaluated(
    synced
) -> None:
    resources = resources_from(Settings.from_env())
    account = an_account("alpha_dental")
    config = {"ops": {"apply_manual_override": {"config": {
        "practice_id": "alpha_dental", "account_id": account, "patient_portion": "10.00",
        "reason": REASON, "actor": "erin",
    }}}}
    result = manual_override_job.execute_in_process(run_config=config, resources=resources)
    assert result.success
    found = materialized(result)
    assert [(asset, partition) for asset, partition, _ in found] == [
        (asset, "alpha_dental") for asset in WITH_TARGETS
    ]
    [override_id] = {metadata["override_id"] for _, _, metadata in found}
    assert override_id.startswith("ovr_")
    assert found[0][2] == {"action": "override_set", "via": "launchpad", "accounts": 1,
                           "overrides_set": 1, "overrides_ended": 0,
                           "override_id": override_id}

    # beta_dental's rules are broken: its targets are not re-evaluated, so not reported.
    beta = {**config["ops"]["apply_manual_override"]["config"],
            "practice_id": "beta_dental", "account_id": an_account("beta_dental")}
    with DagsterInstance.ephemeral() as instance:
        result = manual_override_job.execute_in_process(
            run_config={"ops": {"apply_manual_override": {"config": beta}}},
            resources=resources, instance=instance)
        logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    assert [asset for asset, _, _ in materialized(result)] == OVERRIDE_ASSETS
    assert any("beta_dental: collection targets not updated" in line for line in logged)

    cleared = manual_override_job.execute_in_process(run_config={"ops": {
        "apply_manual_override": {"config": {**beta, "action": "clear",
                                             "patient_portion": None}}}}, resources=resources)
    assert cleared.success
    [(_, _, metadata), *_] = materialized(cleared)
    assert metadata["action"] == "override_clear" and metadata["overrides_ended"] == 1
    assert metadata["override_id"].startswith("ovr_")


def test_the_launchpad_block_job_blocks_and_reports_collection_targets(synced) -> None:
    resources = resources_from(Settings.from_env())
    account = an_account("alpha_dental")
    config = {"practice_id": "alpha_dental", "account_id": account, "reason": REASON,
              "actor": "amy"}
    blocked = collection_block_job.execute_in_process(
        run_config={"ops": {"apply_collection_block": {"config": config}}}, resources=resources)
    assert blocked.success
    [(asset, partition, metadata)] = materialized(blocked)
    assert (asset, partition) == ("collection_targets", "alpha_dental")
    assert metadata == {"action": "block_set", "via": "launchpad", "accounts": 1,
                        "block_sequence": metadata["block_sequence"]}
    assert query("SELECT exclusion FROM collection_exclusions WHERE account_id = ?",
                 [account]) == [("blocked",)]
    lifted = collection_block_job.execute_in_process(
        run_config={"ops": {"apply_collection_block": {"config": {**config,
                                                                  "blocked": False}}}},
        resources=resources)
    assert lifted.success
    [(_, _, after)] = materialized(lifted)
    assert after["action"] == "block_clear"
    assert after["block_sequence"] > metadata["block_sequence"]
    assert [row[0] for row in query(
        "SELECT blocked FROM account_blocks WHERE account_id = ? ORDER BY sequence", [account]
    )] == [True, False]

    # Broken rules: the block is recorded, but there are no re-evaluated targets to report.
    beta = collection_block_job.execute_in_process(run_config={"ops": {
        "apply_collection_block": {"config": {**config, "practice_id": "beta_dental",
                                              "account_id": an_account("beta_dental")}}}},
        resources=resources)
    assert beta.success and materialized(beta) == []
    bad = collection_block_job.execute_in_process(run_config={"ops": {
        "apply_collection_block": {"config": {**config, "account_id": "no_such_account"}}}},
        resources=resources, raise_on_error=False)
    assert not bad.success


def test_the_staff_jobs_load_in_a_code_location(synced) -> None:
    defs = Definitions(jobs=STAFF_JOBS, resources=resources_from(Settings.from_env()))
    assert defs.get_job_def("collection_block_job").name == "collection_block_job"
    assert defs.get_job_def("manual_override_job").name == "manual_override_job"


def test_cli_changes_are_reported_to_the_dagster_instance(synced, dagster_home, tmp_path
                                                          ) -> None:
    account = an_account("alpha_dental")
    common = ["--practice", "alpha_dental", "--account", account]
    done = subprocess.run(
        [BALANCES, "override", "set", *common, "--patient-portion", "30.00",
         "--reason", REASON, "--actor", "dana"],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert "reported to Dagster for alpha_dental: manual_overrides, outstanding_balances," \
        " aging_summary, collection_targets" in done.stdout
    [override_id] = [word for word in done.stdout.split() if word.startswith("ovr_")]
    for asset in WITH_TARGETS:
        assert reported("alpha_dental", asset) == [{
            "action": "override_set", "via": "cli", "accounts": 1, "overrides_set": 1,
            "overrides_ended": 0, "override_id": override_id,
        }]

    assert cli.main(["override", "clear", *common, "--reason", REASON, "--actor", "dana"]) == 0
    assert reported("alpha_dental", "aging_summary")[-1] == {
        "action": "override_clear", "via": "cli", "accounts": 1, "overrides_set": 0,
        "overrides_ended": 1, "override_id": override_id,
    }
    assert cli.main(["block", "set", *common, "--reason", REASON, "--actor", "dana"]) == 0
    assert cli.main(["block", "clear", *common, "--reason", REASON, "--actor", "dana"]) == 0
    blocks = reported("alpha_dental", "collection_targets")[-2:]
    assert [(b["action"], b["via"]) for b in blocks] == [("block_set", "cli"),
                                                        ("block_clear", "cli")]
    assert len(reported("alpha_dental", "aging_summary")) == 2  # blocks change no balances

    others = [an_account("alpha_dental", 1), an_account("alpha_dental", 2)]
    csv = tmp_path / "overrides.csv"
    csv.write_text(
        "practice_id,account_id,patient_portion,insurance_portion,reason\n"
        + "".join(f"alpha_dental,{a},12.00,,{REASON}\n" for a in others)
        + f"beta_dental,{an_account('beta_dental')},11.00,,{REASON}\n",
        encoding="utf-8",
    )
    assert cli.main(["override", "import", str(csv), "--actor", "dana"]) == 0
    assert reported("alpha_dental", "manual_overrides")[-1] == {
        "action": "override_import", "via": "cli", "accounts": 2, "overrides_set": 2,
        "overrides_ended": 0,
    }
    # beta_dental's broken rules: its targets were not re-evaluated, so not reported.
    assert reported("beta_dental", "aging_summary")[-1]["accounts"] == 1
    assert reported("beta_dental", "collection_targets") == []

    everything = all_reported()
    assert REASON not in repr(everything) and "dana" not in repr(everything)
    names = {row[0] for row in query("SELECT account_name FROM account_balances")}
    assert not any(name and len(name) > 4 and name in repr(everything) for name in names)


def test_cli_without_dagster_home_reports_nothing_and_succeeds(
    synced, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    account = an_account("alpha_dental")
    assert cli.main(["override", "set", "--practice", "alpha_dental", "--account", account,
                     "--patient-portion", "30.00", "--reason", REASON, "--actor", "dana"]) == 0
    out = capsys.readouterr()
    assert "set on alpha_dental/" in out.out and "reported to Dagster" not in out.out
    assert out.err == ""


def test_cli_with_a_bad_dagster_home_changes_nothing(synced, monkeypatch, tmp_path, capsys
                                                     ) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "missing"))
    account = an_account("alpha_dental")
    before = query("SELECT count(*) FROM override_events")
    assert cli.main(["override", "set", "--practice", "alpha_dental", "--account", account,
                     "--patient-portion", "30.00", "--reason", REASON, "--actor", "dana"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("balances: error: $DAGSTER_HOME") and err.count("\n") == 1
    assert query("SELECT count(*) FROM override_events") == before
