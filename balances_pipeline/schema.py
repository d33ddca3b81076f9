"""Every relation the pipeline writes: names, columns and types, declared once, here.

Each relation is a `Relation` of `Column`s with DuckDB type strings. Everything else is
derived from these declarations, never written out again:

- the analyst relations (`warehouse.md`): the casts of every published Parquet file, the
  zero-row schema files and the views of `warehouse.duckdb` (`select_list`), and the
  warehouse's schema version (a hash of the generated views, `storage/analyst.py`);
- the working database (`WORKING_TABLES`, `WORKING_SEQUENCES`): a new database is created
  from `create_sql()`; a database of an earlier release applies the numbered migrations
  of `storage/migrations/` instead, and `balances_pipeline_tests/test_schema.py` checks
  that both end up with the same tables, columns, types and constraints. Changing a
  working table therefore means a new migration *and* the change here;
- the staging tables (`STAGING_TABLES`): their DDL, the Arrow schema of the pages
  appended to them (`arrow_schema`), and the row types of `sources/rows.py`, which are
  checked against them at import;
- the raw ledger of ledger mode (`LEDGER_TABLES`): the staging ledger tables' columns;
- the collection rules handed to `sql/collection_decisions.sql` (`COLLECTION_RULES`).

A relation that is both a working table and an analyst relation (`sync_runs`,
`rejected_rows`, ...) is declared once; its analyst view has the columns marked
`analyst=True`, in declaration order. Analysts select by name, and working tables are
always written by column name (`INSERT ... BY NAME` or a column list), because a
migrated database may hold the columns in another order than a new one.

This module imports only `schema_model.py` (storage/, sources/ and pipeline/ import it).
"""

from __future__ import annotations

from balances_pipeline.schema_model import (  # noqa: F401 - re-exported for the storage layer
    BIGINT,
    BOOLEAN,
    DATE,
    INTEGER,
    MONEY,
    PERCENT,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
    Column,
    Relation,
    arrow_schema,
    arrow_type,
    quoted,
)
from balances_pipeline.schema_model import columns as _columns
from balances_pipeline.schema_model import internal as _internal
from balances_pipeline.schema_model import required as _required

# --- Analyst relations computed from the source (the practice's published data files) ---

_BUCKETS = _columns(
    Column("bucket_0_30", MONEY),
    Column("bucket_31_60", MONEY),
    Column("bucket_61_90", MONEY),
    Column("bucket_91_120", MONEY, doc="NULL when the source does not split over-90"),
    Column("bucket_over_120", MONEY, doc="NULL when the source does not split over-90"),
    Column("bucket_over_90", MONEY),
)

ACCOUNT_BALANCES = Relation("account_balances", _columns(
    Column("practice_id", VARCHAR),
    Column("account_id", VARCHAR),
    Column("account_name", VARCHAR),
    Column("as_of_date", DATE),
    Column("synced_at", TIMESTAMPTZ),
    Column("sync_id", VARCHAR),
    Column("source_mode", VARCHAR),
    Column("balance_total", MONEY),
    *_BUCKETS,
    Column("insurance_estimate", MONEY),
    Column("writeoff_estimate", MONEY),
    Column("patient_portion", MONEY),
    Column("insurance_portion", MONEY),
    Column("days_outstanding", INTEGER),
    Column("has_rejected_rows", BOOLEAN),
    Column("guarantor_status", VARCHAR, doc="PatStatus of the guarantor, where reported"),
))

OUTSTANDING_BALANCES = Relation("outstanding_balances", ACCOUNT_BALANCES.columns + _columns(
    Column("synced_patient_portion", MONEY),
    Column("synced_insurance_portion", MONEY),
    Column("synced_balance_total", MONEY),
    Column("override_id", VARCHAR),
    Column("is_overridden", BOOLEAN),
))

AGING_SUMMARY = Relation("aging_summary", _columns(
    Column("practice_id", VARCHAR),
    Column("as_of_date", DATE),
    Column("synced_at", TIMESTAMPTZ),
    Column("account_count", BIGINT),
    Column("balance_total", MONEY),
    *_BUCKETS,
    Column("patient_portion", MONEY),
    Column("insurance_portion", MONEY),
    Column("overridden_account_count", BIGINT),
    Column("pct_over_90", PERCENT),
))

