"""`balances bench`: measure one practice's sync against the bundled simulator.

Every measured piece runs in a process of its own, so that wall times and peak memory are
those of that piece alone:

    setup worker      generates the practice's ledger and its aging report in-process
                      (the simulator's cost: reported, never charged to the sync)
    simulator         `balances simulator serve` on loopback, warmed with one request
    baseline worker   the bare minimum client: requests.Session + json.loads over the same
                      aging report pages, no validation, no warehouse
    sync worker       `sync_practice` in `aging_report` mode into a temporary BALANCES_HOME

Peak RSS is each worker's own `getrusage(RUSAGE_SELF).ru_maxrss`, imports included. Wall
times cover the work only (not interpreter start-up or imports, which are reported apart).
The benchmark prints figures and never asserts a time: performance is measured here, not
tested. Workers are started as `python -m balances_pipeline.bench <kind> <json params>`.
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
    url = f"{params['base_url']}/{AGING_ENDPOINT}"
    rows = requests_made = received = 0
    started = time.perf_counter()
    with requests.Session() as session:
        session.headers["Authorization"] = authorization
        offset = 0
        while True:
            response = session.get(
                url, params={"DateAsOf": params["as_of"], "Offset": offset}, timeout=120
            )
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
    from balances_pipeline.home import layout
    from balances_pipeline.sync import practice_sync

    import_seconds = time.perf_counter() - imports_started
    rss_after_imports = _peak_rss_mb()
    practice = load_practices(Path(params["practices_file"])).practice(PRACTICE_ID)
    started = time.perf_counter()
    extracted = practice_sync.extract_practice(practice, layout())
    extract_done = time.perf_counter()
    outcome = practice_sync.publish_practice(practice, layout())
    wall = time.perf_counter() - started
    phases = {"extract": extract_done - started, "publish": wall - (extract_done - started)}
    home = layout()
    snapshot = home.snapshots_dir / PRACTICE_ID / outcome.snapshot_id
    return {
        "wall_seconds": wall,
        "import_seconds": import_seconds,
        "rss_after_imports_mb": rss_after_imports,
        "peak_rss_mb": _peak_rss_mb(),
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


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "setup": _worker_setup,
    "baseline": _worker_baseline,
    "sync": _worker_sync,
}


def _worker_main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(f"usage: python -m balances_pipeline.bench {{{','.join(WORKERS)}}} JSON",
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
    command = [sys.executable, "-m", "balances_pipeline.bench", kind, json.dumps(params)]
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
def _simulator(config: Path, port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """`balances simulator serve` in a subprocess; yields its API base URL."""
    command = [
        sys.executable, "-m", "balances_pipeline.cli", "simulator", "serve",
        "--config", str(config), "--port", str(port), "--today", AS_OF.isoformat(),
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


def _warm_up(base_url: str, env: dict[str, str]) -> float:
    """One small request of the report: the simulator builds its ledger and aging now."""
    import requests

    started = time.perf_counter()
    response = requests.get(
        f"{base_url}/{AGING_ENDPOINT}",
        params={"DateAsOf": AS_OF.isoformat(), "Offset": 0, "Limit": 1},
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


def _measure(accounts: int, port: int, repeat: int, workdir: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        DEVELOPER_KEY_ENV: secrets.token_hex(16),
        CUSTOMER_KEY_ENV: secrets.token_hex(16),
        "BALANCES_AS_OF": AS_OF.isoformat(),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BALANCES_SHARED_GROUP", "DAGSTER_HOME"):
        env.pop(name, None)
    sim_config = _write_yaml(workdir / "simulator.yaml", {
        "developer_key_env": DEVELOPER_KEY_ENV,
        "practices": [{
            "id": PRACTICE_ID, "customer_key_env": CUSTOMER_KEY_ENV,
            "accounts": accounts, "seed": SEED,
        }],
    })
    setup = _run_worker(
        "setup", {"accounts": accounts, "seed": SEED, "as_of": AS_OF.isoformat()}, env
    )
    baselines: list[dict[str, Any]] = []
    syncs: list[dict[str, Any]] = []
    with _simulator(sim_config, port, env, workdir / "simulator.log") as base_url:
        warmup = _warm_up(base_url, env)
        practices_file = _write_yaml(workdir / "practices.yaml", {"practices": [{
            "id": PRACTICE_ID,
            "name": "Bench Practice",
            "timezone": "America/Chicago",
            "source": {
                "type": "opendental", "base_url": base_url, "mode": "aging_report",
                "developer_key_env": DEVELOPER_KEY_ENV, "customer_key_env": CUSTOMER_KEY_ENV,
            },
        }]})
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


def _lines(machine: dict[str, Any], measured: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    setup, baselines, syncs = measured["setup"], measured["baselines"], measured["syncs"]
    accounts = summary["accounts"]
    tables = ", ".join(f"{name} {count:,}" for name, count in setup["ledger_rows"].items())
    sync, baseline = syncs[-1], baselines[-1]
    base_wall, sync_wall = summary["baseline_wall_seconds"], summary["sync_wall_seconds"]
    lines = [
        f"balances bench: {accounts:,} accounts, as of {summary['as_of']}, "
        f"repeat {summary['repeat']}",
        f"machine: {machine['cpu_model']}; {machine['cores_logical']} cores "
        f"({machine['cores_physical']} physical); {machine['ram_gb']:.1f} GiB RAM; "
        f"{machine['os']}; python {machine['python']}; duckdb {machine['duckdb']}; "
        f"dagster {machine['dagster']}",
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


def run_benchmark(
    accounts: int = 50_000, port: int = 0, repeat: int = 1, json_path: str | Path | None = None
) -> int:
    """Run the benchmark and print its figures; 0 on success, 1 with a one-line error."""
    if accounts < 1 or repeat < 1 or not 0 <= port <= 65535:
        print("balances bench: error: --accounts and --repeat must be at least 1, "
              "--port within 0-65535", file=sys.stderr)
        return 2
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="balances-bench-"))
    try:
        machine = _machine()
        measured = _measure(accounts, port, repeat, workdir)
        summary = _summarize(accounts, repeat, measured)
    except (BenchError, OSError, ValueError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"balances bench: error: {message}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - clock
    for line in _lines(machine, measured, summary):
        print(line)
    print(f"benchmark total: {_s(total)}")
    if json_path is not None:
        document = {
            "machine": machine, "summary": summary, **measured, "total_seconds": total,
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
