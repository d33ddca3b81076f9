"""Two workers, one warehouse: the layout past one machine, end to end (docs/scaling.md).

Two "machines": each a `BALANCES_HOME` and a `DAGSTER_HOME` of its own, the Dagster
instance shared on Postgres (`deploy/dagster-postgres.yaml`), the warehouse one DuckLake
whose catalog is in Postgres and whose data path both reach. Every sync is a real
`dagster asset materialize` process. All the while an analyst attached read-only to the
lake reads every practice's balances and summary, and must never see an error or a
practice whose summary disagrees with its balances (a half-published practice).

- the workers sync practices at the same moment, and each practice's figures are its
  source's aging report;
- an override entered on one worker shows in the practice synced on the other;
- a sync killed inside its publish's lake transaction (or before it) leaves the practice's
  previous data, and the other worker syncs it next without any clean-up.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from balances_pipeline.settings import LakeSettings
from balances_pipeline.storage import lake
from balances_pipeline.storage.duck import DuckSettings
from balances_pipeline_tests.conftest import lake_catalog
from balances_pipeline_tests.dagster_dev_process import REPOSITORY
from balances_pipeline_tests.test_dagster_on_postgres import dagster_database, machine

BALANCES = str(Path(sys.executable).parent / "balances")
DAGSTER = str(Path(sys.executable).parent / "dagster")
PAUSE = str(Path(__file__).with_name("dagster_pause_process.py"))
RUN_TIMEOUT_SECONDS = 300
__all__ = ["dagster_database"]  # a fixture this module uses


class Worker:
    """One machine: its own homes, the shared lake and Dagster instance."""

    def __init__(self, tmp_path: Path, name: str, shared_env: dict[str, str]) -> None:
        self.name = name
        self.env = {
            **os.environ, **shared_env,
            "BALANCES_HOME": str(tmp_path / f"{name}_balances_home"),
            "DAGSTER_HOME": str(machine(tmp_path, f"{name}_dagster_home")),
        }

    def start(self, *partition: str, pause_at: str | None = None) -> subprocess.Popen:
        selection = (["--partition", partition[0]] if len(partition) == 1
                     else ["--partition-range", f"{partition[0]}...{partition[1]}"])
        arguments = ["asset", "materialize", "-m", "balances_pipeline.definitions",
                     "--select", "*", *selection]
        command = ([sys.executable, PAUSE, pause_at, *arguments] if pause_at
                   else [DAGSTER, *arguments])
        return subprocess.Popen(command, env=self.env, cwd=REPOSITORY, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def sync(self, *partition: str) -> None:
        finished(self.start(*partition))

    def balances(self, *arguments: str) -> str:
        done = subprocess.run([BALANCES, *arguments], env=self.env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_SECONDS)
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout

    def kill_at(self, point: str, practice_id: str) -> None:
        run = self.start(practice_id, pause_at=point)
        try:
            for line in run.stdout:
                if line.strip() == f"paused at {point}":
                    break
            else:
                pytest.fail(f"the run ended before {point}: {run.stderr.read()[-4000:]}")
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=60)


def finished(run: subprocess.Popen) -> None:
    stdout, stderr = run.communicate(timeout=RUN_TIMEOUT_SECONDS)
    assert run.returncode == 0, stderr[-4000:]


class Analyst(threading.Thread):
    """Reads the lake read-only in a loop, as an analyst's notebook would; reconnects now
    and then. Records every error and every practice whose summary disagrees with its
    balances in the same read."""

    CHECK = """
        SELECT s.practice_id, s.account_count, b.accounts, s.balance_total, b.total
        FROM aging_summary AS s
        JOIN (SELECT practice_id, count(*) AS accounts, sum(balance_total) AS total
              FROM outstanding_balances GROUP BY practice_id) AS b USING (practice_id)
    """

    def __init__(self, lake_settings: LakeSettings, tmp_path: Path) -> None:
        super().__init__(daemon=True)
        self.lake_settings = lake_settings
        self.settings = DuckSettings("256MB", tmp_path / "analyst_tmp")
        self.stop = threading.Event()
        self.reads = 0
        self.errors: list[str] = []
        self.disagreements: list[tuple] = []

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = lake.open_lake(self.settings, self.lake_settings, read_only=True)
        con.execute(f"USE {lake.ALIAS}")
        return con

    def run(self) -> None:
        con = None
        while not self.stop.is_set():
            try:
                if con is None or self.reads % 20 == 0:
                    if con is not None:
                        con.close()
                    con = self.connect()
                for row in con.execute(self.CHECK).fetchall():
                    if row[1] != row[2] or row[3] != row[4]:
                        self.disagreements.append(row)
                self.reads += 1
            except duckdb.Error as error:
                self.errors.append(str(error).splitlines()[0])
                con = None
            time.sleep(0.05)
        if con is not None:
            con.close()


def read_lake(lake_settings: LakeSettings, tmp_path: Path, sql: str,
              params: list | None = None) -> list[tuple]:
    con = lake.open_lake(DuckSettings("256MB", tmp_path / "reader_tmp"), lake_settings,
                         read_only=True)
    try:
        con.execute(f"USE {lake.ALIAS}")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_two_workers_publish_through_one_lake(
    simulated, postgres_server, dagster_database, tmp_path: Path
) -> None:
    database = f"lake_{secrets.token_hex(6)}"
    postgres_server.create_database(database)
    lake_settings = LakeSettings(lake_catalog(postgres_server, database),
                                 str(tmp_path / "shared_lake_data"))
    shared = {**dagster_database,
              "BALANCES_WAREHOUSE_CATALOG": lake_settings.catalog,
              "BALANCES_WAREHOUSE_DATA_PATH": lake_settings.data_path}
    first, second = Worker(tmp_path, "first", shared), Worker(tmp_path, "second", shared)

    def read(sql: str, params: list | None = None) -> list[tuple]:
        return read_lake(lake_settings, tmp_path, sql, params)

    def matches_source(practice_id: str) -> None:
        [(as_of,)] = read("SELECT DISTINCT as_of_date FROM account_balances"
                          " WHERE practice_id = ?", [practice_id])
        report = simulated.server.aging_report(practice_id, as_of)
        rows = read("SELECT account_id, balance_total FROM account_balances"
                    " WHERE practice_id = ?", [practice_id])
        assert dict(rows) == {str(row["PatNum"]): row["BalTotal"] for row in report}

    # Set up once, as a deployment does before starting workers: Dagster's tables (two
    # processes creating them at once race), and the lake (a worker's first unit makes it,
    # and the analyst attaches to it).
    done = subprocess.run([DAGSTER, "instance", "migrate"], env=first.env, cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr[-4000:]
    first.balances("override", "list", "--practice", "alpha_dental")
    analyst = Analyst(lake_settings, tmp_path)
    analyst.start()
    try:
        # 1. Both workers at once: a run of two practices on one, a third on the other.
        runs = [first.start("alpha_dental", "beta_dental"), second.start("gamma_dental")]
        for run in runs:
            finished(run)
        for practice_id in ("alpha_dental", "beta_dental", "gamma_dental"):
            matches_source(practice_id)
        homes = [Path(worker.env["BALANCES_HOME"]) for worker in (first, second)]
        assert not any((home / "warehouse.duckdb").exists() for home in homes)

        # 2. An override entered on the first worker; the second syncs the practice.
        [(account_id, patient)] = read(
            "SELECT account_id, patient_portion FROM account_balances WHERE practice_id ="
            " 'beta_dental' AND patient_portion > 40 ORDER BY account_id LIMIT 1")
        first.balances("override", "set", "--practice", "beta_dental", "--account",
                       account_id, "--patient-portion", "40.00", "--reason", "hardship",
                       "--actor", "dana")
        second.sync("beta_dental")
        [(shown, override_id)] = read(
            "SELECT patient_portion, override_id FROM outstanding_balances"
            " WHERE practice_id = 'beta_dental' AND account_id = ?", [account_id])
        assert shown == Decimal("40.00") != patient and override_id is not None
        assert read("SELECT count(*) FROM active_overrides WHERE practice_id = 'beta_dental'"
                    " AND account_id = ?", [account_id]) == [(1,)]

        # 3. Syncs killed on the second worker, before and inside the lake transaction.
        simulated.server.advance_clock(2, "alpha_dental")  # a new sync publishes other figures
        before = read("SELECT * FROM account_balances WHERE practice_id = 'alpha_dental'"
                      " ORDER BY account_id")
        for point in ("publish", "commit"):
            second.kill_at(point, "alpha_dental")
            assert read("SELECT * FROM account_balances WHERE practice_id = 'alpha_dental'"
                        " ORDER BY account_id") == before
        first.sync("alpha_dental")
        matches_source("alpha_dental")
        assert read("SELECT * FROM account_balances WHERE practice_id = 'alpha_dental'"
                    " ORDER BY account_id") != before
        [(failed,)] = read("SELECT count(*) FROM sync_runs WHERE practice_id = 'alpha_dental'"
                           " AND status = 'failed'")
        assert failed == 2  # the killed syncs, failed by the next one as abandoned
    finally:
        analyst.stop.set()
        analyst.join(timeout=60)
    assert analyst.errors == []
    assert analyst.disagreements == []
    assert analyst.reads > 20
