"""Smoke test of `python -m benchmarks.lake_workers` at a tiny size: a real Postgres, the
simulator, one local worker and two lake workers on two "machines" in processes of their
own. It prints every figure line and its JSON's correctness check passed (every practice's
rows are its latest sync's, as many as its aging report's accounts).

Performance is measured by the benchmark, never asserted here: no timing checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from balances_pipeline_tests.dagster_dev_process import REPOSITORY

TIMEOUT_SECONDS = 600
LINES = (
    "round 1 (first sync): baseline 1 local worker ",
    "round 1 lake lock: ",
    "round 1 lock held per sync by call site: ",
    "round 2 (sync again, rows replaced): baseline 1 local worker ",
    "round 2 lake lock: ",
    "CPU per sync: lake workers ",
    "extrapolation to 5,000 practices, 10% hourly (16,500 syncs/day)",
    "correctness: passed: 4 practices read back",
)


def test_lake_workers_benchmark_runs_and_checks_the_lake(tmp_path: Path) -> None:
    figures = tmp_path / "lake_workers.json"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("BALANCES_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.lake_workers", "--practices", "4", "--accounts",
         "20", "--workers", "2", "--machines", "2", "--json", str(figures)],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-4000:]
    lines = done.stdout.splitlines()
    prefix = "lake_workers ["
    for expected in LINES:
        assert any(line.startswith(prefix) and expected in line for line in lines), (
            f"missing line {expected!r}:\n{done.stdout}")
    for line in lines:  # each figure line names the machine and the sizes
        if line.startswith(prefix):
            assert " cores; 4 practices x 20 accounts, 2 workers on 2 machines]" in line, line
    document = json.loads(figures.read_text(encoding="utf-8"))
    assert document["correctness"]["passed"], document["correctness"]["problems"]
    assert document["correctness"]["practices_checked"] == 4
    assert document["baseline"]["correctness"]["passed"]
    assert document["sizes"] == {"practices": 4, "accounts": 20, "workers": 2, "machines": 2,
                                 "rounds": 2}
    assert document["lake"]["syncs"] == 8 and document["baseline"]["syncs"] == 8
    assert {worker["machine"] for worker in document["lake"]["workers"]} == {0, 1}
    assert document["extrapolation"]["syncs_per_day"] == 16_500
