"""`balances bench`: measure one practice's sync against the bundled simulator.

Every measured piece runs in a process of its own, so that wall times and peak memory are
those of that piece alone:

    setup worker      generates the practice's ledger and its aging report in-process
                      (the simulator's cost: reported, never charged to the sync)
    simulator         `balances simulator serve` on loopback, warmed with one request
    baseline worker   the bare minimum client: requests.Session + json.loads over the same
                      aging report pages, no validation, no warehouse
    sync worker       `sync_practice` in `aging_report` mode into a temporary BALANCES_HOME

Ledger mode (`--mode ledger|both`) has a simulator of its own, dated today, and a practice
with `source.mode: ledger`, `sync.frequency: hourly` and `BALANCES_AS_OF` fixed at today:

    ledger baseline   the bare paging client over the five ledger endpoints
    full sync worker  the day's first sync: a full refresh of the ledger
    (parent)          adds K payments and adjustments on existing patients through the
                      simulator's `POST /_sim/rows/<practice>/<table>`
    incremental       a second sync worker on the same BALANCES_HOME: reads what changed
    aging worker      `benchmarks.ledger_bench.run(rows)` when it exists:
                      the ledger aging SQL against a hand-written DuckDB query

The fleet figure (`--fleet N`, default 20; 0 skips it): N practices of `--fleet-accounts`
accounts in ONE Dagster run against one practice in one run (`benchmarks/fleet.py`).

Peak RSS is each worker's own `getrusage(RUSAGE_SELF).ru_maxrss`, imports included. Wall
times cover the work only (not interpreter start-up or imports, which are reported apart).
The benchmark prints figures and never asserts a time: performance is measured here, not
tested. Workers are started as `python -m benchmarks.bench <kind> <json params>`.

Modules: `measure` (the parent: simulator, workers, ledger changes), `workers` (the
measured processes), `report` (the figures), `common` (what they share).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

# LEDGER_BENCH_MODULE, _aging_figures and _worker_ledger_aging are read through this module
# by balances_pipeline_tests/test_bench.py.
from benchmarks.common import LEDGER_BENCH_MODULE, BenchError  # noqa: F401
from benchmarks.fleet import fleet_lines, measure_fleet, summarize_fleet
from benchmarks.measure import _machine, _measure, _measure_ledger
from benchmarks.report import (
    _aging_figures,  # noqa: F401
    _header_lines,
    _ledger_lines,
    _lines,
    _s,
    _summarize,
)
from benchmarks.workers import _worker_ledger_aging, _worker_main  # noqa: F401

MODES = ("aging_report", "ledger", "both")


def run_benchmark(
    accounts: int = 50_000,
    port: int = 0,
    repeat: int = 1,
    json_path: str | Path | None = None,
    mode: str = "both",
    ledger_rows: int = 1_000_000,
    changes: int = 20,
    fleet: int = 20,
    fleet_accounts: int = 10,
) -> int:
    """Run the benchmark and print its figures; 0 on success, 1 with a one-line error."""
    if accounts < 1 or repeat < 1 or ledger_rows < 1 or changes < 1 or not 0 <= port <= 65535:
        print("balances bench: error: --accounts, --repeat, --ledger-rows and --changes must "
              "be at least 1, --port within 0-65535", file=sys.stderr)
        return 2
    if fleet == 1 or fleet < 0 or fleet_accounts < 1:
        print("balances bench: error: --fleet must be 0 (skip) or at least 2, "
              "--fleet-accounts at least 1", file=sys.stderr)
        return 2
    if mode not in MODES:
        print(f"balances bench: error: --mode must be one of {', '.join(MODES)}",
              file=sys.stderr)
        return 2
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="balances-bench-"))
    measured: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None
    fleet_summary: dict[str, Any] | None = None
    try:
        machine = _machine()
        if mode in ("aging_report", "both"):
            measured = _measure(accounts, port, repeat, workdir / "aging_report")
            summary = _summarize(accounts, repeat, measured)
        if mode in ("ledger", "both"):
            ledger = _measure_ledger(accounts, port, changes, ledger_rows, workdir / "ledger")
        if fleet:
            fleet_summary = summarize_fleet(
                measure_fleet(fleet, fleet_accounts, port, repeat, workdir / "fleet")
            )
    except (BenchError, OSError, ValueError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"balances bench: error: {message}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - clock
    ledger_as_of = date.fromisoformat(ledger["as_of"]) if ledger else None
    lines = _header_lines(machine, accounts, mode, repeat, ledger_as_of)
    if summary is not None:
        lines += _lines(measured, summary)
    if ledger is not None:
        lines += _ledger_lines(accounts, ledger)
    if fleet_summary is not None:
        lines += fleet_lines(machine, fleet_summary)
    for line in lines:
        print(line)
    print(f"benchmark total: {_s(total)}")
    if json_path is not None:
        document = {
            "machine": machine, "mode": mode, "summary": summary, **measured,
            "ledger": ledger, "fleet": fleet_summary, "total_seconds": total,
        }
        try:
            Path(json_path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            print(f"balances bench: error: cannot write {json_path}: {error.strerror}",
                  file=sys.stderr)
            return 1
        print(f"figures written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
