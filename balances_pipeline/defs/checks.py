"""Asset checks on a practice's sync, built from what the sync recorded."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from balances_pipeline.pipeline.outcomes import SyncOutcome

BUCKETS_SUM_TO_TOTAL = "buckets_sum_to_total"
PATIENT_PORTION_MATCHES_SOURCE = "patient_portion_matches_source"
FRESH = "fresh"
LEDGER_MATCHES_REPORT = "ledger_matches_report"
NO_UNRESOLVED_CONFLICTS = "no_unresolved_override_conflicts"

CHECK_SPECS = [
    AssetCheckSpec(
        BUCKETS_SUM_TO_TOTAL,
        asset="account_balances",
        description="Every account's aging buckets add up to its balance total (to the cent).",
    ),
    AssetCheckSpec(
        PATIENT_PORTION_MATCHES_SOURCE,
        asset="account_balances",
        description=(
            "Our patient portion (BalTotal - InsPayEst - InsWoEst) equals the source's "
            "PatientPortion; mismatches are listed in balance_discrepancies."
        ),
    ),
    AssetCheckSpec(
        LEDGER_MATCHES_REPORT,
        asset="account_balances",
        description=(
            "Ledger mode: our aging of the raw ledger equals the source's own aging report "
            "(four buckets, total, estimates) to the cent on full refreshes; differences are "
            "in balance_discrepancies (ledger_vs_report). Passes trivially otherwise."
        ),
    ),
    AssetCheckSpec(
        NO_UNRESOLVED_CONFLICTS,
        asset="manual_overrides",
        description=(
            "No override is waiting for review in override_conflicts (the PMS changed an "
            "overridden account): replace or clear them."
        ),
    ),
    AssetCheckSpec(
        FRESH,
        asset="aging_summary",
        description=(
            "The practice's data is within its freshness expectation (daily: 26 h, hourly: "
            "2 h, cron: longest gap + 1 h). Passes at each sync; the report_stale_practices "
            "sensor fails it when sync_runs.fresh_until passes."
        ),
    ),
]


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