BALANCE_HISTORY = Relation(
    "balance_history", OUTSTANDING_BALANCES.columns + (Column("snapshot_date", DATE),)
)

_TARGET_COLUMNS = _columns(
    _required("practice_id", VARCHAR),
    _required("account_id", VARCHAR),
    _required("as_of_date", DATE),
    _required("evaluated_at", TIMESTAMPTZ),
    _required("rule_id", VARCHAR),
    _required("action", VARCHAR),
    _required("amount", MONEY, "effective patient portion"),
    Column("days_outstanding", INTEGER),
    _required("reason", VARCHAR, "human-readable: which thresholds matched"),
)

COLLECTION_TARGETS = Relation("collection_targets", _TARGET_COLUMNS)

COLLECTION_EXCLUSIONS = Relation("collection_exclusions", _columns(
    Column("practice_id", VARCHAR),
    Column("account_id", VARCHAR),
    Column("as_of_date", DATE),
    Column("evaluated_at", TIMESTAMPTZ),
    Column("rule_id", VARCHAR),
    Column("exclusion", VARCHAR),
    Column("detail", VARCHAR),
))

# --- The working database (the tables of STATE_RELATIONS are analyst relations too) ---

SCHEMA_MIGRATIONS = Relation("schema_migrations", _columns(
    _required("version", INTEGER),
    _required("name", VARCHAR),
    _required("applied_at", TIMESTAMPTZ),
), primary_key=("version",), doc="the migrations a working database has (storage/working_db)")

SYNC_RUNS = Relation("sync_runs", _columns(
    _required("sync_id", VARCHAR),
    _required("practice_id", VARCHAR),
    Column("dagster_run_id", VARCHAR),
    _required("as_of_date", DATE),
    _required("mode", VARCHAR, "full | incremental"),
    _required("source_mode", VARCHAR, "aging_report | ledger | fhir | fhir_bulk | file_drop"),
    _required("started_at", TIMESTAMPTZ),
    Column("finished_at", TIMESTAMPTZ),
    _required("status", VARCHAR, "running | success | failed"),
    Column("accounts", BIGINT),
    Column("rows_extracted", BIGINT),
    Column("rows_rejected", BIGINT),
    Column("requests", BIGINT),
    Column("retries", BIGINT),
    Column("error", VARCHAR, doc="one line, no secrets, no PHI"),
    Column("fresh_until", TIMESTAMPTZ),
    _internal("snapshot_id", VARCHAR, "the snapshot a successful sync published"),
    _internal("phase", VARCHAR, "of a running sync: extracting | extracted | publishing"),
    _internal("staging_file", VARCHAR, "where a running sync's extract waits"),
    Column("error_class", VARCHAR, doc="the kind of failure, for alerts"),
    _internal("pages", BIGINT),
    Column("source_file", VARCHAR, doc="file drops: the name of the file this sync read"),
    Column("source_checksum", VARCHAR, doc="file drops: its SHA-256"),
), primary_key=("sync_id",), doc="one row per sync attempt")

REJECTED_ROWS = Relation("rejected_rows", _columns(
    _required("sync_id", VARCHAR),
    _required("practice_id", VARCHAR),
    Column("account_id", VARCHAR, doc="the account the row belongs to, where known"),
    _required("endpoint", VARCHAR),
    Column("row_key", VARCHAR),
    _required("reason", VARCHAR, "which field failed and how, never a value"),
    _required("raw", VARCHAR, "JSON of only the fields the pipeline reads"),
))

BALANCE_DISCREPANCIES = Relation("balance_discrepancies", _columns(
    _required("sync_id", VARCHAR),
    _required("practice_id", VARCHAR),
    Column("account_id", VARCHAR),
    _required("check", VARCHAR),
    Column("expected", MONEY),
    Column("actual", MONEY),
    Column("detail", VARCHAR),
))

PUBLISHED_SNAPSHOTS = Relation("published_snapshots", _columns(
    _required("practice_id", VARCHAR),
    _required("snapshot_id", VARCHAR),
    Column("sync_id", VARCHAR),
    _required("published_at", TIMESTAMPTZ),
), primary_key=("practice_id",), doc="which snapshot of each practice is the published one")

