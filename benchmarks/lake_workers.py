"""The DuckLake layout measured: W worker processes on M "machines" syncing P practices
through one lake whose catalog is in Postgres, against ONE worker in the local layout.

    .venv/bin/python -m benchmarks.lake_workers [--practices 40] [--accounts 40]
        [--workers 4] [--machines 2] [--json out.json]

What runs (every piece a process of its own):

    Postgres          a throw-away server (`balances_pipeline_tests/postgres_server.py`),
                      one database `lake` holding the DuckLake catalog
    data path         one directory every worker writes the lake's Parquet files to
    simulator         `balances simulator serve`: P practices of `--accounts` accounts,
                      aging-report mode (the default source), every report built before
                      timing (`measure._warm_up`)
    baseline          ONE worker process in the local layout (no lake variables): the P
                      practices synced one after the other, twice (round 2 replaces round
                      1's data)
    lake run          W worker processes, each with a BALANCES_HOME of its own (simplest,
                      and what a run worker on Kubernetes has); "machine" k is a label of a
                      block of W/M workers: they share this host's cores, its disk and a
                      Postgres on loopback. All are started, attach to the lake, then begin
                      at one signal. Round 1: each worker syncs its share of the practices
                      one after the other. Round 2 (after every worker finished round 1):
                      every practice synced AGAIN, by a worker of the next machine (so
                      each publish replaces rows another worker wrote, and the worker has
                      no local trace of the practice).

Each sync is `balances_pipeline.pipeline.sync.sync_practice(practice, layout)`: no Dagster
(its run set-up and event writes are the same in both layouts: we measure storage). Each
worker reports its syncs, failures (error class, one line), wall seconds per round,
per-sync seconds, its use of the lake's one-writer lock (`lake_lock.STATS`) and its
conflict retries (`lake.conflict_retries`), and its CPU seconds. Then the lake is read
read-only and checked: every practice holds exactly the rows of its latest sync (one
sync_id, the one `published_snapshots` and the latest `sync_runs` row name), as many as
the simulator's aging report has accounts, with the report's balances; no sync failed.

The extrapolation uses round 2 (a practice synced again: the steady state of hourly
syncs): the lock is held `held` seconds per sync, so 16,500 syncs a day (5,000 practices,
10 % of them hourly: 5,000 + 500 x 23) keep it busy held x 16,500 / 3,600 hours a day, and
one lake carries at most 86,400 / held syncs a day before the single lock saturates.
The benchmark prints figures; it asserts only correctness (exit status 1 when it fails).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from benchmarks.common import (
    AGING_ENDPOINT,
    AS_OF,
    DEVELOPER_KEY_ENV,
    PAGE_ROWS,
    RESULT_MARK,
    BenchError,
)
from benchmarks.fleet import _key_env

WORKER_FLAG = "--worker"
READY_MARK = "LAKE_WORKER_READY"
ROUND_MARK = "LAKE_WORKER_ROUND_DONE"
GO = "go"
ROUNDS = 2
WORKER_TIMEOUT_SECONDS = 3600.0
LINE_PREFIX = "lake_workers"
# The extrapolation: 5,000 practices a day, 10 % of them hourly (23 more syncs each).
FLEET_PRACTICES = 5_000
HOURLY_SHARE = 0.10
SYNCS_PER_DAY = FLEET_PRACTICES + int(FLEET_PRACTICES * HOURLY_SHARE) * 23  # 16,500
DAY_SECONDS = 86_400
LAKE_DATABASE = "lake"
LAKE_ENV_NAMES = ("BALANCES_WAREHOUSE_CATALOG", "BALANCES_WAREHOUSE_DATA_PATH")


def practice_ids(count: int) -> list[str]:
    return [f"lake_{index:03d}" for index in range(1, count + 1)]


def machine_of(worker: int, workers: int, machines: int) -> int:
    """Workers are split over machines in contiguous blocks."""
    return worker * machines // workers


def assignments(ids: list[str], workers: int, machines: int) -> list[list[list[str]]]:
    """Per worker, its practices of each round: round 1 its share (round-robin), round 2
    the share of the worker one machine further on (another worker when M = 1)."""
    shares = [ids[worker::workers] for worker in range(workers)]
    shift = (workers // machines) % workers if workers > 1 else 0
    if workers > 1 and shift == 0:
        shift = 1
    return [[shares[worker], shares[(worker + shift) % workers]] for worker in range(workers)]


# --- the worker process -------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _wait_go(stdin: IO[str]) -> None:
    line = stdin.readline()
    if line.strip() != GO:
        raise SystemExit(f"lake worker: expected {GO!r} from the parent, got {line!r}")


# Frames of the lock's own machinery: a unit's call site is the first frame outside them.
_MACHINERY = ("lake_lock.py", "working_db.py", "contextlib.py", "lake.py")


def _call_site() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(_MACHINERY):
        frame = frame.f_back
    if frame is None:
        return "unknown"
    return f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}"


def _record_units(lake_lock: Any, units: list[tuple[str, float]]) -> None:
    """Each unit's held seconds and call site, appended to `units` (the benchmark's own
    wrapper of the lock's release: the lock itself is unchanged)."""
    original = lake_lock._ProcessLock.release

    def release(self: Any) -> None:
        before = lake_lock.STATS.held_seconds
        try:
            original(self)
        finally:
            held = lake_lock.STATS.held_seconds - before
            if held > 0:
                units.append((_call_site(), held))

    lake_lock._ProcessLock.release = release


