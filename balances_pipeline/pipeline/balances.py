"""Balances: `account_balances` from the staged extract, and the discrepancies found.

`aging_report` mode maps the PMS's own aging report (SQL `account_balances.sql`);
`ledger` mode upserts the extract into the practice's raw ledger and ages the whole ledger
(`ledger_account_balances.sql`), then reconciles it with the source's report.

Both also build `rejected_accounts` in the staging database: the account of each rejected
row (NULL where it cannot be identified), which the override reconciliation reads so that
no override ends because of a row the sync could not read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from balances_pipeline.pipeline.ledger_plan import next_cursors
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.ledger_store import LedgerStore, read_refresh_state
from balances_pipeline.storage.publish import LedgerRefresh
from balances_pipeline.storage.snapshots import sql_literal
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
    # aging_report mode: each account is one source row, so a row the sync could not read
    # can hide an account but never change a listed one (ledger mode: many rows each).
    one_row_per_account: bool = True


# The account of each rejected row of the aging report (or of /patients): its PatNum
# (Guarantor), NULL when it could not be read.
_REJECTED_REPORT_ACCOUNTS = (
    "CREATE OR REPLACE TABLE rejected_accounts AS"
    " SELECT DISTINCT account_id FROM stg_rejected_rows"
)

# Ledger mode: a rejected row names a patient; its account is the patient's guarantor in
# the raw ledger (attached as `ledger`). A rejected /patients row names its guarantor, and
# the patient may still roll up to the guarantor the ledger holds for it. A patient the
# ledger does not know, or a number that could not be read: NULL (account unknown).
_REJECTED_LEDGER_ACCOUNTS = (
    "CREATE OR REPLACE TABLE rejected_accounts AS"
    " SELECT DISTINCT CASE WHEN r.endpoint = '/patients' THEN r.account_id"
    "  ELSE CAST(coalesce(p.guarantor_id, p.pat_num) AS VARCHAR) END AS account_id"
    " FROM stg_rejected_rows AS r"
    " LEFT JOIN ledger.ledger_patients AS p"
    "  ON r.endpoint <> '/patients' AND CAST(p.pat_num AS VARCHAR) = r.account_id"
    " UNION"
    " SELECT CAST(coalesce(p.guarantor_id, p.pat_num) AS VARCHAR)"
    " FROM stg_rejected_rows AS r"
    " JOIN ledger.ledger_patients AS p"
    "  ON r.endpoint = '/patients' AND CAST(p.pat_num AS VARCHAR) = r.row_key"
)


def build_from_aging_report(staging: StagingDatabase, params: dict[str, Any]) -> Balances:
    accounts = create_table_from_sql(staging.con, "account_balances", "account_balances", params)
    create_table_from_sql(staging.con, "balance_discrepancies", "balance_discrepancies", params)
    staging.con.execute(_REJECTED_REPORT_ACCOUNTS)
    return Balances(accounts)


def _rejected_ledger_accounts(staging: StagingDatabase, ledger_path: Path) -> None:
    """`rejected_accounts` of a ledger sync, from the raw ledger just written (opened only
    under the practice's publish lock, which the caller holds)."""
    staging.con.execute(f"ATTACH {sql_literal(str(ledger_path))} AS ledger (READ_ONLY)")
    try:
        staging.con.execute(_REJECTED_LEDGER_ACCOUNTS)
    finally:
        staging.con.execute("DETACH ledger")


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
    ledger = LedgerStore(layout, practice_id)
    counts = ledger.apply_and_age(staging.path, full, params)
    staging.reopen()
    accounts = staging.con.execute("SELECT count(*) FROM account_balances").fetchall()[0][0]
    _rejected_ledger_accounts(staging, ledger.path)
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
        one_row_per_account=False,
    )
