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

Peak RSS is each worker's own `getrusage(RUSAGE_SELF).ru_maxrss`, imports included. Wall
times cover the work only (not interpreter start-up or imports, which are reported apart).
The benchmark prints figures and never asserts a time: performance is measured here, not
tested. Workers are started as `python -m benchmarks.bench <kind> <json params>`.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

AS_OF = date(2025, 6, 30)
SEED = 7
PRACTICE_ID = "bench_practice"
DEVELOPER_KEY_ENV = "BENCH_OD_DEVELOPER_KEY"
CUSTOMER_KEY_ENV = "BENCH_PRACTICE_OD_CUSTOMER_KEY"
AGING_ENDPOINT = "reports/Aging"
PAGE_ROWS = 100
RSS_TARGET_MB = 300
RSS_TARGET_SIZE = "100,000 accounts / ~1M ledger rows"
AGING_RATIO_TARGET = 1.5
LEDGER_ENDPOINTS = ("patients", "procedurelogs", "claimprocs", "paysplits", "adjustments")
MODES = ("aging_report", "ledger", "both")
LEDGER_BENCH_MODULE = "benchmarks.ledger_bench"
RESULT_MARK = "BENCH_RESULT "
PHASE_ORDER = ("extract", "publish")  # publish: transform + snapshot + atomic switch
LISTEN_TIMEOUT_SECONDS = 120.0
WARMUP_TIMEOUT_SECONDS = 1800.0
WORKER_TIMEOUT_SECONDS = 3600.0
LISTENING_RE = re.compile(r"listening on (\S+)")


class BenchError(Exception):
    """The benchmark could not run; the message is one line."""