def _sites(units: list[tuple[str, float]]) -> dict[str, list[float]]:
    sites: dict[str, list[float]] = {}
    for site, held in units:
        count, total = sites.get(site, [0, 0.0])
        sites[site] = [count + 1, total + held]
    return sites


def worker_main(params: dict[str, Any]) -> dict[str, Any]:
    """One worker: attach (outside the timing), then each round's practices in order, a
    barrier with the parent between rounds."""
    from balances_pipeline.config import load_practices
    from balances_pipeline.pipeline.sync import sync_practice
    from balances_pipeline.settings import Settings
    from balances_pipeline.storage import lake, lake_lock
    from balances_pipeline.storage.working_db import WorkingDatabase

    settings = Settings.from_env()
    layout = settings.layout()
    practices = load_practices(Path(params["practices_file"]))
    started = time.perf_counter()
    with WorkingDatabase(layout).connect() as con:  # the lake attached (or created) once
        con.execute("SELECT 1").fetchall()
    warm_up = time.perf_counter() - started
    units: list[tuple[str, float]] = []
    _record_units(lake_lock, units)
    print(READY_MARK, flush=True)
    _wait_go(sys.stdin)
    rounds = []
    for number, round_ids in enumerate(params["rounds"], start=1):
        lock_before = lake_lock.STATS.as_dict()
        retries_before, cpu_before = lake.conflict_retries, _cpu_seconds()
        round_started = time.perf_counter()
        syncs, failures = [], []
        units.clear()
        for practice_id in round_ids:
            clock = time.perf_counter()
            try:
                outcome = sync_practice(practices.practice(practice_id), layout,
                                        as_of=settings.as_of)
            except Exception as error:  # noqa: BLE001 - every failure is a figure
                failures.append({"practice_id": practice_id, "error_class":
                                 type(error).__name__, "message": _one_line(error),
                                 "seconds": time.perf_counter() - clock})
                continue
            syncs.append({"practice_id": practice_id, "sync_id": outcome.sync_id,
                          "accounts": outcome.accounts, "seconds": time.perf_counter() - clock,
                          "finished_at": time.time()})
        wall = time.perf_counter() - round_started
        lock_after = lake_lock.STATS.as_dict()
        rounds.append({
            "round": number, "wall_seconds": wall, "syncs": syncs, "failures": failures,
            "cpu_seconds": _cpu_seconds() - cpu_before,
            "lock": {key: lock_after[key] - lock_before[key] for key in lock_after},
            "conflict_retries": lake.conflict_retries - retries_before,
            "unit_seconds": [held for _, held in units], "sites": _sites(units),
        })
        print(f"{ROUND_MARK} {number}", flush=True)
        if number < len(params["rounds"]):
            _wait_go(sys.stdin)
    lake.CONNECTIONS.close_all()
    return {"worker": params["worker"], "machine": params["machine"],
            "layout": "lake" if settings.lake is not None else "local",
            "warm_up_seconds": warm_up, "rounds": rounds, "peak_rss_mb": _peak_rss_mb()}


# --- the parent: processes and barriers ---------------------------------------------------


