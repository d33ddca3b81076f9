"""The relations analysts rely on (`warehouse.md`): names, columns and types, in one place.

Used to write the zero-row schema files, the analyst views' column lists and the casts
of every published Parquet file, so the three can never disagree.
"""

from __future__ import annotations

MONEY = "DECIMAL(14,2)"

_BALANCE_COLUMNS: list[tuple[str, str]] = [
    ("practice_id", "VARCHAR"),
    ("account_id", "VARCHAR"),
    ("account_name", "VARCHAR"),
    ("as_of_date", "DATE"),
    ("synced_at", "TIMESTAMPTZ"),
    ("sync_id", "VARCHAR"),
    ("source_mode", "VARCHAR"),
    ("balance_total", MONEY),
    ("bucket_0_30", MONEY),
    ("bucket_31_60", MONEY),
    ("bucket_61_90", MONEY),
    ("bucket_91_120", MONEY),
    ("bucket_over_120", MONEY),
    ("bucket_over_90", MONEY),
    ("insurance_estimate", MONEY),
    ("writeoff_estimate", MONEY),
    ("patient_portion", MONEY),
    ("insurance_portion", MONEY),
    ("days_outstanding", "INTEGER"),
    ("has_rejected_rows", "BOOLEAN"),
    ("guarantor_status", "VARCHAR"),  # PatStatus of the guarantor, where the source reports it
]

_OUTSTANDING_COLUMNS = _BALANCE_COLUMNS + [
    ("synced_patient_portion", MONEY),
    ("synced_insurance_portion", MONEY),
    ("synced_balance_total", MONEY),
    ("override_id", "VARCHAR"),
    ("is_overridden", "BOOLEAN"),
]

_TARGET_COLUMNS: list[tuple[str, str]] = [
    ("practice_id", "VARCHAR"),
    ("account_id", "VARCHAR"),
    ("as_of_date", "DATE"),
    ("evaluated_at", "TIMESTAMPTZ"),
    ("rule_id", "VARCHAR"),
    ("action", "VARCHAR"),
    ("amount", MONEY),
    ("days_outstanding", "INTEGER"),
    ("reason", "VARCHAR"),
]

RELATIONS: dict[str, list[tuple[str, str]]] = {
    "account_balances": _BALANCE_COLUMNS,
    "outstanding_balances": _OUTSTANDING_COLUMNS,
    "aging_summary": [
        ("practice_id", "VARCHAR"),
        ("as_of_date", "DATE"),
        ("synced_at", "TIMESTAMPTZ"),
        ("account_count", "BIGINT"),
        ("balance_total", MONEY),
        ("bucket_0_30", MONEY),
        ("bucket_31_60", MONEY),
        ("bucket_61_90", MONEY),
        ("bucket_91_120", MONEY),
        ("bucket_over_120", MONEY),
        ("bucket_over_90", MONEY),
        ("patient_portion", MONEY),
        ("insurance_portion", MONEY),
        ("overridden_account_count", "BIGINT"),
        ("pct_over_90", "DECIMAL(18,2)"),
    ],
    "sync_runs": [
        ("sync_id", "VARCHAR"),
        ("practice_id", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("as_of_date", "DATE"),
        ("mode", "VARCHAR"),
        ("source_mode", "VARCHAR"),
        ("started_at", "TIMESTAMPTZ"),
        ("finished_at", "TIMESTAMPTZ"),
        ("status", "VARCHAR"),
        ("accounts", "BIGINT"),
        ("rows_extracted", "BIGINT"),
        ("rows_rejected", "BIGINT"),
        ("requests", "BIGINT"),
        ("retries", "BIGINT"),
        ("error", "VARCHAR"),
        ("fresh_until", "TIMESTAMPTZ"),
        ("error_class", "VARCHAR"),
    ],
    "rejected_rows": [
        ("sync_id", "VARCHAR"),
        ("practice_id", "VARCHAR"),
        ("endpoint", "VARCHAR"),
        ("row_key", "VARCHAR"),
        ("reason", "VARCHAR"),
        ("raw", "VARCHAR"),
    ],
    "balance_history": _OUTSTANDING_COLUMNS + [("snapshot_date", "DATE")],
    "collection_targets": _TARGET_COLUMNS,
    "collection_exclusions": [
        ("practice_id", "VARCHAR"),
        ("account_id", "VARCHAR"),
        ("as_of_date", "DATE"),
        ("evaluated_at", "TIMESTAMPTZ"),
        ("rule_id", "VARCHAR"),
        ("exclusion", "VARCHAR"),
        ("detail", "VARCHAR"),
    ],
    "collection_target_history": _TARGET_COLUMNS + [("sync_id", "VARCHAR")],
    "account_blocks": [
        ("practice_id", "VARCHAR"),
        ("account_id", "VARCHAR"),
        ("blocked", "BOOLEAN"),
        ("reason", "VARCHAR"),
        ("actor", "VARCHAR"),
        ("created_at", "TIMESTAMPTZ"),
        ("sequence", "BIGINT"),
    ],
    "override_events": [
        ("event_id", "VARCHAR"),
        ("override_id", "VARCHAR"),
        ("practice_id", "VARCHAR"),
        ("account_id", "VARCHAR"),
        ("event", "VARCHAR"),
        ("patient_portion", MONEY),
        ("insurance_portion", MONEY),
        ("base_patient_portion", MONEY),
        ("base_insurance_portion", MONEY),
        ("reason", "VARCHAR"),
        ("actor", "VARCHAR"),
        ("created_at", "TIMESTAMPTZ"),
        ("sync_id", "VARCHAR"),
        ("synced_patient_portion", MONEY),
        ("synced_insurance_portion", MONEY),
        ("sequence", "BIGINT"),
    ],
    "balance_discrepancies": [
        ("sync_id", "VARCHAR"),
        ("practice_id", "VARCHAR"),
        ("account_id", "VARCHAR"),
        ("check", "VARCHAR"),
        ("expected", MONEY),
        ("actual", MONEY),
        ("detail", "VARCHAR"),
    ],
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


def quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def select_list(relation: str, source_alias: str | None = None) -> str:
    """`CAST(col AS type) AS col, ...` in the contract's order, for writing and for views."""
    prefix = f"{source_alias}." if source_alias else ""
    return ",\n  ".join(
        f"CAST({prefix}{quoted(name)} AS {type_}) AS {quoted(name)}"
        for name, type_ in RELATIONS[relation]
    )