# --- workers (each runs in a subprocess of its own) -----------------------------------------


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _worker_setup(params: dict[str, Any]) -> dict[str, Any]:
    from balances_pipeline.simulator.aging import AgingCache
    from balances_pipeline.simulator.ledger import generate_ledger

    as_of = date.fromisoformat(params["as_of"])
    started = time.perf_counter()
    ledger = generate_ledger(params["seed"], params["accounts"], as_of)
    generated = time.perf_counter()
    report = AgingCache(ledger).report(as_of)
    aged = time.perf_counter()
    return {
        "ledger_seconds": generated - started,
        "aging_seconds": aged - generated,
        "ledger_rows": ledger.counts(),
        "aging_rows": len(report),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _worker_baseline(params: dict[str, Any]) -> dict[str, Any]:
    import requests

    authorization = (
        f"ODFHIR {os.environ[DEVELOPER_KEY_ENV]}/{os.environ[CUSTOMER_KEY_ENV]}"
    )
    # [endpoint, query] pairs: the aging report by default, the ledger endpoints in ledger mode
    endpoints = params.get("endpoints") or [[AGING_ENDPOINT, {"DateAsOf": params["as_of"]}]]
    rows = requests_made = received = 0
    started = time.perf_counter()
    with requests.Session() as session:
        session.headers["Authorization"] = authorization
        for endpoint, query in endpoints:
            url = f"{params['base_url']}/{endpoint}"
            offset = 0
            while True:
                response = session.get(url, params={**query, "Offset": offset}, timeout=120)
                requests_made += 1
                response.raise_for_status()
                body = response.content
                received += len(body)
                page = json.loads(body)
                rows += len(page)
                if len(page) < PAGE_ROWS:
                    break
                offset += len(page)
    return {
        "wall_seconds": time.perf_counter() - started,
        "rows": rows,
        "requests": requests_made,
        "bytes": received,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _worker_sync(params: dict[str, Any]) -> dict[str, Any]:
    imports_started = time.perf_counter()
    from balances_pipeline.config import load_practices
    from balances_pipeline.pipeline.extract import extract_practice
    from balances_pipeline.pipeline.publish_sync import publish_practice
    from balances_pipeline.settings import Settings
    from balances_pipeline.sources.clients import open_client

    import_seconds = time.perf_counter() - imports_started
    rss_after_imports = _peak_rss_mb()
    practice = load_practices(Path(params["practices_file"])).practice(PRACTICE_ID)
    started = time.perf_counter()
    settings = Settings.from_env()
    home = settings.layout()
    extracted = extract_practice(practice, home, open_client, as_of=settings.as_of)
    extract_done = time.perf_counter()
    outcome = publish_practice(practice, home)
    wall = time.perf_counter() - started
    phases = {"extract": extract_done - started, "publish": wall - (extract_done - started)}
    peak_rss = _peak_rss_mb()  # before anything the benchmark itself reads below
    snapshot = home.snapshots_dir / PRACTICE_ID / outcome.snapshot_id
    sample = params.get("ledger_sample")
    ledger = _ledger_facts(home.pipeline_dir, sample) if sample else {}
    return {
        **ledger,
        "mode": outcome.mode,
        "wall_seconds": wall,
        "import_seconds": import_seconds,
        "rss_after_imports_mb": rss_after_imports,
        "peak_rss_mb": peak_rss,
        "accounts": outcome.accounts,
        "rows_extracted": extracted.extract.rows_extracted,
        "rows_rejected": extracted.extract.rows_rejected,
        "requests": extracted.extract.requests,
        "retries": extracted.extract.retries,
        "pages": extracted.extract.pages,
        "as_of_date": outcome.as_of_date.isoformat(),
        "outcome_seconds": outcome.duration_seconds,
        "snapshot_bytes": _directory_bytes(snapshot) if snapshot.is_dir() else None,
        "phases": phases,
    }


def _ledger_facts(pipeline_dir: Path, sample: int) -> dict[str, Any]:
    """The synced ledger's table sizes and `sample` existing patients, spread evenly."""
    import duckdb

    from balances_pipeline.storage.ledger_store import LEDGER_TABLES

    con = duckdb.connect(str(pipeline_dir / "ledger" / f"{PRACTICE_ID}.duckdb"), read_only=True)
    try:
        tables = {
            table.table.removeprefix("ledger_"): con.execute(
                f"SELECT count(*) FROM {table.table}"  # noqa: S608 - our own table names
            ).fetchall()[0][0]
            for table in LEDGER_TABLES
        }
        patients = [row[0] for row in con.execute(
            "SELECT pat_num FROM (SELECT pat_num, row_number() OVER (ORDER BY pat_num) AS n,"
            " count(*) OVER () AS total FROM ledger_patients)"
            " WHERE (n - 1) % greatest(total // ?, 1) = 0 ORDER BY pat_num LIMIT ?",
            [sample, sample],
        ).fetchall()]
    finally:
        con.close()
    return {"ledger_tables": tables, "sample_patients": patients}


def _worker_ledger_aging(params: dict[str, Any]) -> dict[str, Any]:
    """`ledger_bench.run(rows)` when the module exists and exposes it; else why not."""
    import importlib

    try:
        module = importlib.import_module(LEDGER_BENCH_MODULE)
    except ModuleNotFoundError as error:
        if error.name != LEDGER_BENCH_MODULE:
            raise
        return {"skipped": f"{LEDGER_BENCH_MODULE} does not exist"}
    run = getattr(module, "run", None)
    if not callable(run):
        return {"skipped": f"{LEDGER_BENCH_MODULE} exposes no run()"}
    started = time.perf_counter()
    result = run(rows=params["rows"])
    wall = time.perf_counter() - started
    if not isinstance(result, dict):
        return {"skipped": f"{LEDGER_BENCH_MODULE}.run() returned {type(result).__name__}"}
    return {
        "result": json.loads(json.dumps(result, default=str)),
        "wall_seconds": wall,
        "peak_rss_mb": _peak_rss_mb(),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "setup": _worker_setup,
    "baseline": _worker_baseline,
    "sync": _worker_sync,
    "ledger_aging": _worker_ledger_aging,
}


def _worker_main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(f"usage: python -m benchmarks.bench {{{','.join(WORKERS)}}} JSON",
              file=sys.stderr)
        return 2
    result = WORKERS[argv[0]](json.loads(argv[1]))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# --- the parent: orchestration ------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run_worker(kind: str, params: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench", kind, json.dumps(params)]
    clone = str(Path(__file__).resolve().parents[1])
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [clone, env.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            command, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        limit = f"{WORKER_TIMEOUT_SECONDS:.0f} s"
        raise BenchError(f"{kind} worker did not finish in {limit}") from None
    if done.returncode != 0:
        raise BenchError(f"{kind} worker failed: {_last_line(done.stderr)}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise BenchError(f"{kind} worker printed no result")


def _machine() -> dict[str, Any]:
    import psutil

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_model": model,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gb": psutil.virtual_memory().total / 1024**3,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "duckdb": version("duckdb"),
        "dagster": version("dagster"),
    }


@contextmanager
def _simulator(
    config: Path, port: int, env: dict[str, str], log: Path, today: date = AS_OF
) -> Iterator[str]:
    """`balances simulator serve` in a subprocess; yields its API base URL."""
    command = [
        sys.executable, "-m", "balances_pipeline.cli", "simulator", "serve",
        "--config", str(config), "--port", str(port), "--today", today.isoformat(),
    ]
    with log.open("w", encoding="utf-8") as errors:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, name="bench-simulator-stdout", daemon=True).start()
        try:
            yield _wait_listening(process, lines, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], log: Path
) -> str:
    deadline = time.monotonic() + LISTEN_TIMEOUT_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            process.wait()
            reason = _last_line(log.read_text(encoding="utf-8"))
            raise BenchError(f"simulator exited ({process.returncode}): {reason}")
        match = LISTENING_RE.search(line)
        if match:
            return match.group(1)
    raise BenchError(f"simulator did not report listening in {LISTEN_TIMEOUT_SECONDS:.0f} s")


def _warm_up(base_url: str, env: dict[str, str], as_of: date = AS_OF) -> float:
    """One small request of the report: the simulator builds its ledger and aging now."""
    import requests

    started = time.perf_counter()
    response = requests.get(
        f"{base_url}/{AGING_ENDPOINT}",
        params={"DateAsOf": as_of.isoformat(), "Offset": 0, "Limit": 1},
        headers={"Authorization": f"ODFHIR {env[DEVELOPER_KEY_ENV]}/{env[CUSTOMER_KEY_ENV]}"},
        timeout=WARMUP_TIMEOUT_SECONDS,
    )
    if response.status_code != 200:
        raise BenchError(f"simulator warm-up request failed: HTTP {response.status_code}")
    return time.perf_counter() - started


def _write_yaml(path: Path, document: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _bench_env(accounts: int, workdir: Path) -> tuple[dict[str, str], Path]:
    """The workers' environment (fresh keys, no shared group) and the simulator's config."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        DEVELOPER_KEY_ENV: secrets.token_hex(16),
        CUSTOMER_KEY_ENV: secrets.token_hex(16),
        "BALANCES_AS_OF": AS_OF.isoformat(),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BALANCES_SHARED_GROUP", "DAGSTER_HOME", "BALANCES_HOME"):
        env.pop(name, None)
    sim_config = _write_yaml(workdir / "simulator.yaml", {
        "developer_key_env": DEVELOPER_KEY_ENV,
        "practices": [{
            "id": PRACTICE_ID, "customer_key_env": CUSTOMER_KEY_ENV,
            "accounts": accounts, "seed": SEED,
        }],
    })
    return env, sim_config


def _practice(base_url: str, mode: str) -> dict[str, Any]:
    practice: dict[str, Any] = {
        "id": PRACTICE_ID,
        "name": "Bench Practice",
        "timezone": "America/Chicago",
    }
    if mode == "ledger":  # hourly: the day's second sync is incremental
        practice["sync"] = {"frequency": "hourly"}
    practice["source"] = {
        "type": "opendental", "base_url": base_url, "mode": mode,
        "developer_key_env": DEVELOPER_KEY_ENV, "customer_key_env": CUSTOMER_KEY_ENV,
    }
    return {"practices": [practice]}


def _measure(accounts: int, port: int, repeat: int, workdir: Path) -> dict[str, Any]:
    env, sim_config = _bench_env(accounts, workdir)
    setup = _run_worker(
        "setup", {"accounts": accounts, "seed": SEED, "as_of": AS_OF.isoformat()}, env
    )
    baselines: list[dict[str, Any]] = []
    syncs: list[dict[str, Any]] = []
    with _simulator(sim_config, port, env, workdir / "simulator.log") as base_url:
        warmup = _warm_up(base_url, env)
        practices_file = _write_yaml(
            workdir / "practices.yaml", _practice(base_url, "aging_report")
        )
        env["BALANCES_PRACTICES_FILE"] = str(practices_file)
        for run in range(repeat):
            baselines.append(
                _run_worker("baseline", {"base_url": base_url, "as_of": AS_OF.isoformat()}, env)
            )
            home = workdir / f"home-{run}"
            syncs.append(
                _run_worker(
                    "sync", {"practices_file": str(practices_file)},
                    {**env, "BALANCES_HOME": str(home)},
                )
            )
            shutil.rmtree(home, ignore_errors=True)
    return {"setup": setup, "warmup_seconds": warmup, "baselines": baselines, "syncs": syncs}


def _add_rows(base_url: str, patients: list[int], count: int, on: date) -> dict[str, Any]:
    """`count` payments and adjustments (alternately) on existing patients, through the
    simulator's control path, as a front desk would post them during the day."""
    import requests

    if not patients:
        raise BenchError("the full ledger sync found no patients to post payments on")
    root = base_url.rsplit("/api/", 1)[0]
    tables = {"paysplits": 0, "adjustments": 0}
    started = time.perf_counter()
    with requests.Session() as session:
        for i in range(count):
            patient = patients[i % len(patients)]
            if i % 2 == 0:
                table = "paysplits"
                row = {"PatNum": patient, "SplitAmt": f"{25 + i}.00", "DatePay": on.isoformat()}
            else:
                table = "adjustments"
                row = {"PatNum": patient, "AdjDate": on.isoformat(), "AdjAmt": f"-{5 + i}.00"}
            response = session.post(f"{root}/_sim/rows/{PRACTICE_ID}/{table}", json=row,
                                    timeout=60)
            if response.status_code != 201:
                raise BenchError(
                    f"adding a row to {table} failed: HTTP {response.status_code}"
                )
            tables[table] += 1
    return {
        "seconds": time.perf_counter() - started,
        "tables": tables,
        "patients": len(set(patients[: count])),
    }


def _measure_ledger(
    accounts: int, port: int, changes: int, ledger_rows: int, workdir: Path
) -> dict[str, Any]:
    """Full ledger sync, K changes, incremental sync, then the aging transform alone."""
    as_of = date.today()  # BALANCES_AS_OF fixed: both syncs are of the same local day
    env, sim_config = _bench_env(accounts, workdir)
    env["BALANCES_AS_OF"] = as_of.isoformat()
    with _simulator(sim_config, port, env, workdir / "simulator-ledger.log", as_of) as base_url:
        warmup = _warm_up(base_url, env, as_of)
        practices_file = _write_yaml(
            workdir / "practices-ledger.yaml", _practice(base_url, "ledger")
        )
        env["BALANCES_PRACTICES_FILE"] = str(practices_file)
        baseline = _run_worker("baseline", {
            "base_url": base_url, "as_of": as_of.isoformat(),
            "endpoints": [[endpoint, {}] for endpoint in LEDGER_ENDPOINTS],
        }, env)
        sync_env = {**env, "BALANCES_HOME": str(workdir / "home-ledger")}
        worker = {"practices_file": str(practices_file), "ledger_sample": changes}
        full = _run_worker("sync", worker, sync_env)
        if full["mode"] != "full":
            raise BenchError(f"the first ledger sync of the day was {full['mode']}, not full")
        changed = _add_rows(base_url, full["sample_patients"], changes, as_of)
        incremental = _run_worker("sync", worker, sync_env)
        if incremental["mode"] != "incremental":
            raise BenchError(
                f"the second ledger sync of the day was {incremental['mode']}, not incremental"
            )
    aging = _run_worker("ledger_aging", {"rows": ledger_rows}, env)
    return {
        "as_of": as_of.isoformat(), "warmup_seconds": warmup, "baseline": baseline,
        "full": full, "changes": changed, "incremental": incremental,
        "aging": aging, "aging_rows_requested": ledger_rows,
    }


# --- figures ------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    """Seconds with a precision that suits their size."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds:.3f} s"


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _spread(runs: list[dict[str, Any]], key: str) -> str:
    if len(runs) < 2:
        return ""
    values = [run[key] for run in runs]
    return f" (median of {len(runs)}, {_s(min(values))} to {_s(max(values))})"


def _summarize(accounts: int, repeat: int, measured: dict[str, Any]) -> dict[str, Any]:
    setup, baselines, syncs = measured["setup"], measured["baselines"], measured["syncs"]
    in_process_setup = setup["ledger_seconds"] + setup["aging_seconds"]
    baseline_wall = _median(baselines, "wall_seconds")
    sync_wall = _median(syncs, "wall_seconds")
    seen = {name for run in syncs for name in run["phases"]}
    phase_names = [name for name in PHASE_ORDER if name in seen]
    phases = {
        name: statistics.median(run["phases"].get(name, 0.0) for run in syncs)
        for name in phase_names
    }
    baseline_rss = max(run["peak_rss_mb"] for run in baselines)
    sync_rss = max(run["peak_rss_mb"] for run in syncs)
    return {
        "accounts": accounts,
        "repeat": repeat,
        "as_of": AS_OF.isoformat(),
        "seed": SEED,
        "ledger_rows": sum(setup["ledger_rows"].values()),
        "aging_rows": setup["aging_rows"],
        "setup_seconds": in_process_setup,
        "warmup_seconds": measured["warmup_seconds"],
        "warmup_ratio_to_setup": measured["warmup_seconds"] / in_process_setup,
        "baseline_wall_seconds": baseline_wall,
        "baseline_peak_rss_mb": baseline_rss,
        "sync_wall_seconds": sync_wall,
        "sync_peak_rss_mb": sync_rss,
        "sync_ratio_to_baseline": sync_wall / baseline_wall,
        "sync_rss_ratio_to_baseline": sync_rss / baseline_rss,
        "sync_phases_seconds": phases,
        "extract_ratio_to_baseline": phases["extract"] / baseline_wall
        if "extract" in phases else None,
        "publish_share_of_sync": phases["publish"] / sync_wall if "publish" in phases else None,
    }


def _header_lines(
    machine: dict[str, Any], accounts: int, mode: str, repeat: int, ledger_as_of: date | None
) -> list[str]:
    dates = []
    if mode in ("aging_report", "both"):
        dates.append(f"{AS_OF.isoformat()} (aging_report)")
    if ledger_as_of is not None:
        dates.append(f"{ledger_as_of.isoformat()} (ledger)")
    return [
        f"balances bench: {accounts:,} accounts, mode {mode}, as of {' and '.join(dates)}, "
        f"repeat {repeat}",
        f"machine: {machine['cpu_model']}; {machine['cores_logical']} cores "
        f"({machine['cores_physical']} physical); {machine['ram_gb']:.1f} GiB RAM; "
        f"{machine['os']}; python {machine['python']}; duckdb {machine['duckdb']}; "
        f"dagster {machine['dagster']}",
    ]


def _lines(measured: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    setup, baselines, syncs = measured["setup"], measured["baselines"], measured["syncs"]
    accounts = summary["accounts"]
    tables = ", ".join(f"{name} {count:,}" for name, count in setup["ledger_rows"].items())
    sync, baseline = syncs[-1], baselines[-1]
    base_wall, sync_wall = summary["baseline_wall_seconds"], summary["sync_wall_seconds"]
    lines = [
        f"data: 1 practice, {accounts:,} accounts (seed {SEED}); ledger "
        f"{summary['ledger_rows']:,} rows ({tables}); aging report {setup['aging_rows']:,} "
        f"guarantor rows, {sync['pages']:,} pages of {PAGE_ROWS}",
        f"simulator setup {accounts:,} accounts (not part of the sync): ledger "
        f"{_s(setup['ledger_seconds'])}, aging report {_s(setup['aging_seconds'])} "
        f"(separate process, peak RSS {setup['peak_rss_mb']:.0f} MB); server warm-up request "
        f"{_s(summary['warmup_seconds'])} → ratio {summary['warmup_ratio_to_setup']:.2f} "
        f"to in-process setup",
        f"baseline paging {baseline['rows']:,} rows (requests + json.loads, no validation, no "
        f"warehouse): {_s(base_wall)} wall{_spread(baselines, 'wall_seconds')}, "
        f"{baseline['rows'] / base_wall:,.0f} rows/s, {baseline['requests']:,} requests, "
        f"{baseline['bytes'] / 1024**2:.2f} MB received, peak RSS "
        f"{summary['baseline_peak_rss_mb']:.0f} MB",
        f"sync {accounts:,} accounts (aging_report): {_s(sync_wall)} wall"
        f"{_spread(syncs, 'wall_seconds')}, {accounts / sync_wall:,.0f} accounts/s, "
        f"{sync['rows_extracted'] / sync_wall:,.0f} rows/s ({sync['rows_extracted']:,} rows, "
        f"{sync['rows_rejected']:,} rejected, {sync['accounts']:,} balances), "
        f"{sync['requests']:,} requests, {sync['retries']:,} retries, peak RSS "
        f"{summary['sync_peak_rss_mb']:.0f} MB; baseline paging {_s(base_wall)} "
        f"→ ratio {summary['sync_ratio_to_baseline']:.2f}",
        f"sync memory: peak RSS {summary['sync_peak_rss_mb']:.0f} MB (target < "
        f"{RSS_TARGET_MB} MB), after imports {sync['rss_after_imports_mb']:.0f} MB "
        f"(imports {_s(sync['import_seconds'])}); baseline peak RSS "
        f"{summary['baseline_peak_rss_mb']:.0f} MB → ratio "
        f"{summary['sync_rss_ratio_to_baseline']:.2f}",
    ]
    phases = summary["sync_phases_seconds"]
    if phases:
        other = sync_wall - sum(phases.values())
        parts = ", ".join(f"{name} {_s(seconds)}" for name, seconds in phases.items())
        extract = summary["extract_ratio_to_baseline"]
        vs_baseline = f"; extract → ratio {extract:.2f} to baseline paging" if extract else ""
        lines.append(f"sync phases: {parts}, other {_s(other)}{vs_baseline}")
    if summary["publish_share_of_sync"] is not None:
        snapshot = sync["snapshot_bytes"]
        size = f", snapshot {snapshot / 1024**2:.2f} MB" if snapshot is not None else ""
        lines.append(
            f"publish: {_s(phases['publish'])} → ratio "
            f"{summary['publish_share_of_sync']:.3f} of the sync wall{size}"
        )
    return lines


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{name}_"))
        else:
            flat[name] = item
    return flat


def _aging_figures(result: dict[str, Any]) -> dict[str, float | None]:
    """Time, baseline, ratio and rows out of `ledger_bench.run()`'s dict (`transform_s`,
    `baseline_s`, `ratio`, `rows`), tolerating other spellings of those keys."""
    numbers = {
        key.lower(): float(value) for key, value in _flatten(result).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }

    def timing(key: str) -> bool:
        return "second" in key or key.endswith(("_s", "_time", "time"))

    def first(names: Sequence[str], fallback: Callable[[str], bool]) -> float | None:
        for name in names:
            if name in numbers:
                return numbers[name]
        return next((value for key, value in numbers.items() if fallback(key)), None)

    baseline = first(("baseline_seconds", "baseline"),
                     lambda key: "baseline" in key and timing(key))
    seconds = first(
        ("transform_s", "transform_seconds", "seconds", "sql_seconds", "sql_s", "aging_seconds",
         "aging_s", "pipeline_seconds", "pipeline_s", "project_seconds", "ours_seconds"),
        lambda key: timing(key) and not any(
            word in key for word in ("baseline", "ratio", "generat", "setup", "load")
        ),
    )
    ratio = first(("ratio", "ratio_to_baseline"), lambda key: "ratio" in key)
    if ratio is None and seconds is not None and baseline:
        ratio = seconds / baseline
    rows = first(("rows", "ledger_rows"), lambda key: key.endswith("rows"))
    return {"seconds": seconds, "baseline": baseline, "ratio": ratio, "rows": rows}


def _ledger_lines(accounts: int, ledger: dict[str, Any]) -> list[str]:
    full, incremental, baseline = ledger["full"], ledger["incremental"], ledger["baseline"]
    changes = ledger["changes"]
    count = sum(changes["tables"].values())
    rows = full["rows_extracted"]
    before = sum(full["ledger_tables"].values())
    after = sum(incremental["ledger_tables"].values())
    tables = ", ".join(f"{name} {size:,}" for name, size in full["ledger_tables"].items())
    size = f"{accounts:,} accounts, {before:,} ledger rows"
    full_wall, base_wall = full["wall_seconds"], baseline["wall_seconds"]
    inc_wall = incremental["wall_seconds"]
    full_rss, base_rss = full["peak_rss_mb"], baseline["peak_rss_mb"]
    full_requests, inc_requests = full["requests"], incremental["requests"]

    def phases(run: dict[str, Any]) -> str:
        return ", ".join(f"{name} {_s(run['phases'][name])}" for name in PHASE_ORDER
                         if name in run["phases"])

    lines = [
        f"ledger data: 1 practice, {accounts:,} accounts (seed {SEED}), as of "
        f"{ledger['as_of']} (BALANCES_AS_OF fixed, sync.frequency hourly); ledger "
        f"{before:,} rows ({tables}); simulator warm-up request "
        f"{_s(ledger['warmup_seconds'])} (not part of the sync)",
        f"ledger baseline paging {baseline['rows']:,} rows of {len(LEDGER_ENDPOINTS)} endpoints "
        f"(requests + json.loads, no validation, no warehouse; {size}): {_s(base_wall)} wall, "
        f"{baseline['rows'] / base_wall:,.0f} rows/s, {baseline['requests']:,} requests, "
        f"{baseline['bytes'] / 1024**2:.2f} MB received, peak RSS {base_rss:.0f} MB",
        f"ledger full sync {accounts:,} accounts: {_s(full_wall)} wall ({phases(full)}), "
        f"{accounts / full_wall:,.0f} accounts/s, {rows / full_wall:,.0f} rows/s ({rows:,} "
        f"ledger rows extracted, {full['rows_rejected']:,} rejected, {full['accounts']:,} "
        f"balances), {full_requests:,} requests, {full['retries']:,} retries, peak RSS "
        f"{full_rss:.0f} MB; baseline paging {_s(base_wall)} → ratio {full_wall / base_wall:.2f}",
        f"ledger full sync memory ({size}): peak RSS {full_rss:.0f} MB (target < "
        f"{RSS_TARGET_MB} MB at {RSS_TARGET_SIZE}) → ratio {full_rss / RSS_TARGET_MB:.2f} of "
        f"the target; after imports {full['rss_after_imports_mb']:.0f} MB; baseline paging "
        f"peak RSS {base_rss:.0f} MB → ratio {full_rss / base_rss:.2f}",
        f"ledger changes ({size}): {count} rows added through POST /_sim/rows "
        f"({changes['tables']['paysplits']} paysplits, {changes['tables']['adjustments']} "
        f"adjustments on {changes['patients']} existing patients); ledger {before:,} → "
        f"{after:,} rows → ratio {after / before:.6f}",
        f"ledger incremental sync {accounts:,} accounts ({count} rows changed): "
        f"{_s(inc_wall)} wall ({phases(incremental)}), {incremental['rows_extracted']:,} rows "
        f"extracted, {inc_requests:,} requests, {incremental['retries']:,} retries, peak RSS "
        f"{incremental['peak_rss_mb']:.0f} MB; full sync {_s(full_wall)} → ratio "
        f"{inc_wall / full_wall:.3f}",
        f"incremental requests: {inc_requests:,} vs full: {full_requests:,} (ratio "
        f"{inc_requests / full_requests:.4f}); {size}, {count} rows changed",
    ]
    aging, requested = ledger["aging"], ledger["aging_rows_requested"]
    if "skipped" in aging:
        lines.append(
            f"ledger aging transform {requested:,} ledger rows: skipped ({aging['skipped']}); "
            f"target < {AGING_RATIO_TARGET}x the hand-written DuckDB baseline"
        )
        return lines
    figures = _aging_figures(aging["result"])
    aged = int(figures["rows"]) if figures["rows"] is not None else requested
    if figures["seconds"] is None or figures["baseline"] is None or figures["ratio"] is None:
        raw = ", ".join(f"{key} {value}" for key, value in _flatten(aging["result"]).items())
        lines.append(
            f"ledger aging transform {aged:,} ledger rows (ledger_bench.run, as returned): "
            f"{raw}; target < {AGING_RATIO_TARGET}x the hand-written DuckDB baseline"
        )
        return lines
    lines.append(
        f"ledger aging transform {aged:,} ledger rows: {_s(figures['seconds'])}; hand-written "
        f"DuckDB baseline {_s(figures['baseline'])} → ratio {figures['ratio']:.2f} (target < "
        f"{AGING_RATIO_TARGET}x); worker peak RSS {aging['peak_rss_mb']:.0f} MB"
    )
    return lines


def run_benchmark(
    accounts: int = 50_000,
    port: int = 0,
    repeat: int = 1,
    json_path: str | Path | None = None,
    mode: str = "both",
    ledger_rows: int = 1_000_000,
    changes: int = 20,
) -> int:
    """Run the benchmark and print its figures; 0 on success, 1 with a one-line error."""
    if accounts < 1 or repeat < 1 or ledger_rows < 1 or changes < 1 or not 0 <= port <= 65535:
        print("balances bench: error: --accounts, --repeat, --ledger-rows and --changes must "
              "be at least 1, --port within 0-65535", file=sys.stderr)
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
    try:
        machine = _machine()
        if mode in ("aging_report", "both"):
            measured = _measure(accounts, port, repeat, workdir / "aging_report")
            summary = _summarize(accounts, repeat, measured)
        if mode in ("ledger", "both"):
            ledger = _measure_ledger(accounts, port, changes, ledger_rows, workdir / "ledger")
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
    for line in lines:
        print(line)
    print(f"benchmark total: {_s(total)}")
    if json_path is not None:
        document = {
            "machine": machine, "mode": mode, "summary": summary, **measured,
            "ledger": ledger, "total_seconds": total,
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
