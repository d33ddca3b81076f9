"""Asset checks on a practice's sync, built from what the sync recorded.

The checks are partitioned like the assets they check (by practice), so each practice's
result is its own: one practice's sync never replaces another's result, and the failed
`fresh` check of a stale practice stays failed until that practice syncs again. The
partition of an `AssetCheckResult` comes from the step (the run's partition key) because
the spec is partitioned. Partitioned asset checks are a preview API in Dagster 1.13.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    PartitionsDefinition,
    PreviewWarning,
)

from balances_pipeline.pipeline.outcomes import SyncOutcome

BUCKETS_SUM_TO_TOTAL = "buckets_sum_to_total"
PATIENT_PORTION_MATCHES_SOURCE = "patient_portion_matches_source"
FRESH = "fresh"
LEDGER_MATCHES_REPORT = "ledger_matches_report"
NO_UNRESOLVED_CONFLICTS = "no_unresolved_override_conflicts"

CHECKS = [
    dict(
        name=BUCKETS_SUM_TO_TOTAL,
        asset="account_balances",
        description="Every account's aging buckets add up to its balance total (to the cent).",
    ),
    dict(
        name=PATIENT_PORTION_MATCHES_SOURCE,
        asset="account_balances",
        description=(
            "Our patient portion (BalTotal - InsPayEst - InsWoEst) equals the source's "
            "PatientPortion; mismatches are listed in balance_discrepancies."
        ),
    ),
    dict(
        name=LEDGER_MATCHES_REPORT,
        asset="account_balances",
        description=(
            "Ledger mode: our aging of the raw ledger equals the source's own aging report "
            "(four buckets, total, estimates) to the cent on full refreshes; differences are "
            "in balance_discrepancies (ledger_vs_report). Passes trivially otherwise."
        ),
    ),
    dict(
        name=NO_UNRESOLVED_CONFLICTS,
        asset="manual_overrides",
        description=(
            "No override is waiting for review in override_conflicts (the PMS changed an "
            "overridden account): replace or clear them."
        ),
    ),
    dict(
        name=FRESH,
        asset="aging_summary",
        description=(
            "The practice's data is within its freshness expectation (daily: 26 h, hourly: "
            "2 h, cron: longest gap + 1 h). Passes at each sync; the report_stale_practices "
            "sensor fails it when sync_runs.fresh_until passes."
        ),
    ),
]


def build_check_specs(partitions_def: PartitionsDefinition) -> list[AssetCheckSpec]:
    """The checks, partitioned by practice like the sync assets (the same definition)."""
    with warnings.catch_warnings():
        # Dagster 1.13 warns at every partitioned spec that the feature is in preview: known
        # (pyproject.toml keeps dagster below 1.14), and noise at every code location load.
        warnings.filterwarnings("ignore", category=PreviewWarning,
                                message="Specifying a partitions_def on an AssetCheckSpec")
        return [AssetCheckSpec(**check, partitions_def=partitions_def) for check in CHECKS]


def check_results(outcome: SyncOutcome) -> list[AssetCheckResult]:
    found = outcome.discrepancies
    buckets = found.get("buckets_do_not_sum", 0)
    portions = found.get("patient_portion_mismatch", 0)
    where = {"sync_id": outcome.sync_id, "see": "balance_discrepancies"}
    return [
        AssetCheckResult(
            asset_key="account_balances",
            check_name=BUCKETS_SUM_TO_TOTAL,
            passed=buckets == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"accounts_failing": buckets, **where},
        ),
        AssetCheckResult(
            asset_key="account_balances",
            check_name=PATIENT_PORTION_MATCHES_SOURCE,
            passed=portions == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"accounts_failing": portions, **where},
        ),
        AssetCheckResult(
            asset_key="account_balances",
            check_name=LEDGER_MATCHES_REPORT,
            passed=found.get("ledger_vs_report", 0) == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"differences": found.get("ledger_vs_report", 0), "mode": outcome.mode,
                      **where},
        ),
        AssetCheckResult(
            asset_key="manual_overrides",
            check_name=NO_UNRESOLVED_CONFLICTS,
            passed=outcome.overrides.get("conflicts", 0) == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"unresolved_conflicts": outcome.overrides.get("conflicts", 0),
                      "see": "override_conflicts"},
        ),
        AssetCheckResult(
            asset_key="aging_summary",
            check_name=FRESH,
            passed=True,
            severity=AssetCheckSeverity.ERROR,
            metadata={"fresh_until": outcome.fresh_until.isoformat()},
        ),
    ]
