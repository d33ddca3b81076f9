"""Balances: `account_balances` from the staged extract, and the discrepancies found.

`aging_report` mode maps the PMS's own aging report (SQL `account_balances.sql`);
`ledger` mode upserts the extract into the practice's raw ledger and ages the whole ledger
(`ledger_account_balances.sql`), then reconciles it with the source's report. Sources that
report account balances (FHIR, aging files) are mapped by `source_account_balances.sql`;
an incremental read (FHIR `_lastUpdated`) first carries the published accounts it did not
see into staging, and drops those it saw leave.

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

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.read_plan import next_cursors
from balances_pipeline.storage import sync_runs
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.ledger_store import LedgerStore, read_refresh_state
from balances_pipeline.storage.publish import LedgerRefresh
from balances_pipeline.storage.snapshots import SnapshotStore
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
    practice: Practice,
    waiting: WaitingExtract,
    staging: StagingDatabase,
    params: dict[str, Any],
) -> Balances:
    """Upsert the extract into the practice's ledger, age the whole ledger, reconcile with
    the source's own report (full refreshes)."""
    full = waiting.mode == "full"
    server_clock = staging.get_meta("server_clock")
    staging.close()
    practice_id = practice.id
    ledger = LedgerStore(layout, practice_id)
    counts = ledger.apply_and_age(staging.path, full, params)
    staging.reopen()
    accounts = staging.con.execute("SELECT count(*) FROM account_balances").fetchall()[0][0]
    _rejected_ledger_accounts(staging, ledger.path)
    create_table_from_sql(staging.con, "balance_discrepancies", "ledger_vs_report", params)
    with working_db.connect() as con:
        _, previous = read_refresh_state(con, practice_id)
    cursors = next_cursors(
        practice, previous, datetime.fromisoformat(server_clock) if server_clock else None
    )
    log.info("practice %s: ledger %s, %d entries dated after the as-of date", practice_id,
             "replaced (full refresh)" if full else "updated (incremental)",
             counts["future_entries"])
    return Balances(
        accounts, counts["future_entries"],
        LedgerRefresh(full=full, as_of=waiting.as_of_date, cursors=cursors),
        one_row_per_account=False,
    )


# Published accounts an incremental read did not see, back into staging as the source
# reported them (`account_balances` keeps every field of a source row but the split flag,
# which the previous sync's discrepancies hold).
_CARRY_PUBLISHED_ACCOUNTS = """
INSERT INTO stg_source_balances BY NAME
SELECT account_id, account_name, bucket_0_30, bucket_31_60, bucket_61_90, bucket_91_120,
       bucket_over_120,
       CASE WHEN bucket_91_120 IS NULL THEN bucket_over_90 END AS bucket_over_90,
       balance_total, insurance_estimate, writeoff_estimate, patient_portion,
       NOT list_contains($no_split, account_id) AS has_split, true AS active
FROM read_parquet($previous)
WHERE account_id NOT IN (SELECT account_id FROM stg_source_balances)
  AND account_id NOT IN (SELECT account_id FROM stg_rejected_rows
                         WHERE account_id IS NOT NULL)
"""


def build_from_source_balances(
    layout: Layout,
    working_db: WorkingDatabase,
    practice: Practice,
    waiting: WaitingExtract,
    staging: StagingDatabase,
    params: dict[str, Any],
) -> Balances:
    """`account_balances` of a source that reports balances per account."""
    incremental = waiting.mode == "incremental"
    if incremental:
        _carry_published_accounts(layout, working_db, practice.id, staging)
    source_params = params | {
        "source_mode": practice.source.source_mode,
        "nonzero_terms": practice.source.days_outstanding_from_nonzero_terms,
    }
    accounts = create_table_from_sql(staging.con, "account_balances",
                                     "source_account_balances", source_params)
    create_table_from_sql(staging.con, "balance_discrepancies",
                          "source_balance_discrepancies", source_params)
    # A rejected row of an incremental read keeps the account's published figures: its
    # account is carried over, and flagged (has_rejected_rows) like any rejected account.
    staging.con.execute(_REJECTED_REPORT_ACCOUNTS)
    refresh = None
    if practice.source.incremental_endpoints:
        with working_db.connect() as con:
            _, previous = read_refresh_state(con, practice.id)
        server_clock = staging.get_meta("server_clock")
        cursors = next_cursors(
            practice, previous, datetime.fromisoformat(server_clock) if server_clock else None
        )
        refresh = LedgerRefresh(full=not incremental, as_of=waiting.as_of_date, cursors=cursors)
    return Balances(accounts, ledger_refresh=refresh)


def _carry_published_accounts(
    layout: Layout, working_db: WorkingDatabase, practice_id: str, staging: StagingDatabase
) -> None:
    """Into staging: the published accounts this incremental read did not see (nor
    reject), then out of it: the accounts it saw leave (`active` false)."""
    current = SnapshotStore(layout).current_dir(practice_id)
    previous_file = current / "account_balances.parquet" if current else None
    if previous_file is None or not previous_file.exists():
        raise RuntimeError(f"practice {practice_id}: an incremental read needs the published"
                           " accounts, and there are none: the next sync reads everything")
    with working_db.connect() as con:
        published = sync_runs.latest_published(con, practice_id)
        no_split = [row[0] for row in con.execute(
            "SELECT account_id FROM balance_discrepancies WHERE sync_id = ?"
            " AND \"check\" = 'no_patient_insurance_split'",
            [published.sync_id if published else ""],
        ).fetchall()]
    staging.con.execute(_CARRY_PUBLISHED_ACCOUNTS,
                        {"previous": str(previous_file), "no_split": no_split})
    # A changed account whose guarantor's name the read did not bring (an incremental bulk
    # export holds only changed patients) keeps its published name.
    staging.con.execute(
        "UPDATE stg_source_balances AS s SET account_name = p.account_name"
        " FROM read_parquet($previous) AS p"
        " WHERE s.account_id = p.account_id AND s.account_name = ''",
        {"previous": str(previous_file)},
    )
    staging.con.execute("DELETE FROM stg_source_balances WHERE NOT active")
