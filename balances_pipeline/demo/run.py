"""`balances demo`: start the simulator, sync every demo practice through Dagster, show aging."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from balances_pipeline.config import DEMO_PRACTICES_FILE, load_practices
from balances_pipeline.settings import PRACTICES_FILE_ENV, Settings
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.reader import analyst_connection

# Demo credentials for the simulator only: not secrets, and never used for a real source.
DEMO_KEYS = {
    "OD_DEVELOPER_KEY": "demo-developer-key",
    "BRIGHT_SMILES_OD_CUSTOMER_KEY": "demo-bright-smiles-key",
    "LAKESIDE_FAMILY_OD_CUSTOMER_KEY": "demo-lakeside-family-key",
    "HARBOR_DENTAL_OD_CUSTOMER_KEY": "demo-harbor-dental-key",
}
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


DEMO_FHIR_KEY_ENV = "LAKESIDE_PEDS_FHIR_PRIVATE_KEY"
DEMO_FILE_DROP = "sunrise_dental"
# The file-drop demo practice's export, generated from a simulated practice's ledger.
DEMO_FILE_DROP_SIMULATION = {"accounts": 250, "seed": 55}


def use_demo_environment() -> None:
    """Point the pipeline at the demo practices and set the simulator's demo keys if unset
    (the FHIR practice's private key is the simulator's demo-only key pair)."""
    from balances_pipeline.simulator.fhir_auth import demo_private_key_pem

    os.environ[PRACTICES_FILE_ENV] = str(DEMO_PRACTICES_FILE)
    for name, value in DEMO_KEYS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault(DEMO_FHIR_KEY_ENV, demo_private_key_pem())


def drop_demo_aging_file(scale: float = 1.0) -> Path:
    """Write today's aging export of the file-drop demo practice into its folder, as its
    PMS would have overnight (an hour old, so settled)."""
    from balances_pipeline.simulator import SimPractice
    from balances_pipeline.simulator.aging_files import practice_aging_rows, write_aging_file

    practice = load_practices(DEMO_PRACTICES_FILE).practice(DEMO_FILE_DROP)
    today = datetime.now(practice.zone).date()
    accounts = max(1, round(DEMO_FILE_DROP_SIMULATION["accounts"] * scale))
    simulated = SimPractice(DEMO_FILE_DROP, None, accounts=accounts,
                            seed=DEMO_FILE_DROP_SIMULATION["seed"], today=today)
    folder = practice.source.folder
    folder.mkdir(parents=True, exist_ok=True)
    return write_aging_file(practice_aging_rows(simulated, today), folder, today,
                            mtime=time.time() - 3600)


def demo_simulator(port: int, scale: float = 1.0):
    from balances_pipeline.simulator import SimulatorServer
    from balances_pipeline.simulator.cli import bundled_config_path, load_config

    developer_key, practices = load_config(bundled_config_path())
    scaled = [replace(p, accounts=max(1, round(p.accounts * scale))) for p in practices]
    return SimulatorServer(scaled, developer_key, port=port)


def _progress_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logger = logging.getLogger("balances_pipeline.sync")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _print_summary(layout: Layout) -> None:
    con = analyst_connection(layout)
    try:
        rows = con.execute(
            "SELECT practice_id, as_of_date, account_count, balance_total, bucket_0_30,"
            " bucket_31_60, bucket_61_90, bucket_over_90, pct_over_90"
            " FROM aging_summary ORDER BY practice_id"
        ).fetchall()
    finally:
        con.close()
    header = ("practice", "as of", "accounts", "total", "0-30", "31-60", "61-90", "over 90",
              "% >90")
    widths = (16, 10, 8, 13, 12, 12, 12, 12, 6)
    print("".join(f"{h:>{w}} " if i > 1 else f"{h:<{w}} " for i, (h, w) in
                  enumerate(zip(header, widths, strict=True))))
    for row in rows:
        cells = []
        for i, (value, width) in enumerate(zip(row, widths, strict=True)):
            text = f"{value:,.2f}" if isinstance(value, Decimal) else str(value)
            cells.append(f"{text:>{width}} " if i > 1 else f"{text:<{width}} ")
        print("".join(cells))


def run_demo(port: int = 9100, accounts_scale: float = 1.0) -> int:
    use_demo_environment()
    from dagster import DagsterInstance, materialize

    from balances_pipeline.defs.assets import build_sync_assets
    from balances_pipeline.defs.partitions import practice_partitions
    from balances_pipeline.defs.resources import resources_from

    practices = load_practices(DEMO_PRACTICES_FILE)
    sync_assets = build_sync_assets(practice_partitions(practices))
    resources = resources_from(Settings.from_env())
    warehouse = resources["warehouse"]
    _progress_logging()
    started = time.monotonic()
    failures = 0
    with demo_simulator(port, accounts_scale) as simulator:
        print(f"simulator listening on {simulator.url}")
        print(f"aging export dropped: {drop_demo_aging_file(accounts_scale).name}")
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else (
            DagsterInstance.ephemeral()
        )
        for practice in practices.practices:
            print(f"syncing {practice.id} ({practice.name}, {practice.timezone}) ...")
            clock = time.monotonic()
            result = materialize(
                sync_assets, partition_key=practice.id, instance=instance,
                resources=resources, run_config=QUIET_RUN_CONFIG,
                raise_on_error=False,
            )
            outcome = "ok" if result.success else "FAILED"
            print(f"  {practice.id}: {outcome} in {time.monotonic() - clock:.1f} s")
            failures += 0 if result.success else 1
    print()
    layout = warehouse.layout()
    _print_summary(layout)
    print()
    if layout.lake is None:
        print(f"warehouse: {layout.warehouse_path}")
        print(f"  open it with: duckdb -readonly {layout.warehouse_path}")
    else:
        print(f"warehouse: the DuckLake ducklake:{layout.lake.catalog}")
        print(f"  attach it with: ATTACH 'ducklake:{layout.lake.catalog}' AS warehouse"
              " (READ_ONLY); USE warehouse;")
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 1 if failures else 0