class WorkerGroup:
    """Worker processes started together and kept in step: all attach, then each round
    begins for all at one signal once every worker finished the previous one."""

    def __init__(self, specs: list[dict[str, Any]], env: dict[str, str], logs: Path) -> None:
        clone = str(Path(__file__).resolve().parents[1])
        self.processes: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []
        logs.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            worker_env = {**env, **spec.pop("env"), "PYTHONPATH": os.pathsep.join(
                filter(None, [clone, env.get("PYTHONPATH")]))}
            log = logs / f"worker-{spec['worker']}.stderr"
            self.logs.append(log)
            with log.open("w", encoding="utf-8") as errors:
                self.processes.append(subprocess.Popen(  # noqa: S603 - our own module
                    [sys.executable, "-m", "benchmarks.lake_workers", WORKER_FLAG,
                     json.dumps(spec)],
                    env=worker_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=errors, text=True,
                ))
        self.timer = threading.Timer(WORKER_TIMEOUT_SECONDS, self.kill)
        self.timer.daemon = True
        self.timer.start()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()

    def _expect(self, index: int, mark: str) -> str:
        process = self.processes[index]
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(mark):
                return line
        process.wait()
        tail = self.logs[index].read_text(encoding="utf-8", errors="replace").strip()
        last = tail.splitlines()[-1] if tail else "no output"
        raise BenchError(f"lake worker {index} exited ({process.returncode}) before"
                         f" {mark.strip()}: {last}")

    def barrier(self, mark: str) -> None:
        for index in range(len(self.processes)):
            self._expect(index, mark)

    def go(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(GO + "\n")
            process.stdin.flush()

    def run(self, rounds: int, on_ready: Callable[[], None] | None = None
            ) -> tuple[list[dict[str, Any]], list[float]]:
        """The results of every worker, and the parent's wall seconds of each round;
        `on_ready` runs once every worker attached, before the first round."""
        try:
            self.barrier(READY_MARK)
            if on_ready is not None:
                on_ready()
            walls = []
            for number in range(1, rounds + 1):
                started = time.perf_counter()
                self.go()
                self.barrier(f"{ROUND_MARK} {number}")
                walls.append(time.perf_counter() - started)
            results = [json.loads(self._expect(index, RESULT_MARK)[len(RESULT_MARK):])
                       for index in range(len(self.processes))]
            for process in self.processes:
                process.wait(timeout=120)
            return results, walls
        finally:
            self.timer.cancel()
            self.kill()
            for process in self.processes:
                for stream in (process.stdin, process.stdout):
                    if stream is not None:
                        stream.close()


# --- measurements outside the workers -----------------------------------------------------


def _process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live children, and its reaped children."""
    import psutil

    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                continue
        return total
    except psutil.Error:
        return float("nan")


def _postmaster_pid(server) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _simulator_pid() -> int | None:
    import psutil

    for child in psutil.Process().children():
        try:
            if "simulator" in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    return None


def _catalog_counters(server) -> dict[str, int]:
    """The lake database's transaction and row counters (pg_stat_database), its number of
    DuckLake snapshots and of data files."""
    import psycopg2

    connection = psycopg2.connect(server.dsn(LAKE_DATABASE))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute(
                "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
                " tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
                [LAKE_DATABASE])
            row = cursor.fetchone()
            counters = dict(zip(("xact_commit", "xact_rollback", "tup_returned",
                                 "tup_fetched", "tup_inserted", "tup_updated",
                                 "tup_deleted"), row, strict=True))
            cursor.execute("SELECT to_regclass('public.ducklake_snapshot') IS NOT NULL")
            if cursor.fetchone()[0]:
                cursor.execute("SELECT count(*) FROM ducklake_snapshot")
                counters["ducklake_snapshots"] = cursor.fetchone()[0]
                cursor.execute("SELECT count(*) FROM ducklake_data_file"
                               " WHERE end_snapshot IS NULL")
                counters["live_data_files"] = cursor.fetchone()[0]
                cursor.execute("SELECT count(*) FROM ducklake_data_file")
                counters["data_files_ever"] = cursor.fetchone()[0]
                cursor.execute("SELECT relname, seq_scan, seq_tup_read, coalesce(idx_tup_fetch,"
                               " 0) FROM pg_stat_user_tables WHERE relname LIKE 'ducklake%'")
                for name, scans, rows_read, fetched in cursor.fetchall():
                    counters[f"seq_scan:{name}"] = scans
                    counters[f"rows_read:{name}"] = rows_read + fetched
            return counters
    finally:
        connection.close()


def _directory_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def _aging_report(base_url: str, env: dict[str, str], practice_id: str) -> dict[str, Decimal]:
    """The simulator's aging report of a practice: account id -> balance total."""
    import requests

    headers = {"Authorization": f"ODFHIR {env[DEVELOPER_KEY_ENV]}/{env[_key_env(practice_id)]}"}
    report: dict[str, Decimal] = {}
    offset = 0
    with requests.Session() as session:
        while True:
            response = session.get(f"{base_url}/{AGING_ENDPOINT}", headers=headers, timeout=120,
                                   params={"DateAsOf": AS_OF.isoformat(), "Offset": offset})
            response.raise_for_status()
            page = json.loads(response.content, parse_float=Decimal)
            for row in page:
                report[str(row["PatNum"])] = Decimal(str(row["BalTotal"]))
            if len(page) < PAGE_ROWS:
                return report
            offset += len(page)


# --- correctness --------------------------------------------------------------------------


def verify_lake(lake_settings, workdir: Path, expected: dict[str, dict[str, Decimal]],
                results: list[dict[str, Any]]) -> dict[str, Any]:
    """Read the lake read-only (as an analyst would) and check every practice."""
    from balances_pipeline.storage import lake
    from balances_pipeline.storage.duck import DuckSettings

    latest: dict[str, tuple[float, str]] = {}
    failures = []
    for result in results:
        for round_ in result["rounds"]:
            failures += round_["failures"]
            for sync in round_["syncs"]:
                if sync["practice_id"] not in latest or latest[sync["practice_id"]][0] < \
                        sync["finished_at"]:
                    latest[sync["practice_id"]] = (sync["finished_at"], sync["sync_id"])
    con = lake.open_lake(DuckSettings("256MB", workdir / "reader_tmp"), lake_settings,
                         read_only=True)
    try:
        con.execute(f"USE {lake.ALIAS}")

        def grouped(sql: str) -> dict[str, list[tuple]]:
            found: dict[str, list[tuple]] = {}
            for row in con.execute(sql).fetchall():
                found.setdefault(row[0], []).append(row[1:])
            return found

        balances = grouped("SELECT practice_id, account_id, balance_total, sync_id"
                           " FROM account_balances")
        outstanding = grouped("SELECT practice_id, count(*) FROM outstanding_balances"
                              " GROUP BY practice_id")
        summary = grouped("SELECT practice_id, account_count FROM aging_summary")
        published = grouped("SELECT practice_id, sync_id FROM"  # noqa: S608 - our schema
                            f" {lake.WORKING_SCHEMA}.published_snapshots")
        runs = grouped("SELECT practice_id, sync_id, status FROM sync_runs"
                       " ORDER BY practice_id, started_at")
    finally:
        con.close()
    problems = [f"{f['practice_id']}: sync failed: {f['error_class']}: {f['message']}"
                for f in failures]
    for practice_id, report in expected.items():
        rows = balances.get(practice_id, [])
        sync_ids = sorted({row[2] for row in rows})
        last = latest.get(practice_id, (0.0, None))[1]
        practice_runs = runs.get(practice_id, [])
        checks = {
            "one sync's rows": len(sync_ids) == 1,
            "the latest sync's rows": sync_ids == [last],
            "published_snapshots names it": published.get(practice_id) == [(last,)],
            "the latest sync_runs row is it, a success": bool(practice_runs)
            and practice_runs[-1] == (last, "success"),
            f"{ROUNDS} successful sync_runs": [r[1] for r in practice_runs] == ["success"]
            * ROUNDS,
            "as many rows as the report's accounts": len(rows) == len(report),
            "the report's balances": {row[0]: row[1] for row in rows} == report,
            "outstanding_balances count": outstanding.get(practice_id) == [(len(report),)],
            "aging_summary account_count": summary.get(practice_id) == [(len(report),)],
        }
        problems += [f"{practice_id}: not {name} (sync ids in the lake {sync_ids}, latest"
                     f" {last}, {len(rows)} rows, report {len(report)} accounts)"
                     for name, ok in checks.items() if not ok]
    extra = sorted(set(balances) - set(expected))
    if extra:
        problems.append(f"rows of practices not synced: {extra}")
    return {"passed": not problems, "practices_checked": len(expected),
            "failed_syncs": len(failures), "problems": problems[:50],
            "problem_count": len(problems)}


def verify_baseline(results: list[dict[str, Any]],
                    expected: dict[str, dict[str, Decimal]]) -> dict[str, Any]:
    """The baseline's syncs all succeeded, each with the report's number of accounts."""
    problems = []
    for result in results:
        for round_ in result["rounds"]:
            problems += [f"{f['practice_id']}: sync failed: {f['error_class']}: {f['message']}"
                         for f in round_["failures"]]
            problems += [f"{s['practice_id']}: {s['accounts']} accounts, report"
                         f" {len(expected[s['practice_id']])}" for s in round_["syncs"]
                         if s["accounts"] != len(expected[s["practice_id"]])]
    return {"passed": not problems, "problems": problems[:50]}


# --- figures ------------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize_round(results: list[dict[str, Any]], number: int, practices: int,
                    parent_wall: float) -> dict[str, Any]:
    rounds = [result["rounds"][number - 1] for result in results]
    seconds = [sync["seconds"] for round_ in rounds for sync in round_["syncs"]]
    syncs = len(seconds)
    lock = {key: sum(round_["lock"][key] for round_ in rounds)
            for key in ("units", "wait_seconds", "held_seconds")}
    retries = sum(round_["conflict_retries"] for round_ in rounds)
    cpu = sum(round_["cpu_seconds"] for round_ in rounds)
    sync_total = sum(seconds)
    wall = max(round_["wall_seconds"] for round_ in rounds)
    unit_seconds = [held for round_ in rounds for held in round_["unit_seconds"]]
    median_unit = statistics.median(unit_seconds) if unit_seconds else 0.0
    sites: dict[str, list[float]] = {}
    for round_ in rounds:
        for site, (count, held) in round_["sites"].items():
            total = sites.setdefault(site, [0, 0.0])
            total[0] += count
            total[1] += held
    by_site = {site: {"units_per_sync": count / syncs, "held_seconds_per_sync": held / syncs}
               for site, (count, held) in sorted(sites.items(), key=lambda i: -i[1][1])} \
        if syncs else {}
    return {
        "round": number, "syncs": syncs,
        "failures": sum(len(round_["failures"]) for round_ in rounds),
        "wall_seconds": wall, "parent_wall_seconds": parent_wall,
        "practices_per_second": practices / wall if wall else float("nan"),
        "seconds_per_practice": wall / practices if practices else float("nan"),
        "sync_seconds_median": statistics.median(seconds) if seconds else float("nan"),
        "sync_seconds_p95": _quantile(seconds, 0.95),
        "sync_seconds_total": sync_total,
        "lock": lock,
        "lock_units_per_sync": lock["units"] / syncs if syncs else float("nan"),
        "lock_wait_share": lock["wait_seconds"] / sync_total if sync_total else 0.0,
        "lock_held_per_sync": lock["held_seconds"] / syncs if syncs else float("nan"),
        "lock_busy_share_of_wall": lock["held_seconds"] / wall if wall else float("nan"),
        "median_unit_seconds": median_unit,
        "unit_seconds_p95": _quantile(unit_seconds, 0.95),
        "held_by_call_site": by_site,
        "conflict_retries": retries,
        "conflict_retry_cost_seconds": retries * median_unit,
        "worker_cpu_seconds": cpu,
        "worker_cpu_seconds_per_sync": cpu / syncs if syncs else float("nan"),
    }