OVERRIDE_EVENTS = Relation("override_events", _columns(
    _required("event_id", VARCHAR),
    _required("override_id", VARCHAR),
    _required("practice_id", VARCHAR),
    _required("account_id", VARCHAR),
    _required("event", VARCHAR, "set | replaced | cleared | superseded | expired"),
    Column("patient_portion", MONEY, doc="the override's values (NULL: field not set)"),
    Column("insurance_portion", MONEY),
    Column("base_patient_portion", MONEY, doc="synced values when it was set"),
    Column("base_insurance_portion", MONEY),
    Column("reason", VARCHAR),
    Column("actor", VARCHAR),
    _required("created_at", TIMESTAMPTZ),
    Column("sync_id", VARCHAR, doc="the sync that caused the event, if any"),
    Column("synced_patient_portion", MONEY, doc="superseded: the new synced values"),
    Column("synced_insurance_portion", MONEY),
    _required("sequence", BIGINT, "order of events (created_at may tie)"),
), primary_key=("event_id",), sequence="override_event_sequence",
    doc="append-only: nothing ever updates or deletes a row")

ACCOUNT_BLOCKS = Relation("account_blocks", _columns(
    _required("practice_id", VARCHAR),
    _required("account_id", VARCHAR),
    _required("blocked", BOOLEAN),
    _required("reason", VARCHAR),
    _required("actor", VARCHAR),
    _required("created_at", TIMESTAMPTZ),
    _required("sequence", BIGINT),
), sequence="account_block_sequence", doc="append-only; the latest row per account wins")

COLLECTION_TARGET_HISTORY = Relation(
    "collection_target_history", _TARGET_COLUMNS + (Column("sync_id", VARCHAR),),
    primary_key=("practice_id", "account_id", "rule_id", "as_of_date"),
    doc="the day's last decision per account and rule; re-evaluating replaces the day",
)

LEDGER_CURSORS = Relation("ledger_cursors", _columns(
    _required("practice_id", VARCHAR),
    _required("endpoint", VARCHAR),
    _required("cursor_at", TIMESTAMP, "server clock, as the server writes DateTStamp"),
), primary_key=("practice_id", "endpoint"))

LEDGER_REFRESHES = Relation("ledger_refreshes", _columns(
    _required("practice_id", VARCHAR),
    _required("last_full_as_of", DATE),
), primary_key=("practice_id",))

DROP_ACCEPTANCES = Relation("drop_acceptances", _columns(
    _required("acceptance_id", VARCHAR),
    _required("practice_id", VARCHAR),
    _required("reason", VARCHAR, "why the drop is genuine (never a patient's name)"),
    _required("actor", VARCHAR, "who accepted it"),
    _required("accepted_at", TIMESTAMPTZ),
    Column("used_by_sync_id", VARCHAR, doc="the sync that used it (NULL: still waiting)"),
    Column("used_at", TIMESTAMPTZ),
    Column("accounts", BIGINT, doc="accounts of the sync that used it"),
    Column("previous_accounts", BIGINT, doc="accounts of the previous successful sync then"),
), primary_key=("acceptance_id",),
    doc="a person's confirmation that the practice's next sync may drop accounts (one use,"
        " pipeline/collapse_guard.py); rows are never deleted")

PENDING_REPUBLISHES = Relation("pending_republishes", _columns(
    _required("practice_id", VARCHAR),
    _required("marked_at", TIMESTAMPTZ, "when the staff change was committed"),
), primary_key=("practice_id",),
    doc="practices with committed staff changes not yet republished (a staff command killed"
        " between its commit and its republish); each practice's republish deletes its row")

WORKING_TABLES: tuple[Relation, ...] = (
    SYNC_RUNS, REJECTED_ROWS, BALANCE_DISCREPANCIES, PUBLISHED_SNAPSHOTS, OVERRIDE_EVENTS,
    ACCOUNT_BLOCKS, COLLECTION_TARGET_HISTORY, LEDGER_CURSORS, LEDGER_REFRESHES,
    DROP_ACCEPTANCES, PENDING_REPUBLISHES,
)
WORKING_SEQUENCES: tuple[str, ...] = tuple(
    table.sequence for table in WORKING_TABLES if table.sequence
)

# --- Analyst relations, in the warehouse's order ---

