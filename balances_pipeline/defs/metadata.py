"""Materialization metadata: ids and aggregate figures only, never names or secrets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dagster import MetadataValue

from balances_pipeline.pipeline.collections import CollectionOutcome
from balances_pipeline.pipeline.outcomes import ExtractOutcome, SyncOutcome
from balances_pipeline.pipeline.summary import BUCKETS
from balances_pipeline.staff.blocks import BlockResult
from balances_pipeline.staff.overrides import OverrideResult

CHART_WIDTH = 24


def money(value: Decimal | None) -> str | None:
    """Exact decimal text: money never passes through a binary float, not even in metadata."""
    return None if value is None else f"{value:.2f}"


def aging_chart(summary: dict[str, Any]) -> str:
    rows = [(name, summary.get(name)) for name in BUCKETS if name != "bucket_over_90"]
    if summary.get("bucket_91_120") is None:
        rows = [(name, value) for name, value in rows if value is not None]
        rows.append(("bucket_over_90", summary.get("bucket_over_90")))
    largest = max((abs(value) for _, value in rows if value), default=Decimal(0))
    lines = ["| bucket | amount | |", "| --- | ---: | --- |"]
    for name, value in rows:
        value = value or Decimal(0)
        width = round(CHART_WIDTH * abs(value) / largest) if largest else 0
        label = name.removeprefix("bucket_").replace("_", "-")
        lines.append(f"| {label} | {value:,.2f} | {'█' * width} |")
    return "\n".join(lines)


def common(outcome: SyncOutcome | ExtractOutcome) -> dict[str, Any]:
    return {"sync_id": outcome.sync_id, "as_of_date": outcome.as_of_date.isoformat()}


def extract_metadata(outcome: ExtractOutcome) -> dict[str, Any]:
    extract = outcome.extract
    return {
        **common(outcome),
        "dagster/row_count": extract.rows_extracted,
        "rows_extracted": extract.rows_extracted,
        "rows_rejected": extract.rows_rejected,
        "requests": extract.requests,
        "retries": extract.retries,
        "pages": extract.pages,
        "reread_after_duplicates": extract.reread_after_duplicates,
        "duration_seconds": round(outcome.duration_seconds, 3),
        **_read_facts(outcome),
    }


def _read_facts(outcome: ExtractOutcome) -> dict[str, Any]:
    """Where an account-balances source read from (a file's name and checksum: no data)."""
    facts = outcome.extract.facts
    if facts is None:
        return {}
    found: dict[str, Any] = {"read_path": facts.read_path or "", "unchanged": outcome.unchanged}
    if facts.source_file:
        found |= {"source_file": facts.source_file, "source_checksum": facts.source_checksum}
    return found


def balances_metadata(outcome: SyncOutcome) -> dict[str, Any]:
    summary = outcome.summary
    return {
        **common(outcome),
        "snapshot_id": outcome.snapshot_id,
        "dagster/row_count": outcome.accounts,
        "accounts": outcome.accounts,
        "balance_total": money(summary["balance_total"]),
        **{name: money(summary[name]) for name in BUCKETS},
        "discrepancies": sum(outcome.discrepancies.values()),
        "ledger_vs_report_differences": outcome.discrepancies.get("ledger_vs_report", 0),
        "sync_mode": outcome.mode,
        "entries_after_as_of_date": outcome.future_entries
        if outcome.future_entries is not None else 0,
        "overridden_accounts": outcome.overrides.get("active", 0),
        "override_conflicts": outcome.overrides.get("conflicts", 0),
    }


def summary_metadata(outcome: SyncOutcome) -> dict[str, Any]:
    summary = outcome.summary
    return {
        **common(outcome),
        "dagster/row_count": 1,
        "accounts": outcome.accounts,
        "balance_total": money(summary["balance_total"]),
        "patient_portion": money(summary["patient_portion"]),
        "insurance_portion": money(summary["insurance_portion"]),
        "pct_over_90": money(summary["pct_over_90"]),
        "fresh_until": outcome.fresh_until.isoformat(),
        "aging": MetadataValue.md(aging_chart(summary)),
        "duration_seconds": round(outcome.duration_seconds, 3),
    }


def override_metadata(outcome: SyncOutcome) -> dict[str, Any]:
    counts = outcome.overrides
    return {
        **common(outcome),
        "active_overrides": counts.get("active", 0),
        "superseded_by_this_sync": counts.get("superseded", 0),
        "expired_by_this_sync": counts.get("expired", 0),
        "unresolved_conflicts": counts.get("conflicts", 0),
    }


def collection_metadata(outcome: CollectionOutcome) -> dict[str, Any]:
    targets = outcome.targets_by_action
    exclusions = outcome.exclusions_by_cause
    return {
        "as_of_date": outcome.as_of_date.isoformat(),
        "rules": outcome.rules,
        "dagster/row_count": sum(targets.values()),
        **{f"targets_{action}": targets.get(action, 0)
           for action in ("reminder", "final_notice", "collections_referral")},
        **{f"excluded_{cause}": exclusions.get(cause, 0)
           for cause in ("blocked", "deceased", "data_quality", "insurance_pending", "cooldown")},
        "amount_targeted": money(outcome.amount_targeted),
        "export_file": outcome.export_path.name if outcome.export_path else "",
    }


def override_change_metadata(
    results: list[OverrideResult], action: str, via: str
) -> dict[str, Any]:
    """A staff override change in one practice: ids and counts, never the reason or names
    (the reason and the actor are in override_events, found by the override id)."""
    created = [result.override_id for result in results if result.override_id]
    ended = [old_id for result in results for old_id in result.ended_ids]
    metadata: dict[str, Any] = {
        "action": action,
        "via": via,
        "accounts": len(results),
        "overrides_set": len(created),
        "overrides_ended": len(ended),
    }
    if len(results) == 1:
        metadata["override_id"] = ", ".join(created or ended)
    return metadata


def block_change_metadata(result: BlockResult, via: str) -> dict[str, Any]:
    """A staff block set or lifted: the block's row (account_blocks.sequence), no reason."""
    return {
        "action": "block_set" if result.blocked else "block_clear",
        "via": via,
        "accounts": 1,
        "block_sequence": result.sequence,
    }
