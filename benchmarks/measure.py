"""The benchmark's parent: the simulator in a subprocess, the workers, the ledger changes."""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from balances_pipeline.sources.opendental.rows import LEDGER_RELATIONS
from balances_pipeline.sources.opendental.shortquery import ledger_sql
from benchmarks.common import (
    AGING_ENDPOINT,
    AS_OF,
    CUSTOMER_KEY_ENV,
    DEVELOPER_KEY_ENV,
    EMPTY_CUSTOMER_KEY_ENV,
    EMPTY_PRACTICE_ID,
    LEDGER_BARE_COLUMNS,
    LEDGER_BASELINE_QUERIES,
    LEDGER_ENDPOINTS,
    PRACTICE_ID,
    RESULT_MARK,
    SEED,
    WARM_CUSTOMER_KEY_ENV,
    WARM_PRACTICE_ID,
    BenchError,
)

LISTEN_TIMEOUT_SECONDS = 120.0
WARMUP_TIMEOUT_SECONDS = 1800.0
WORKER_TIMEOUT_SECONDS = 3600.0
LISTENING_RE = re.compile(r"listening on (\S+)")


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


def _bench_env(accounts: int, workdir: Path, queries_permission: bool = False
               ) -> tuple[dict[str, str], Path]:
    """The workers' environment (fresh keys, no shared group) and the simulator's config;
    `queries_permission`: the key may run ShortQuery (ledger mode's cheap path)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        DEVELOPER_KEY_ENV: secrets.token_hex(16),
        CUSTOMER_KEY_ENV: secrets.token_hex(16),
        EMPTY_CUSTOMER_KEY_ENV: secrets.token_hex(16),
        WARM_CUSTOMER_KEY_ENV: secrets.token_hex(16),
        "BALANCES_AS_OF": AS_OF.isoformat(),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BALANCES_SHARED_GROUP", "DAGSTER_HOME", "BALANCES_HOME"):
        env.pop(name, None)
    sim_config = _write_yaml(workdir / "simulator.yaml", {
        "developer_key_env": DEVELOPER_KEY_ENV,
        "practices": [{
            "id": PRACTICE_ID, "customer_key_env": CUSTOMER_KEY_ENV,
            "accounts": accounts, "seed": SEED, "queries_permission": queries_permission,
        }, *({
            "id": practice_id, "customer_key_env": key_env,
            "accounts": 0, "seed": SEED, "queries_permission": queries_permission,
        } for practice_id, key_env in ((EMPTY_PRACTICE_ID, EMPTY_CUSTOMER_KEY_ENV),
                                       (WARM_PRACTICE_ID, WARM_CUSTOMER_KEY_ENV)))],
    })
    return env, sim_config


def _practice(base_url: str, mode: str) -> dict[str, Any]:
    """The measured practice, the empty one (its sync: the fixed cost) and the one that
    warms a BALANCES_HOME up, on the same server."""

    def one(practice_id: str, name: str, customer_key_env: str) -> dict[str, Any]:
        practice: dict[str, Any] = {"id": practice_id, "name": name,
                                    "timezone": "America/Chicago"}
        if mode == "ledger":  # hourly: the day's second sync is incremental
            practice["sync"] = {"frequency": "hourly"}
        practice["source"] = {
            "type": "opendental", "base_url": base_url, "mode": mode,
            "developer_key_env": DEVELOPER_KEY_ENV, "customer_key_env": customer_key_env,
        }
        return practice

    return {"practices": [one(PRACTICE_ID, "Bench Practice", CUSTOMER_KEY_ENV),
                          one(EMPTY_PRACTICE_ID, "Bench Empty Practice",
                              EMPTY_CUSTOMER_KEY_ENV),
                          one(WARM_PRACTICE_ID, "Bench Warm-up Practice",
                              WARM_CUSTOMER_KEY_ENV)]}


def _measure(accounts: int, port: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """aging_report mode: the bare loop and the first sync, each in a process of its own
    (their peak RSS, the sync's imports), then `rounds` rounds of sync work in one
    process (`_worker_sync_rounds`)."""
    env, sim_config = _bench_env(accounts, workdir)
    setup = _run_worker(
        "setup", {"accounts": accounts, "seed": SEED, "as_of": AS_OF.isoformat()}, env
    )
    with _simulator(sim_config, port, env, workdir / "simulator.log") as base_url:
        warmup = _warm_up(base_url, env)
        practices_file = _write_yaml(
            workdir / "practices.yaml", _practice(base_url, "aging_report")
        )
        env["BALANCES_PRACTICES_FILE"] = str(practices_file)
        baseline_params = {"base_url": base_url, "as_of": AS_OF.isoformat()}
        baseline = _run_worker("baseline", baseline_params, env)
        first_sync = _run_worker("sync", {"practices_file": str(practices_file)},
                                 {**env, "BALANCES_HOME": str(workdir / "home-first")})
        measured = _run_worker(
            "sync_rounds",
            {"practices_file": str(practices_file), "rounds": rounds,
             "baseline": baseline_params},
            {**env, "BALANCES_HOME": str(workdir / "home-rounds")},
        )
    shutil.rmtree(workdir / "home-first", ignore_errors=True)
    shutil.rmtree(workdir / "home-rounds", ignore_errors=True)
    rounds_run = measured["rounds"]
    return {
        "setup": setup, "warmup_seconds": warmup, "baseline_own_process": baseline,
        "first_sync": first_sync, "rounds": rounds_run,
        "rounds_peak_rss_mb": measured["peak_rss_mb"],
        "baselines": [piece["bare"] for piece in rounds_run],
        "syncs": [piece["practice"] for piece in rounds_run],
        "empty_syncs": [piece["empty"] for piece in rounds_run],
    }


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
    # The key has the Queries permission: the ShortQuery path an office is told to grant
    # (the REST fallback reads the whole ledger, one /adjustments request per patient, on
    # every sync: docs/sources.md).
    env, sim_config = _bench_env(accounts, workdir, queries_permission=True)
    env["BALANCES_AS_OF"] = as_of.isoformat()
    with _simulator(sim_config, port, env, workdir / "simulator-ledger.log", as_of) as base_url:
        warmup = _warm_up(base_url, env, as_of)
        practices_file = _write_yaml(
            workdir / "practices-ledger.yaml", _practice(base_url, "ledger")
        )
        env["BALANCES_PRACTICES_FILE"] = str(practices_file)
        baseline = _run_worker("baseline", {
            "base_url": base_url, "as_of": as_of.isoformat(),
            "endpoints": [[endpoint, LEDGER_BASELINE_QUERIES.get(endpoint, {})]
                          for endpoint in LEDGER_ENDPOINTS],
            "short_queries": [[ledger_sql(endpoint, None, None), LEDGER_BARE_COLUMNS[endpoint]]
                              for endpoint in LEDGER_RELATIONS],
        }, env)
        sync_env = {**env, "BALANCES_HOME": str(workdir / "home-ledger")}
        worker = {"practices_file": str(practices_file), "ledger_sample": changes}
        full = _run_worker("sync", worker, sync_env)
        empty = _run_worker("sync", {"practices_file": str(practices_file),
                                     "practice_id": EMPTY_PRACTICE_ID}, sync_env)
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
        "full": full, "empty": empty, "changes": changed, "incremental": incremental,
        "aging": aging, "aging_rows_requested": ledger_rows,
    }