ANALYST_RELATIONS: dict[str, Relation] = {
    relation.name: relation
    for relation in (
        ACCOUNT_BALANCES, OUTSTANDING_BALANCES, AGING_SUMMARY, SYNC_RUNS, REJECTED_ROWS,
        BALANCE_HISTORY, COLLECTION_TARGETS, COLLECTION_EXCLUSIONS, COLLECTION_TARGET_HISTORY,
        ACCOUNT_BLOCKS, OVERRIDE_EVENTS, BALANCE_DISCREPANCIES,
    )
}
# (name, type) of each analyst relation's columns, in order.
RELATIONS: dict[str, list[tuple[str, str]]] = {
    name: [(column.name, column.type) for column in relation.analyst_columns]
    for name, relation in ANALYST_RELATIONS.items()
}

# Relations computed from the source (the practice's data files, carried between publishes).
SYNC_RELATIONS = ("account_balances", "outstanding_balances", "aging_summary")
COLLECTION_RELATIONS = ("collection_targets", "collection_exclusions")
DATA_RELATIONS = SYNC_RELATIONS + COLLECTION_RELATIONS
# Relations exported from the working database's state at every publish.
STATE_RELATIONS = (
    "sync_runs", "rejected_rows", "balance_discrepancies", "override_events",
    "collection_target_history", "account_blocks",
)
# Kept outside the snapshots, one file per practice and practice-local day.
HISTORY_RELATIONS = ("balance_history",)
# Views analysts get on top of the relations above, defined by a SQL file each.
DERIVED_VIEWS = ("active_overrides", "override_conflicts")

# --- Per-sync staging database (and the raw ledger, which keeps the same columns) ---

STG_AGING_REPORT = Relation("stg_aging_report", _columns(
    Column("guarantor_id", BIGINT),
    Column("display_name", VARCHAR),
    Column("bal_0_30", MONEY),
    Column("bal_31_60", MONEY),
    Column("bal_61_90", MONEY),
    Column("bal_over_90", MONEY),
    Column("bal_total", MONEY),
    Column("ins_wo_est", MONEY),
    Column("ins_pay_est", MONEY),
    Column("patient_portion", MONEY),
), source_key="guarantor_id", doc="Open Dental's /reports/Aging, one row per guarantor")

STG_PATIENTS = Relation("stg_patients", _columns(
    Column("pat_num", BIGINT),
    Column("guarantor_id", BIGINT),
    Column("display_name", VARCHAR),
    Column("status", VARCHAR),
    Column("changed_at", TIMESTAMP),
), source_key="pat_num")

STG_LEDGER_PROCEDURES = Relation("stg_ledger_procedures", _columns(
    Column("proc_num", BIGINT),
    Column("pat_num", BIGINT),
    Column("proc_date", DATE),
    Column("proc_fee", MONEY),
    Column("unit_qty", BIGINT),
    Column("base_units", BIGINT),
    Column("proc_status", VARCHAR),
    Column("changed_at", TIMESTAMP),
), source_key="proc_num")

STG_LEDGER_CLAIMPROCS = Relation("stg_ledger_claimprocs", _columns(
    Column("claim_proc_num", BIGINT),
    Column("proc_num", BIGINT),
    Column("claim_num", BIGINT),
    Column("pat_num", BIGINT),
    Column("status", VARCHAR),
    Column("ins_pay_est", MONEY),
    Column("ins_pay_amt", MONEY),
    Column("write_off", MONEY),
    Column("write_off_est", MONEY),
    Column("date_cp", DATE),
    Column("changed_at", TIMESTAMP),
), source_key="claim_proc_num")

STG_LEDGER_PAYSPLITS = Relation("stg_ledger_paysplits", _columns(
    Column("split_num", BIGINT),
    Column("pat_num", BIGINT),
    Column("split_amt", MONEY),
    Column("date_pay", DATE),
    Column("changed_at", TIMESTAMP),
), source_key="split_num")

STG_LEDGER_ADJUSTMENTS = Relation("stg_ledger_adjustments", _columns(
    Column("adj_num", BIGINT),
    Column("pat_num", BIGINT),
    Column("adj_date", DATE),
    Column("adj_amt", MONEY),
    Column("changed_at", TIMESTAMP),
), source_key="adj_num")

