"""The `balances` command line, run as a user runs it: a subprocess of the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb

BALANCES = str(Path(sys.executable).parent / "balances")


def run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BALANCES, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_source_check_reads_one_page_and_changes_nothing(simulated, balances_home) -> None:
    done = run("source", "check", "--practice", "alpha_dental")
    assert done.returncode == 0, done.stderr
    assert "alpha_dental" in done.stdout and "authenticated" in done.stdout
    assert "rows: 100" in done.stdout
    for secret in simulated.keys.values():
        assert secret not in done.stdout + done.stderr
    assert not (balances_home / "pipeline").exists()


def test_source_check_errors_are_one_line(simulated) -> None:
    unknown = run("source", "check", "--practice", "nope_dental")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "balances: error: unknown practice 'nope_dental'"
    wrong_key = run("source", "check", "--practice", "beta_dental",
                    env={"TEST_BETA_DENTAL_CUSTOMER_KEY": "wrong"})
    assert wrong_key.returncode == 2
    # The server's explanation follows, on the same line, without the key.
    assert wrong_key.stderr.strip().startswith(
        "balances: error: authentication failed for practice beta_dental (HTTP 401"
    )
    assert "\n" not in wrong_key.stderr.strip() and "wrong" not in wrong_key.stderr
    missing = run("source", "check", "--practice", "beta_dental",
                  env={"TEST_BETA_DENTAL_CUSTOMER_KEY": ""})
    assert missing.stderr.strip().endswith("TEST_BETA_DENTAL_CUSTOMER_KEY is not set")


def test_demo_syncs_every_demo_practice_and_prints_the_summary(tmp_path) -> None:
    home = tmp_path / "demo_home"
    done = run("demo", env={"BALANCES_HOME": str(home)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    demo = {"bright_smiles", "lakeside_family", "harbor_dental",  # Open Dental
            "lakeside_peds",  # a FHIR EHR
            "sunrise_dental"}  # an aging file dropped in a folder
    for practice_id in demo:
        assert f"{practice_id}: ok" in done.stdout
    assert f"warehouse: {home / 'warehouse.duckdb'}" in done.stdout
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    summary = con.execute("SELECT practice_id, account_count FROM aging_summary").fetchall()
    con.close()
    assert {row[0] for row in summary} == demo
    assert all(row[1] > 0 for row in summary)
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert oct((home / "warehouse.duckdb").stat().st_mode & 0o777) == "0o600"


def test_simulator_changes_over_time_from_the_command_line(simulated) -> None:
    url = simulated.server.url.removesuffix("/api/v1")
    practice = "gamma_dental"
    as_of = simulated.server.now(practice).date()
    before = {row["PatNum"]: row["BalTotal"] for row in
              simulated.server.aging_report(practice, as_of)}
    account = next(iter(before))
    added = run("simulator", "row", "add", "--url", url, "--practice", practice,
                "--table", "adjustments",
                "--fields", f'{{"PatNum": {account}, "AdjAmt": 10.05, '
                            f'"AdjDate": "{as_of.isoformat()}"}}')
    assert added.returncode == 0, added.stderr
    key = json.loads(added.stdout)["AdjNum"]
    after = {row["PatNum"]: row["BalTotal"] for row in
             simulated.server.aging_report(practice, as_of)}
    assert after[account] == before[account] + Decimal("10.05")
    deleted = run("simulator", "row", "delete", "--url", url, "--practice", practice,
                  "--table", "adjustments", "--key", str(key))
    assert deleted.returncode == 0, deleted.stderr
    assert {row["PatNum"]: row["BalTotal"] for row in
            simulated.server.aging_report(practice, as_of)} == before
    moved = run("simulator", "advance", "--url", url, "--practice", practice, "--days", "2")
    assert moved.returncode == 0 and simulated.server.now(practice).date() > as_of
    bad = run("simulator", "row", "edit", "--url", url, "--practice", practice,
              "--table", "adjustments", "--fields", "{}")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: edit needs --key"
