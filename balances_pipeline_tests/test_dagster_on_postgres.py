"""Dagster's instance on Postgres (`deploy/dagster-postgres.yaml`, docs/scaling.md), for real.

A real Postgres server (`postgres_server`), a Dagster role that must give its password, and
two DAGSTER_HOMEs holding the same `dagster.yaml`: two machines. A practice synced with
`dagster asset materialize` from the first is seen from the second, through the instance
alone: its run, its materializations, its partition. Runs of one practice queued from one
machine are launched by the daemon of the other, one at a time. The password is only in the
environment: not in the runs' output, nor in what the instance recorded of the run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from balances_pipeline_tests.conftest import warehouse_query as query
from balances_pipeline_tests.dagster_dev_process import REPOSITORY

DAGSTER = str(Path(sys.executable).parent / "dagster")
INSTANCE_FILE = REPOSITORY / "deploy" / "dagster-postgres.yaml"
PRACTICE = "beta_dental"
RUN_TIMEOUT_SECONDS = 300
SYNC_ASSETS = {"source_extract", "account_balances", "outstanding_balances", "aging_summary",
               "collection_targets"}

# What a second machine knows of the instance: run `python -c PROBE <practice_id>` with its
# own DAGSTER_HOME. Prints one JSON object.
PROBE = """
import json, os, sys
from dagster import DagsterInstance
from dagster._serdes import serialize_value

practice = sys.argv[1]
password = os.environ["DAGSTER_PG_PASSWORD"]
instance = DagsterInstance.get()
runs = instance.get_runs()
materialized = {}
for key in instance.get_asset_keys():
    for record in instance.fetch_materializations(key, limit=100).records:
        if record.partition_key == practice:
            materialized.setdefault(key.to_user_string(), []).append(record.run_id)
