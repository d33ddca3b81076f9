"""The benchmark's workers: each measured piece runs in a process of its own.

Started by the parent as `python -m benchmarks.bench <kind> <json params>`; a worker prints
one `RESULT_MARK` line of JSON. Only the standard library is imported at module level, so
that a worker's peak RSS is that of its own imports and work.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AGING_BARE_COLUMNS,
    AGING_ENDPOINT,
    BARE_BATCH_PAGES,
    CUSTOMER_KEY_ENV,
    DEVELOPER_KEY_ENV,
    EMPTY_PRACTICE_ID,
    LEDGER_BENCH_MODULE,
    PAGE_ROWS,
    PRACTICE_ID,
    RESULT_MARK,
    WARM_PRACTICE_ID,
)
from benchmarks.fleet import worker_fleet


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
    """The strong bare loop: the same pages from the same server (requests.Session,
    json.loads for the page's length), loaded into a DuckDB file in batches of
    `BARE_BATCH_PAGES` pages: each page's body written as it came, one `read_json` (typed
    columns, money DECIMAL(14,2)) per batch. No validation, no rejects, no publish."""
    import tempfile

    import duckdb
    import requests

    authorization = (
        f"ODFHIR {os.environ[DEVELOPER_KEY_ENV]}/{os.environ[CUSTOMER_KEY_ENV]}"
    )
    # [endpoint, query] pairs: the aging report by default, the ledger endpoints in ledger mode
    endpoints = params.get("endpoints") or [[AGING_ENDPOINT, {"DateAsOf": params["as_of"]}]]
    rows = requests_made = received = 0
    folder = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    started = time.perf_counter()
    con = duckdb.connect(str(folder / "bare.duckdb"))
    batch: list[Path] = []

    def load(table: str, columns: dict[str, str]) -> None:
        if not batch:
            return
        typed = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"
        files = "[" + ", ".join(f"'{path}'" for path in batch) + "]"
        # Our own table names, columns and temporary file names.
        source = f"read_json({files}, format = 'array', columns = {typed})"
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {source} LIMIT 0")  # noqa: S608
        con.execute(f"INSERT INTO {table} SELECT * FROM {source}")  # noqa: S608
        for path in batch:
            path.unlink()
        batch.clear()

    def keep(body: bytes) -> int:
        nonlocal rows, received
        received += len(body)
        count = len(json.loads(body))
        rows += count
        if count:
            path = folder / f"page-{requests_made}.json"
            path.write_bytes(body)
            batch.append(path)
        return count

    with requests.Session() as session:
        session.headers["Authorization"] = authorization

        def read(endpoint: str, query: dict[str, Any], table: str,
                 columns: dict[str, str]) -> None:
            nonlocal requests_made
            url = f"{params['base_url']}/{endpoint}"
            offset = 0
            while True:
                response = session.get(url, params={**query, "Offset": offset}, timeout=120)
                requests_made += 1
                response.raise_for_status()
                count = keep(response.content)
                if len(batch) >= BARE_BATCH_PAGES:
                    load(table, columns)
                if count < PAGE_ROWS:
                    break
                offset += count
            load(table, columns)

        def short_query(sql: str, table: str, columns: dict[str, str]) -> None:
            # Ledger mode's ShortQuery path: the same SQL text the connector sends.
            nonlocal requests_made
            url = f"{params['base_url']}/queries/ShortQuery"
            offset = 0
            while True:
                response = session.put(url, params={"Offset": offset}, timeout=120,
                                       data=json.dumps({"SqlCommand": sql}),
                                       headers={"Content-Type": "application/json"})
                requests_made += 1
                response.raise_for_status()
                count = keep(response.content)
                if len(batch) >= BARE_BATCH_PAGES:
                    load(table, columns)
                if count < PAGE_ROWS:
                    break
                offset += count
            load(table, columns)

        for number, (sql, columns) in enumerate(params.get("short_queries", [])):
            short_query(sql, f"t{number}", columns)
        if not params.get("short_queries"):
            for number, (endpoint, query) in enumerate(endpoints):
                read(endpoint, query, f"t{number}", AGING_BARE_COLUMNS)
    loaded = sum(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]  # noqa: S608
                 for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
    con.close()
    wall = time.perf_counter() - started
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    if loaded != rows:
        raise RuntimeError(f"the bare loop loaded {loaded} of {rows} rows")
    return {
        "wall_seconds": wall,
        "rows": rows,
        "requests": requests_made,
        "bytes": received,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _sync_once(practice: Any, params: dict[str, Any]) -> dict[str, Any]:
    """One sync of `practice` (extract, then publish) into BALANCES_HOME, timed."""
    from balances_pipeline.pipeline.extract import extract_practice
    from balances_pipeline.pipeline.publish_sync import publish_practice
    from balances_pipeline.settings import Settings
    from balances_pipeline.sources.clients import open_client

    started = time.perf_counter()
    settings = Settings.from_env()
    home = settings.layout()
    extracted = extract_practice(practice, home, open_client, as_of=settings.as_of)
    extract_done = time.perf_counter()
    outcome = publish_practice(practice, home)
    wall = time.perf_counter() - started
    phases = {"extract": extract_done - started, "publish": wall - (extract_done - started)}
    peak_rss = _peak_rss_mb()  # before anything the benchmark itself reads below
    snapshot = home.snapshots_dir / practice.id / outcome.snapshot_id
    sample = params.get("ledger_sample")
    ledger = _ledger_facts(home.pipeline_dir, sample) if sample else {}
    return {
        **ledger,
        "mode": outcome.mode,
        "wall_seconds": wall,
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


def _worker_sync(params: dict[str, Any]) -> dict[str, Any]:
    """One sync in a process of its own: its wall, its imports, its peak RSS."""
    imports_started = time.perf_counter()
    from balances_pipeline import settings  # noqa: F401
    from balances_pipeline.config import load_practices
    from balances_pipeline.pipeline import extract, publish_sync  # noqa: F401
    from balances_pipeline.sources import clients  # noqa: F401

    import_seconds = time.perf_counter() - imports_started
    rss_after_imports = _peak_rss_mb()
    practice = load_practices(Path(params["practices_file"])).practice(
        params.get("practice_id", PRACTICE_ID))
    return {**_sync_once(practice, params), "import_seconds": import_seconds,
            "rss_after_imports_mb": rss_after_imports}


def _worker_sync_rounds(params: dict[str, Any]) -> dict[str, Any]:
    """Sync work measured in rounds, in one process and one BALANCES_HOME: each round
    runs the bare loop, the practice's sync and the empty practice's sync, in an order
    that goes through every permutation, so that drift and order favour none of them.

    Before the first round (untimed): a third practice's sync, so the warehouse exists as
    it does in production, and one of each piece, so that every timed sync is a re-sync
    (as each day's is) and every piece runs in a warm process."""
    from balances_pipeline.config import load_practices

    practices = load_practices(Path(params["practices_file"]))

    def sync(practice_id: str) -> Callable[[], dict[str, Any]]:
        return lambda: _sync_once(practices.practice(practice_id), params)

    pieces: dict[str, Callable[[], dict[str, Any]]] = {
        "bare": lambda: _worker_baseline(params["baseline"]),
        "practice": sync(PRACTICE_ID),
        "empty": sync(EMPTY_PRACTICE_ID),
    }
    sync(WARM_PRACTICE_ID)()
    for piece in pieces.values():
        piece()
    orders = list(itertools.permutations(pieces))
    rounds = []
    for number in range(params["rounds"]):
        order = orders[number % len(orders)]
        rounds.append({"order": list(order), **{name: pieces[name]() for name in order}})
    return {"rounds": rounds, "peak_rss_mb": _peak_rss_mb()}


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
    "sync_rounds": _worker_sync_rounds,
    "ledger_aging": _worker_ledger_aging,
    "fleet": worker_fleet,
}


def _worker_main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(f"usage: python -m benchmarks.bench {{{','.join(WORKERS)}}} JSON",
              file=sys.stderr)
        return 2
    result = WORKERS[argv[0]](json.loads(argv[1]))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0
