"""Smoke test of `balances bench` at a tiny size: it runs and prints every figure line.

Performance is measured by the benchmark, never asserted here: no timing checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balances_pipeline.bench import run_benchmark
from balances_pipeline.cli import main

FIGURE_LINES = (
    "balances bench: 300 accounts",
    "machine: ",
    "data: 1 practice, 300 accounts",
    "simulator setup 300 accounts",
    "baseline paging ",
    "sync 300 accounts (aging_report): ",
    "sync memory: peak RSS ",
    "sync phases: extract ",
    "publish: ",
    "benchmark total: ",
)


def test_bench_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "bench.json"
    assert run_benchmark(accounts=300, json_path=figures) == 0
    lines = capsys.readouterr().out.splitlines()
    for prefix in FIGURE_LINES:
        assert any(line.startswith(prefix) for line in lines), f"missing line {prefix!r}"
    sync = next(line for line in lines if line.startswith("sync 300 accounts"))
    for part in ("s wall", "accounts/s", "rows/s", "requests", "retries", "peak RSS",
                 "→ ratio"):
        assert part in sync
    machine = next(line for line in lines if line.startswith("machine: "))
    for part in ("cores", "GiB RAM", "python", "duckdb", "dagster"):
        assert part in machine
    document = json.loads(figures.read_text(encoding="utf-8"))
    summary = document["summary"]
    assert summary["accounts"] == 300
    assert summary["sync_wall_seconds"] > 0 and summary["baseline_wall_seconds"] > 0
    assert summary["sync_peak_rss_mb"] > 0
    assert document["syncs"][0]["rows_extracted"] == document["setup"]["aging_rows"]
    assert document["syncs"][0]["rows_extracted"] == document["baselines"][0]["rows"]
    assert document["syncs"][0]["retries"] == 0


def test_bench_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--accounts", "0"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "error" in error