queue = instance.get_concurrency_config().run_queue_config
print(json.dumps({
    "storage": [type(storage).__name__ for storage in (
        instance.run_storage, instance.event_log_storage, instance.schedule_storage)],
    "runs": [{"id": run.run_id, "status": run.status.value,
              "partition": run.tags.get("dagster/partition")} for run in runs],
    "materialized": materialized,
    "password_recorded": any(
        password in serialize_value(run) or any(
            password in serialize_value(entry) for entry in instance.all_logs(run.run_id))
        for run in runs),
    "queue": {"max_concurrent_runs": queue.max_concurrent_runs,
              "tag_concurrency_limits": queue.tag_concurrency_limits},
}))
"""


@pytest.fixture
def dagster_database(postgres_server) -> dict[str, str]:
    """A database of its own, owned by a role with a password: the DAGSTER_PG_* variables."""
    name = f"dagster_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    postgres_server.create_role(name, password)
    postgres_server.create_database(name, owner=name)
    return {
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_DB": name,
        "DAGSTER_PG_USERNAME": name,
        "DAGSTER_PG_PASSWORD": password,
    }


def machine(tmp_path: Path, name: str) -> Path:
    """A DAGSTER_HOME as a machine of the layout has it: the instance file, nothing else."""
    home = tmp_path / name
    home.mkdir(mode=0o700)
    shutil.copyfile(INSTANCE_FILE, home / "dagster.yaml")
    return home


def on(home: Path, database: dict[str, str], command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **database, "DAGSTER_HOME": str(home)}
    return subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, cwd=REPOSITORY)


def probe(home: Path, database: dict[str, str], practice_id: str) -> dict:
    done = on(home, database, [sys.executable, "-c", PROBE, practice_id])
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_machines_share_one_instance_on_postgres(
    simulated, dagster_database, tmp_path: Path
) -> None:
    first, second = machine(tmp_path, "machine_a"), machine(tmp_path, "machine_b")

    run = on(first, dagster_database, [
        DAGSTER, "asset", "materialize", "-m", "balances_pipeline.definitions",
        "--select", "*", "--partition", PRACTICE,
    ])
    assert run.returncode == 0, run.stderr[-4000:]
    password = dagster_database["DAGSTER_PG_PASSWORD"]
    assert password not in run.stdout and password not in run.stderr

    seen = probe(second, dagster_database, PRACTICE)
    assert seen["storage"] == [
        "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"]
    [recorded] = seen["runs"]
    assert recorded["status"] == "SUCCESS" and recorded["partition"] == PRACTICE
    assert SYNC_ASSETS <= set(seen["materialized"])
    assert all(runs == [recorded["id"]] for runs in seen["materialized"].values())
    assert not seen["password_recorded"]
    assert seen["queue"] == {
        "max_concurrent_runs": 8,
        "tag_concurrency_limits": [{"key": "dagster/partition",
                                    "value": {"applyLimitPerUniqueValue": True}, "limit": 1}],
    }
    # The sync itself published as on one machine.
    assert query("SELECT count(*) FROM account_balances WHERE practice_id = ?",
                 [PRACTICE])[0][0] > 0
    # Neither machine keeps a run or event database of its own (the SQLite default).
    for home in (first, second):
        assert not list(home.rglob("*.db")), list(home.rglob("*.db"))


def test_the_instance_refuses_a_wrong_password(dagster_database, tmp_path: Path) -> None:
    """The test server asks the Dagster role for its password: the run above gave it."""
    wrong = {**dagster_database, "DAGSTER_PG_PASSWORD": "not-" + secrets.token_hex(8)}
    done = on(machine(tmp_path, "machine_c"), wrong, [
        sys.executable, "-c", "from dagster import DagsterInstance; DagsterInstance.get()"])
    assert done.returncode != 0
    assert "password authentication failed" in done.stderr
    assert wrong["DAGSTER_PG_PASSWORD"] not in done.stderr


@pytest.mark.unit
def test_the_shared_instance_keeps_the_one_machine_settings() -> None:
    """deploy/dagster-postgres.yaml is the repository's dagster.yaml plus the storage and
    the per-practice run limit: nothing of the one-machine settings is lost or drifts."""
    one_machine = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text(encoding="utf-8"))
    shared = yaml.safe_load(INSTANCE_FILE.read_text(encoding="utf-8"))
    assert set(shared) == set(one_machine) | {"storage"}
    for section in set(one_machine) - {"concurrency"}:
        assert shared[section] == one_machine[section], section
    runs = dict(shared["concurrency"]["runs"])
    assert runs.pop("tag_concurrency_limits") == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert {**shared["concurrency"], "runs": runs} == one_machine["concurrency"]
    connection = dict(shared["storage"]["postgres"]["postgres_db"])
    # SQLAlchemy 2.1 would read `postgresql://` as psycopg 3; dagster-postgres brings psycopg2.
    assert connection.pop("scheme") == "postgresql+psycopg2"
    assert set(connection) == {"hostname", "port", "db_name", "username", "password"}
    assert all(value == {"env": f"DAGSTER_PG_{name}"} for name, value in zip(
        ("HOST", "PORT", "DB", "USERNAME", "PASSWORD"), connection.values(), strict=True))


@pytest.mark.operations
def test_queued_runs_launched_on_another_machine_one_per_practice(
    simulated, dagster_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one practice queued from one machine; the daemon of another takes them
    off the queue and launches them (the default run launcher), one after the other."""
    from dagster import DagsterInstance, DagsterRunStatus

    first, second = machine(tmp_path, "machine_a"), machine(tmp_path, "machine_b")
    workspace = str(REPOSITORY / "workspace.yaml")
    queued = []
    for _ in range(2):
        done = on(first, dagster_database, [
            DAGSTER, "job", "launch", "-w", workspace, "-j", "practice_sync_job",
            "--tags", json.dumps({"dagster/partition": PRACTICE}),
        ])
        assert done.returncode == 0, done.stderr[-4000:]
        queued.append(done)
    for name, value in dagster_database.items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(str(first))
    runs = instance.get_runs()
    assert [run.status for run in runs] == [DagsterRunStatus.QUEUED] * 2

    log = open(tmp_path / "daemon.log", "wb")  # closed below
    daemon = subprocess.Popen(
        [str(Path(DAGSTER).with_name("dagster-daemon")), "run", "-w", workspace],
        env={**os.environ, "DAGSTER_HOME": str(second)}, cwd=REPOSITORY,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            records = instance.get_run_records()
            if all(record.dagster_run.is_finished for record in records):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()[-4000:]
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
        log.close()
    records = sorted(instance.get_run_records(), key=lambda record: record.start_time)
    assert [r.dagster_run.status for r in records] == [DagsterRunStatus.SUCCESS] * 2
    # One run of the practice at a time: the second started after the first ended.
    assert records[1].start_time >= records[0].end_time
    password = dagster_database["DAGSTER_PG_PASSWORD"]
    assert password not in (tmp_path / "daemon.log").read_text(errors="replace")
    assert all(password not in done.stdout + done.stderr for done in queued)