def extrapolate(held_per_sync: float, cpu_per_sync: float,
                postgres_cpu_per_sync: float) -> dict[str, Any]:
    busy_hours = held_per_sync * SYNCS_PER_DAY / 3600
    return {
        "practices": FLEET_PRACTICES, "hourly_share": HOURLY_SHARE,
        "syncs_per_day": SYNCS_PER_DAY, "held_seconds_per_sync": held_per_sync,
        "lock_busy_hours_per_day": busy_hours,
        "lock_busy_fraction_of_day": busy_hours / 24,
        "max_syncs_per_day_before_lock_saturates": (DAY_SECONDS / held_per_sync
                                                    if held_per_sync else float("inf")),
        "worker_cpu_seconds_per_sync": cpu_per_sync,
        "postgres_cpu_seconds_per_sync": postgres_cpu_per_sync,
        "worker_core_hours_per_day": cpu_per_sync * SYNCS_PER_DAY / 3600,
        "postgres_core_hours_per_day": postgres_cpu_per_sync * SYNCS_PER_DAY / 3600,
    }


def report_lines(document: dict[str, Any]) -> list[str]:
    machine, sizes = document["machine"], document["sizes"]
    prefix = (f"{LINE_PREFIX} [{machine['cpu_model']}, {machine['cores_logical']} cores;"
              f" {sizes['practices']} practices x {sizes['accounts']} accounts,"
              f" {sizes['workers']} workers on {sizes['machines']} machines]")
    base, lake_rounds = document["baseline"]["rounds"], document["lake"]["rounds"]
    catalog = document["lake"]["catalog"]
    lines = []
    for b, k in zip(base, lake_rounds, strict=True):
        label = "first sync" if b["round"] == 1 else "sync again, rows replaced"
        lines.append(
            f"{prefix} round {b['round']} ({label}): baseline 1 local worker"
            f" {b['wall_seconds']:.1f} s = {b['seconds_per_practice']:.3f} s/practice"
            f" (sync median {b['sync_seconds_median']:.3f} s, p95 {b['sync_seconds_p95']:.3f}"
            f" s); lake {k['wall_seconds']:.1f} s = {k['practices_per_second']:.2f}"
            f" practices/s vs {b['practices_per_second']:.2f} → ratio"
            f" {k['practices_per_second'] / b['practices_per_second']:.2f}"
            f" (lake sync median {k['sync_seconds_median']:.3f} s, p95"
            f" {k['sync_seconds_p95']:.3f} s)")
        lines.append(
            f"{prefix} round {k['round']} lake lock: {k['lock']['units']} units"
            f" ({k['lock_units_per_sync']:.1f} per sync), wait {k['lock']['wait_seconds']:.1f}"
            f" s = {k['lock_wait_share']:.0%} of sync time, held"
            f" {k['lock']['held_seconds']:.1f} s = {k['lock_held_per_sync']:.3f} s per sync,"
            f" busy {k['lock_busy_share_of_wall']:.0%} of the round's wall; conflict retries"
            f" {k['conflict_retries']} (cost ≈ {k['conflict_retries']} x"
            f" {k['median_unit_seconds']:.3f} s median unit ="
            f" {k['conflict_retry_cost_seconds']:.2f} s)")
        sites = ", ".join(f"{site} {figures['held_seconds_per_sync']:.3f} s"
                          f" ({figures['units_per_sync']:.1f} units)"
                          for site, figures in list(k["held_by_call_site"].items())[:6])
        lines.append(f"{prefix} round {k['round']} lock held per sync by call site: {sites}")
    syncs = document["lake"]["syncs"]
    lines.append(
        f"{prefix} CPU per sync: lake workers {document['lake']['worker_cpu_seconds_per_sync']:.3f}"
        f" s, Postgres {document['lake']['postgres_cpu_seconds_per_sync']:.3f} s, simulator"
        f" {document['lake']['simulator_cpu_seconds_per_sync']:.3f} s (the PMS: not charged);"
        f" baseline worker {document['baseline']['worker_cpu_seconds_per_sync']:.3f} s;"
        f" catalog {catalog['xact_commit'] / syncs:.0f} Postgres transactions and"
        f" {catalog['tup_returned'] / syncs:,.0f} rows read per sync;"
        f" {catalog.get('ducklake_snapshots', 0)} lake snapshots,"
        f" {catalog.get('live_data_files', 0)} live data files"
        f" ({document['lake']['data_path_files']} files,"
        f" {document['lake']['data_path_bytes'] / 1e6:.1f} MB in the data path)")
    read = sorted(((value, key.split(":", 1)[1]) for key, value in catalog.items()
                   if key.startswith("rows_read:")), reverse=True)[:5]
    lines.append(f"{prefix} catalog rows read per sync, by table: " + ", ".join(
        f"{name} {value / syncs:,.0f}" for value, name in read))
    x = document["extrapolation"]
    lines.append(
        f"{prefix} extrapolation to {x['practices']:,} practices, {x['hourly_share']:.0%}"
        f" hourly ({x['syncs_per_day']:,} syncs/day) from round 2: lock held"
        f" {x['held_seconds_per_sync']:.3f} s/sync → busy {x['lock_busy_hours_per_day']:.2f}"
        f" h/day = {x['lock_busy_fraction_of_day']:.0%} of the day; one lake carries ≤"
        f" {x['max_syncs_per_day_before_lock_saturates']:,.0f} syncs/day before the lock"
        f" saturates; CPU {x['worker_cpu_seconds_per_sync']:.3f} s/sync in workers"
        f" ({x['worker_core_hours_per_day']:.1f} core-h/day) +"
        f" {x['postgres_cpu_seconds_per_sync']:.3f} s in Postgres"
        f" ({x['postgres_core_hours_per_day']:.1f} core-h/day)")
    check = document["correctness"]
    verdict = "passed" if check["passed"] else f"FAILED ({check['problem_count']} problems)"
    lines.append(
        f"{prefix} correctness: {verdict}: {check['practices_checked']} practices read back"
        f" from the lake read-only, {check['failed_syncs']} failed syncs; baseline"
        f" {'passed' if document['baseline']['correctness']['passed'] else 'FAILED'}")
    lines += [f"{prefix}   problem: {problem}" for problem in check["problems"][:10]]
    return lines