STG_SOURCE_BALANCES = Relation("stg_source_balances", _columns(
    Column("account_id", VARCHAR),
    Column("account_name", VARCHAR),
    Column("bucket_0_30", MONEY),
    Column("bucket_31_60", MONEY),
    Column("bucket_61_90", MONEY),
    Column("bucket_91_120", MONEY, doc="NULL when the source does not split over-90"),
    Column("bucket_over_120", MONEY, doc="NULL when the source does not split over-90"),
    Column("bucket_over_90", MONEY, doc="NULL when split: the SQL sums the two"),
    Column("balance_total", MONEY, doc="NULL: the sum of the buckets"),
    Column("insurance_estimate", MONEY),
    Column("writeoff_estimate", MONEY),
    Column("patient_portion", MONEY, doc="NULL: balance_total minus both estimates"),
    Column("has_split", BOOLEAN, doc="false: the source gave no patient/insurance split"),
    Column("active", BOOLEAN, doc="false: an incremental read saw the account leave"),
), source_key="account_id",
    doc="accounts with their balances as a FHIR EHR or an aging file reports them")

STG_REJECTED_ROWS = Relation("stg_rejected_rows", _columns(
    *(column for column in REJECTED_ROWS.columns if column.name in ("endpoint", "row_key",
                                                                    "reason", "raw")),
    REJECTED_ROWS.column("account_id"),
), doc="rejected_rows of this sync, without the sync's ids")

STG_META = Relation("stg_meta", _columns(
    _required("key", VARCHAR),
    Column("value", VARCHAR),
), primary_key=("key",), doc="facts about the extract, for the publish step")

# The tables extracted pages are appended to (by the row types of `sources/rows.py`).
STAGING_TABLES: dict[str, Relation] = {
    relation.name: relation
    for relation in (
        STG_AGING_REPORT, STG_PATIENTS, STG_LEDGER_PROCEDURES, STG_LEDGER_CLAIMPROCS,
        STG_LEDGER_PAYSPLITS, STG_LEDGER_ADJUSTMENTS, STG_SOURCE_BALANCES, STG_REJECTED_ROWS,
    )
}

# The raw ledger of a ledger-mode practice (one DuckDB file per practice), keyed by staging
# table: the same columns and source keys as the staged rows it upserts.
LEDGER_TABLES: dict[str, Relation] = {
    staging.name: staging.renamed(name)
    for staging, name in (
        (STG_PATIENTS, "ledger_patients"),
        (STG_LEDGER_PROCEDURES, "ledger_procedures"),
        (STG_LEDGER_CLAIMPROCS, "ledger_claimprocs"),
        (STG_LEDGER_PAYSPLITS, "ledger_paysplits"),
        (STG_LEDGER_ADJUSTMENTS, "ledger_adjustments"),
    )
}

# --- Inputs of the SQL transforms, built in memory ---

COLLECTION_RULES = Relation("rules_in", _columns(
    Column("rule_order", INTEGER, doc="position in the practices file: the first match wins"),
    Column("rule_id", VARCHAR),
    Column("action", VARCHAR),
    Column("min_patient_balance", MONEY),
    Column("min_days_outstanding", INTEGER),
    Column("max_days_outstanding", INTEGER),
    Column("exclude_insurance_pending", BOOLEAN),
    Column("cooldown_days", INTEGER),
), doc="the practice's collection rules, as sql/collection_decisions.sql reads them")


# --- Derivations ---

def select_list(relation: str, source_alias: str | None = None) -> str:
    """`CAST(col AS type) AS col, ...` of an analyst relation, in the contract's order, for
    writing its Parquet files and for its view."""
    prefix = f"{source_alias}." if source_alias else ""
    return ",\n  ".join(
        f"CAST({prefix}{quoted(column.name)} AS {column.type}) AS {quoted(column.name)}"
        for column in ANALYST_RELATIONS[relation].analyst_columns
    )


def working_schema_sql() -> list[str]:
    """The statements that create a new working database's tables and sequences."""
    statements = []
    for table in WORKING_TABLES:
        statements.append(table.create_sql())
        if table.sequence:
            statements.append(f"CREATE SEQUENCE {table.sequence} START 1")
    return statements
