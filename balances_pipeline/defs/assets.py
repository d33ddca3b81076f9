"""The sync assets, partitioned by practice: extract → balances → overrides → summary.

They run as one step (one multi-asset) because a practice's relations are published
together, atomically, at the end of the sync; each still gets its own materialization,
metadata and lineage in the UI. No run config is needed, so `--select '*'` works.
"""


from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
    PartitionsDefinition,
    multi_asset,
)

from balances_pipeline.config import PracticesFileError
from balances_pipeline.defs.checks import CHECK_SPECS, check_results
from balances_pipeline.defs.metadata import balances_metadata, extract_metadata, summary_metadata
from balances_pipeline.defs.resources import BalancesWarehouse
from balances_pipeline.sync.practice_sync import SyncFailed, sync_practice

GROUP = "balances"
PROGRESS_EVERY_PAGES = 25

SYNC_SPECS = [
    AssetSpec(
        "source_extract",
        group_name=GROUP,
        kinds={"python"},
        description="The practice's aging report, read page by page from its PMS.",
    ),
    AssetSpec(
        "account_balances",
        deps=["source_extract"],
        group_name=GROUP,
        kinds={"duckdb"},
        description="One row per account, as synced (aging.md).",
    ),
    AssetSpec(
        "outstanding_balances",
        deps=["account_balances"],
        group_name=GROUP,
        kinds={"duckdb"},
        description="account_balances with manual overrides applied: what every view reads.",
    ),
    AssetSpec(
        "aging_summary",
        deps=["outstanding_balances"],
        group_name=GROUP,
        kinds={"duckdb"},
        description="One aging row per practice, from outstanding_balances.",
    ),
]


def _practice_sync(
    context: AssetExecutionContext, warehouse: BalancesWarehouse
) -> Iterator[MaterializeResult | AssetCheckResult]:
    practice_id = context.partition_key
    try:
        practice = warehouse.practices().practice(practice_id)
    except (PracticesFileError, KeyError) as error:
        raise Failure(description=str(error).strip("'\"")) from None

    def progress(pages: int, rows: int) -> None:
        if pages % PROGRESS_EVERY_PAGES == 0:
            context.log.info(f"practice {practice_id}: {rows} rows in {pages} pages")

    try:
        outcome = sync_practice(
            practice, warehouse.layout(), dagster_run_id=context.run.run_id, progress=progress
        )
    except SyncFailed as error:
        raise Failure(
            description=str(error), metadata={"sync_id": error.sync_id or ""}
        ) from None
    context.log.info(
        f"practice {practice_id}: {outcome.accounts} accounts published "
        f"(sync {outcome.sync_id}, {outcome.extract.requests} requests, "
        f"{outcome.extract.retries} retries, {outcome.extract.rows_rejected} rejected)"
    )
    yield MaterializeResult(asset_key="source_extract", metadata=extract_metadata(outcome))
    yield MaterializeResult(asset_key="account_balances", metadata=balances_metadata(outcome))
    yield MaterializeResult(asset_key="outstanding_balances", metadata=balances_metadata(outcome))
    yield MaterializeResult(asset_key="aging_summary", metadata=summary_metadata(outcome))
    yield from check_results(outcome)


def build_practice_sync(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    return multi_asset(
        name="practice_sync",
        specs=SYNC_SPECS,
        check_specs=CHECK_SPECS,
        partitions_def=partitions_def,
    )(_practice_sync)