# --- the run ------------------------------------------------------------------------------


def _worker_specs(rounds: list[list[list[str]]], machines: int, practices_file: Path,
                  homes: Path, lake_env: dict[str, str]) -> list[dict[str, Any]]:
    workers = len(rounds)
    specs = []
    for worker, worker_rounds in enumerate(rounds):
        machine = machine_of(worker, workers, machines)
        home = homes / f"machine-{machine}" / f"worker-{worker}"
        specs.append({"worker": worker, "machine": machine, "rounds": worker_rounds,
                      "practices_file": str(practices_file),
                      "env": {**lake_env, "BALANCES_HOME": str(home)}})
    return specs


def _layout_figures(results: list[dict[str, Any]], walls: list[float],
                    practices: int) -> dict[str, Any]:
    rounds = [summarize_round(results, number, practices, walls[number - 1])
              for number in range(1, ROUNDS + 1)]
    syncs = sum(r["syncs"] for r in rounds)
    cpu = sum(r["worker_cpu_seconds"] for r in rounds)
    return {"rounds": rounds, "syncs": syncs, "worker_cpu_seconds": cpu,
            "worker_cpu_seconds_per_sync": cpu / syncs if syncs else float("nan"),
            "warm_up_seconds": [r["warm_up_seconds"] for r in results],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results), "workers": results}


