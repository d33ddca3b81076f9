"""Smoke test of `balances bench` at a tiny size: it runs and prints every figure line.

Performance is measured by the benchmark, never asserted here: no timing checks.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import types
from pathlib import Path

import pytest

from balances_pipeline.cli import main
from benchmarks import bench
from benchmarks.bench import run_benchmark

AGING_REPORT_LINES = (
    "data: 1 practice, 300 accounts",
    "simulator setup 300 accounts",
    "baseline bare loop ",
    "first sync 300 accounts (aging_report, ",
    "sync 300 accounts (aging_report): ",
    "sync work 300 accounts (aging_report): ",
    "sync memory: peak RSS ",
    "sync phases: extract ",
    "publish: ",
)
LEDGER_LINES = (
    "ledger data: 1 practice, 300 accounts",
    "ledger baseline bare loop ",
    "ledger full sync 300 accounts: ",
    "ledger full sync work 300 accounts: ",
    "ledger full sync memory (300 accounts, ",
    "ledger changes (300 accounts, ",
    "ledger incremental sync 300 accounts (20 rows changed): ",
    "incremental requests: ",
    "ledger aging transform 20,000 ledger rows",
)
FIGURE_LINES = (
    "balances bench: 300 accounts, mode both",
    "machine: ",
    *AGING_REPORT_LINES,
    *LEDGER_LINES,
    "benchmark total: ",
)


def _line(lines: list[str], prefix: str) -> str:
    return next(line for line in lines if line.startswith(prefix))


def test_bench_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "bench.json"
    assert run_benchmark(accounts=300, json_path=figures, ledger_rows=20_000, fleet=0) == 0
    lines = capsys.readouterr().out.splitlines()
    for prefix in FIGURE_LINES:
        assert any(line.startswith(prefix) for line in lines), f"missing line {prefix!r}"
    sync = _line(lines, "sync 300 accounts")
    for part in ("s wall", "accounts/s", "rows/s", "requests", "retries", "→ ratio"):
        assert part in sync
    first = _line(lines, "first sync 300 accounts")
    for part in ("s wall", "imports", "peak RSS", "→ ratio"):
        assert part in first
    machine = _line(lines, "machine: ")
    for part in ("cores", "GiB RAM", "python", "duckdb", "dagster"):
        assert part in machine
    full = _line(lines, "ledger full sync 300 accounts: ")
    for part in ("s wall", "accounts/s", "ledger rows extracted", "requests", "peak RSS",
                 "→ ratio"):
        assert part in full
    memory = _line(lines, "ledger full sync memory")
    assert "target < 300 MB" in memory and "→ ratio" in memory
    # Every ledger figure names the data size and a ratio to its baseline (the baseline
    # paging line is that baseline; the aging transform's line may say it was skipped).
    assert "300 accounts" in _line(lines, "ledger baseline bare loop ")
    for prefix in LEDGER_LINES[2:-1]:
        line = _line(lines, prefix)
        assert "300 accounts" in line and "ratio" in line, line
    aging = _line(lines, "ledger aging transform")
    assert "skipped" in aging or ("ratio" in aging or "as returned" in aging)

    requests = _line(lines, "incremental requests: ")
    match = re.match(r"incremental requests: ([\d,]+) vs full: ([\d,]+) \(ratio ", requests)
    assert match, requests
    incremental, full_requests = (int(group.replace(",", "")) for group in match.groups())
    assert 0 < incremental < full_requests

    document = json.loads(figures.read_text(encoding="utf-8"))
    summary = document["summary"]
    assert summary["accounts"] == 300
    assert summary["sync_wall_seconds"] > 0 and summary["baseline_wall_seconds"] > 0
    assert summary["sync_peak_rss_mb"] > 0
    # Sync work: the median over rounds of the sync minus the same round's empty sync
    # (the empty practice synced nothing), every round running its three pieces.
    rounds = document["rounds"]
    assert len(rounds) == summary["rounds"] == 12
    assert {tuple(piece["order"]) for piece in rounds} == set(
        itertools.permutations(("bare", "practice", "empty")))
    assert all(piece["empty"]["rows_extracted"] == 0 for piece in rounds)
    differences = sorted(piece["practice"]["wall_seconds"] - piece["empty"]["wall_seconds"]
                         for piece in rounds)
    assert summary["sync_work_seconds"] == pytest.approx(
        (differences[5] + differences[6]) / 2)
    bare = sorted(piece["bare"]["wall_seconds"] for piece in rounds)
    assert summary["sync_work_ratio_to_baseline"] == pytest.approx(
        summary["sync_work_seconds"] / ((bare[5] + bare[6]) / 2))
    assert document["first_sync"]["rows_extracted"] == document["setup"]["aging_rows"]
    assert document["syncs"][0]["rows_extracted"] == document["setup"]["aging_rows"]
    assert document["syncs"][0]["rows_extracted"] == document["baselines"][0]["rows"]
    assert document["syncs"][0]["retries"] == 0
    ledger = document["ledger"]
    assert ledger["full"]["mode"] == "full" and ledger["incremental"]["mode"] == "incremental"
    assert ledger["full"]["rows_extracted"] == ledger["baseline"]["rows"]
    assert ledger["empty"]["rows_extracted"] == 0
    added = sum(ledger["incremental"]["ledger_tables"].values()) - sum(
        ledger["full"]["ledger_tables"].values()
    )
    assert added == 20
    assert ledger["incremental"]["rows_extracted"] < ledger["full"]["rows_extracted"]


def test_bench_ledger_mode_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--accounts", "50", "--mode", "ledger", "--ledger-rows", "1000",
                 "--changes", "3", "--fleet", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("balances bench: 50 accounts, mode ledger")
    assert not any(line.startswith("sync 50 accounts (aging_report)") for line in lines)
    assert any(line.startswith("incremental requests: ") for line in lines)


def test_ledger_aging_worker_reads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType(bench.LEDGER_BENCH_MODULE)
    fake.run = lambda rows=1_000_000: {  # type: ignore[attr-defined]
        "rows": rows, "generate_s": 9.0, "transform_s": 0.3, "baseline_s": 0.2,
    }
    monkeypatch.setitem(sys.modules, bench.LEDGER_BENCH_MODULE, fake)
    result = bench._worker_ledger_aging({"rows": 1000})
    figures = bench._aging_figures(result["result"])
    assert figures == {"seconds": 0.3, "baseline": 0.2, "ratio": pytest.approx(1.5),
                       "rows": 1000.0}
    nested = bench._aging_figures(
        {"ledger_rows": 5, "pipeline": {"seconds": 2.0}, "baseline": {"seconds": 1.0}}
    )
    assert nested["seconds"] == 2.0 and nested["baseline"] == 1.0 and nested["ratio"] == 2.0

    monkeypatch.setitem(sys.modules, bench.LEDGER_BENCH_MODULE,
                        types.ModuleType(bench.LEDGER_BENCH_MODULE))
    assert "skipped" in bench._worker_ledger_aging({"rows": 1000})


def test_bench_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--accounts", "0"], ["--ledger-rows", "0"], ["--changes", "0"]):
        assert main(["bench", *argv]) != 0
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "error" in error


def test_bench_fleet_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "fleet.json"
    assert run_benchmark(accounts=50, mode="aging_report", fleet=3, fleet_accounts=5,
                         json_path=figures) == 0
    line = _line(capsys.readouterr().out.splitlines(), "fleet: 3 practices x 5 accounts")
    for part in ("in ONE Dagster run on", "cores", "per additional practice",
                 "target ≤ 0.5 s → ratio"):
        assert part in line, line
    fleet = json.loads(figures.read_text(encoding="utf-8"))["fleet"]
    assert fleet["practices"] == 3 and fleet["fleet_run_seconds"] > 0
    assert fleet["seconds_per_additional_practice"] == pytest.approx(
        (fleet["fleet_run_seconds"] - fleet["one_practice_run_seconds"]) / 2)
