"""Balances: `account_balances` from the staged extract, and the discrepancies found.

`aging_report` mode maps the PMS's own aging report (SQL `account_balances.sql`);
`ledger` mode upserts the extract into the practice's raw ledger and ages the whole ledger
(`ledger_account_balances.sql`), then reconciles it with the source's report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from balances_pipeline.pipeline.ledger_plan import next_cursors
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.ledger_store import LedgerStore, read_refresh_state
from balances_pipeline.storage.publish import LedgerRefresh
from balances_pipeline.storage.sql_files import create_table_from_sql
from balances_pipeline.storage.staging import StagingDatabase
from balances_pipeline.storage.sync_runs import WaitingExtract
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balances:
    """`account_balances` and `balance_discrepancies` are built in the staging database."""

    accounts: int
    future_entries: int | None = None  # ledger mode: entries dated after the as-of date
    ledger_refresh: LedgerRefresh | None = None  # ledger mode: what the publish commits


def build_from_aging_report(staging: StagingDatabase, params: dict[str, Any]) -> Balances:
    accounts = create_table_from_sql(staging.con, "account_balances", "account_balances", params)
    create_table_from_sql(staging.con, "balance_discrepancies", "balance_discrepancies", params)
    return Balances(accounts)


def build_from_ledger(
    layout: Layout,
    working_db: WorkingDatabase,
    practice_id: str,
    waiting: WaitingExtract,
    staging: StagingDatabase,
    params: dict[str, Any],
) -> Balances:
    """Upsert the extract into the practice's ledger, age the whole ledger, reconcile with
    the source's own report (full refreshes)."""
    full = waiting.mode == "full"
    server_clock = staging.get_meta("server_clock")
    staging.close()
    counts = LedgerStore(layout, practice_id).apply_and_age(staging.path, full, params)
    staging.reopen()
    accounts = staging.con.execute("SELECT count(*) FROM account_balances").fetchall()[0][0]
    create_table_from_sql(staging.con, "balance_discrepancies", "ledger_vs_report", params)
    with working_db.connect() as con:
        _, previous = read_refresh_state(con, practice_id)
    cursors = next_cursors(
        staging.con, previous, datetime.fromisoformat(server_clock) if server_clock else None
    )
    log.info("practice %s: ledger %s, %d entries dated after the as-of date", practice_id,
             "replaced (full refresh)" if full else "updated (incremental)",
             counts["future_entries"])
    return Balances(
        accounts, counts["future_entries"],
        LedgerRefresh(full=full, as_of=waiting.as_of_date, cursors=cursors),
    )