def measure(practices: int, accounts: int, workers: int, machines: int,
            workdir: Path) -> dict[str, Any]:
    from balances_pipeline.settings import LakeSettings
    from balances_pipeline_tests.conftest import lake_catalog
    from balances_pipeline_tests.postgres_server import PostgresServer
    from benchmarks.fleet import simulator_config, warm_up_and_list
    from benchmarks.measure import _bench_env, _machine, _simulator

    machine = _machine()
    env, _ = _bench_env(accounts, workdir)
    for name in LAKE_ENV_NAMES:
        env.pop(name, None)
    ids = practice_ids(practices)
    sim_config = simulator_config(workdir / "simulator.yaml", ids, accounts, env)
    clock = time.perf_counter()
    with PostgresServer() as server, _simulator(sim_config, 0, env,
                                                workdir / "simulator.log") as base_url:
        server.create_database(LAKE_DATABASE)
        lake_settings = LakeSettings(lake_catalog(server, LAKE_DATABASE),
                                     str(workdir / "shared_lake_data"))
        lake_env = {LAKE_ENV_NAMES[0]: lake_settings.catalog,
                    LAKE_ENV_NAMES[1]: lake_settings.data_path}
        practices_file = warm_up_and_list(ids, base_url, env, workdir / "practices.yaml")
        expected = {pid: _aging_report(base_url, env, pid) for pid in ids}
        simulator_pid = _simulator_pid()

        baseline_specs = _worker_specs([[ids] * ROUNDS], 1, practices_file,
                                       workdir / "baseline", {})
        baseline_results, baseline_walls = WorkerGroup(
            baseline_specs, env, workdir / "logs-baseline").run(ROUNDS)
        baseline = _layout_figures(baseline_results, baseline_walls, practices)
        baseline["correctness"] = verify_baseline(baseline_results, expected)

        specs = _worker_specs(assignments(ids, workers, machines), machines, practices_file,
                              workdir / "lake_homes", lake_env)
        postmaster = _postmaster_pid(server)

        def counters() -> dict[str, Any]:
            return {"postgres": _process_tree_cpu(postmaster),
                    "simulator": _process_tree_cpu(simulator_pid) if simulator_pid else 0.0,
                    "catalog": _catalog_counters(server)}

        before: dict[str, Any] = {}
        # From the moment every worker attached (the lake created): the rounds only.
        results, walls = WorkerGroup(specs, env, workdir / "logs-lake").run(
            ROUNDS, on_ready=lambda: before.update(counters()))
        time.sleep(1.0)  # the workers' Postgres sessions end and are reaped
        after = counters()
        lake_figures = _layout_figures(results, walls, practices)
        syncs = max(lake_figures["syncs"], 1)
        files, size = _directory_size(Path(lake_settings.data_path))
        lake_figures.update({
            "postgres_cpu_seconds": after["postgres"] - before["postgres"],
            "postgres_cpu_seconds_per_sync": (after["postgres"] - before["postgres"]) / syncs,
            "simulator_cpu_seconds_per_sync": (after["simulator"] - before["simulator"]) / syncs,
            "catalog": {key: value - before["catalog"].get(key, 0)
                        for key, value in after["catalog"].items()},
            "catalog_totals": after["catalog"],
            "data_path_files": files, "data_path_bytes": size,
        })
        correctness = verify_lake(lake_settings, workdir, expected, results)
    steady = lake_figures["rounds"][-1]
    return {
        "command": "python -m benchmarks.lake_workers " + " ".join(sys.argv[1:]),
        "machine": machine,
        "sizes": {"practices": practices, "accounts": accounts, "workers": workers,
                  "machines": machines, "rounds": ROUNDS},
        "notes": {
            "homes": "every worker has a BALANCES_HOME of its own",
            "machines": "a machine is a label of a block of workers; all share this host",
            "syncs": "balances_pipeline.pipeline.sync.sync_practice, no Dagster",
            "round_2": "every practice synced again by a worker of the next machine",
        },
        "baseline": baseline, "lake": lake_figures,
        "extrapolation": extrapolate(steady["lock_held_per_sync"],
                                     steady["worker_cpu_seconds_per_sync"],
                                     lake_figures["postgres_cpu_seconds_per_sync"]),
        "correctness": correctness,
        "total_seconds": time.perf_counter() - clock,
    }


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lake_workers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--machines", type=int, default=2)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (homes, lake data, logs)")
    arguments = parser.parse_args(argv)
    if arguments.practices < 1 or arguments.accounts < 1 or arguments.workers < 1:
        parser.error("--practices, --accounts and --workers must be at least 1")
    if not 1 <= arguments.machines <= arguments.workers:
        parser.error("--machines must be between 1 and --workers")
    return arguments


def main(argv: list[str]) -> int:
    if argv[:1] == [WORKER_FLAG] and len(argv) == 2:
        print(RESULT_MARK + json.dumps(worker_main(json.loads(argv[1]))), flush=True)
        return 0
    arguments = _arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="balances-lake-bench-"))
    try:
        document = measure(arguments.practices, arguments.accounts, arguments.workers,
                           arguments.machines, workdir)
    except (BenchError, OSError, RuntimeError) as error:
        print(f"lake_workers: error: {_one_line(error)} (work directory {workdir})",
              file=sys.stderr)
        return 1
    for line in report_lines(document):
        print(line, flush=True)
    print(f"{LINE_PREFIX}: total {document['total_seconds']:.1f} s")
    if arguments.json_path is not None:
        arguments.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n",
                                       encoding="utf-8")
        print(f"{LINE_PREFIX}: figures written to {arguments.json_path}")
    if arguments.keep:
        print(f"{LINE_PREFIX}: work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if document["correctness"]["passed"] and \
        document["baseline"]["correctness"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
