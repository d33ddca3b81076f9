"""`balances bench`: measure one practice's sync against the bundled simulator.

Every measured piece runs in a process of its own, so that wall times and peak memory are
those of that piece alone:

    setup worker      generates the practice's ledger and its aging report in-process
                      (the simulator's cost: reported, never charged to the sync)
    simulator         `balances simulator serve` on loopback, warmed with one request
    baseline worker   the bare minimum client: requests.Session + json.loads over the same
                      aging report pages, no validation, no warehouse
    sync worker       the practice's first sync (`aging_report` mode) into a temporary
                      BALANCES_HOME: its wall, imports and peak RSS
    rounds worker     sync work: in one process and one BALANCES_HOME (warmed by a third
                      practice's sync), rounds of the bare loop, the practice's sync and
                      an empty practice's sync, in every order in turn; sync work is the
                      median of each round's sync minus its empty sync

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
from collections.abc import Sequence
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
    growth_lines,
)
from benchmarks.workers import _worker_ledger_aging, _worker_main  # noqa: F401

MODES = ("aging_report", "ledger", "both")
# The default sizes: three of each figure, within about ten minutes on the 2-core machine.
DEFAULT_ACCOUNTS = (1_000, 5_000, 20_000)
DEFAULT_LEDGER_ROWS = (100_000, 300_000, 1_000_000)
DEFAULT_FLEET = (5, 10, 20)
# aging_report syncs are short (under a second, most of it fixed cost): sync work is the
# median over this many rounds (times --repeat) of a sync minus the same round's empty
# sync; 12 rounds run each of the six orders of a round's three pieces twice.
AGING_REPORT_ROUNDS = 12


def _check_arguments(accounts: int, port: int, repeat: int, ledger_rows: int, changes: int,
                     fleet: int, fleet_accounts: int, mode: str) -> str | None:
    if accounts < 1 or repeat < 1 or ledger_rows < 1 or changes < 1 or not 0 <= port <= 65535:
        return ("--accounts, --repeat, --ledger-rows and --changes must be at least 1, "
                "--port within 0-65535")
    if fleet == 1 or fleet < 0 or fleet_accounts < 1:
        return "--fleet must be 0 (skip) or at least 2, --fleet-accounts at least 1"
    if mode not in MODES:
        return f"--mode must be one of {', '.join(MODES)}"
    return None


def _measure_size(
    machine: dict[str, Any], accounts: int, port: int, repeat: int, mode: str,
    ledger_rows: int, changes: int, fleet: int, fleet_accounts: int, workdir: Path,
) -> tuple[list[str], dict[str, Any]]:
    """Every figure at one size: its lines and its JSON document."""
    measured: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None
    fleet_summary: dict[str, Any] | None = None
    if mode in ("aging_report", "both"):
        rounds = AGING_REPORT_ROUNDS * repeat
        measured = _measure(accounts, port, rounds, workdir / "aging_report")
        summary = _summarize(accounts, repeat, measured)
    if mode in ("ledger", "both"):
        ledger = _measure_ledger(accounts, port, changes, ledger_rows, workdir / "ledger")
    if fleet:
        fleet_summary = summarize_fleet(
            measure_fleet(fleet, fleet_accounts, port, repeat, workdir / "fleet")
        )
    ledger_as_of = date.fromisoformat(ledger["as_of"]) if ledger else None
    lines = _header_lines(machine, accounts, mode, repeat, ledger_as_of)
    if summary is not None:
        lines += _lines(measured, summary)
    if ledger is not None:
        lines += _ledger_lines(accounts, ledger)
    if fleet_summary is not None:
        lines += fleet_lines(machine, fleet_summary)
    document = {"machine": machine, "mode": mode, "accounts": accounts, "summary": summary,
                **measured, "ledger": ledger, "fleet": fleet_summary}
    return lines, document


def _as_sizes(value: int | Sequence[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def _defaults(default: tuple[int, ...], count: int) -> list[int]:
    """The defaults at three sizes; at another number of sizes, the largest at each."""
    return list(default) if count == len(default) else [default[-1]]


def run_benchmark(
    accounts: int | Sequence[int] = DEFAULT_ACCOUNTS,
    port: int = 0,
    repeat: int = 1,
    json_path: str | Path | None = None,
    mode: str = "both",
    ledger_rows: int | Sequence[int] | None = None,
    changes: int = 20,
    fleet: int | Sequence[int] | None = None,
    fleet_accounts: int = 10,
) -> int:
    """Run the benchmark at each size and print its figures; 0 on success, 1 with a
    one-line error. `accounts`, `ledger_rows` and `fleet` are one size each, or one per
    size (a single value is used at every size)."""
    sizes = _as_sizes(accounts)
    count = len(sizes)
    rows = _as_sizes(ledger_rows) if ledger_rows is not None else _defaults(
        DEFAULT_LEDGER_ROWS, count)
    fleets = _as_sizes(fleet) if fleet is not None else _defaults(DEFAULT_FLEET, count)
    rows = rows * count if len(rows) == 1 else rows
    fleets = fleets * count if len(fleets) == 1 else fleets
    problem = None if len(rows) == len(fleets) == count else (
        "--ledger-rows and --fleet take one value, or one per size of --accounts")
    for index in range(count):
        problem = problem or _check_arguments(sizes[index], port, repeat, rows[index], changes,
                                              fleets[index], fleet_accounts, mode)
    if problem:
        print(f"balances bench: error: {problem}", file=sys.stderr)
        return 2
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="balances-bench-"))
    documents = []
    try:
        machine = _machine()
        for index, size in enumerate(sizes):
            lines, document = _measure_size(machine, size, port, repeat, mode, rows[index],
                                            changes, fleets[index], fleet_accounts,
                                            workdir / f"size-{index}")
            if count > 1:
                print(f"--- size {index + 1} of {count}: {size:,} accounts ---")
            for line in lines:
                print(line, flush=True)
            documents.append(document)
    except (BenchError, OSError, ValueError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"balances bench: error: {message}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - clock
    if count > 1:
        for line in growth_lines(documents):
            print(line)
    print(f"benchmark total: {_s(total)}")
    if json_path is not None:
        document = documents[0] if count == 1 else {"machine": machine, "sizes": documents}
        document["total_seconds"] = total
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
