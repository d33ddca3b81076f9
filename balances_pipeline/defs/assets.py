"""The sync assets, partitioned by practice:
extract → balances → overrides → summary → collection targets.

Two steps per run. `source_extract` reads the practice's PMS into a staging file and
holds no shared resource, so extraction runs in parallel across practices. The balances
step transforms and publishes all of the practice's relations together, atomically, in
the `balances_warehouse` pool; then the collection rules are evaluated on the published
effective balances. None needs run config, so `--select '*'` works.
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
    RetryRequested,
    asset,
    multi_asset,
)

from balances_pipeline.config import Practice, PracticesFileError, RulesError
from balances_pipeline.defs.checks import CHECK_SPECS, check_results
from balances_pipeline.defs.metadata import (
    balances_metadata,
    collection_metadata,
    extract_metadata,
    override_metadata,
    summary_metadata,
)
from balances_pipeline.defs.resources import BalancesWarehouse
from balances_pipeline.sync.collection_targets import NoBalancesYet, evaluate_collection_targets
from balances_pipeline.sync.practice_sync import SyncFailed, extract_practice, publish_practice

GROUP = "balances"
WAREHOUSE_POOL = "balances_warehouse"
PROGRESS_EVERY_PAGES = 25
TRANSIENT_RETRIES = 2
TRANSIENT_RETRY_WAIT_SECONDS = 60

BALANCE_SPECS = [
    AssetSpec(
        "manual_overrides",
        group_name=GROUP,
        kinds={"duckdb"},
        description=(
            "Staff corrections of accounts' portions (append-only override_events). Each sync "
            "keeps, supersedes or expires the active ones; `balances override` and the "
            "manual_override_job add to them."
        ),
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
        deps=["account_balances", "manual_overrides"],
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


def _practice(context: AssetExecutionContext, warehouse: BalancesWarehouse) -> Practice:
    try:
        return warehouse.practices().practice(context.partition_key)
    except (PracticesFileError, KeyError) as error:
        raise Failure(description=str(error).strip("'\"")) from None


def _failure(error: SyncFailed) -> Failure:
    return Failure(
        description=str(error),
        metadata={"sync_id": error.sync_id or "", "error_class": error.error_class},
    )


def build_sync_assets(partitions_def: PartitionsDefinition) -> list[AssetsDefinition]:
    @asset(
        name="source_extract",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python"},
        description="The practice's aging report, read page by page from its PMS into staging.",
    )
    def source_extract(
        context: AssetExecutionContext, warehouse: BalancesWarehouse
    ) -> MaterializeResult:
        practice = _practice(context, warehouse)

        def progress(pages: int, rows: int) -> None:
            if pages % PROGRESS_EVERY_PAGES == 0:
                context.log.info(f"practice {practice.id}: {rows} rows in {pages} pages")

        try:
            outcome = extract_practice(
                practice, warehouse.layout(), dagster_run_id=context.run.run_id,
                progress=progress,
            )
        except SyncFailed as error:
            if error.transient and context.retry_number < TRANSIENT_RETRIES:
                context.log.warning(f"practice {practice.id}: {error}; retrying the extract")
                raise RetryRequested(
                    max_retries=TRANSIENT_RETRIES, seconds_to_wait=TRANSIENT_RETRY_WAIT_SECONDS
                ) from None
            raise _failure(error) from None
        return MaterializeResult(metadata=extract_metadata(outcome))

    @multi_asset(
        name="practice_balances",
        specs=BALANCE_SPECS,
        check_specs=CHECK_SPECS,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
    )
    def practice_balances(
        context: AssetExecutionContext, warehouse: BalancesWarehouse
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        practice = _practice(context, warehouse)
        try:
            outcome = publish_practice(
                practice, warehouse.layout(), dagster_run_id=context.run.run_id
            )
        except SyncFailed as error:
            raise _failure(error) from None
        context.log.info(
            f"practice {practice.id}: {outcome.accounts} accounts published "
            f"(sync {outcome.sync_id}, as of {outcome.as_of_date})"
        )
        yield MaterializeResult(asset_key="account_balances", metadata=balances_metadata(outcome))
        yield MaterializeResult(asset_key="manual_overrides", metadata=override_metadata(outcome))
        yield MaterializeResult(
            asset_key="outstanding_balances", metadata=balances_metadata(outcome)
        )
        yield MaterializeResult(asset_key="aging_summary", metadata=summary_metadata(outcome))
        yield from check_results(outcome)

    @asset(
        name="collection_targets",
        deps=["outstanding_balances"],
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "The practice's auto collection rules evaluated on its effective balances: "
            "collection_targets, collection_exclusions, collection_target_history and the "
            "day's CSV for the messaging side."
        ),
    )
    def collection_targets(
        context: AssetExecutionContext, warehouse: BalancesWarehouse
    ) -> MaterializeResult:
        practice = _practice(context, warehouse)
        try:
            outcome = evaluate_collection_targets(
                practice, warehouse.practices(), warehouse.layout()
            )
        except (RulesError, NoBalancesYet) as error:
            raise Failure(description=str(error)) from None
        context.log.info(
            f"practice {practice.id}: {sum(outcome.targets_by_action.values())} targets, "
            f"{sum(outcome.exclusions_by_cause.values())} exclusions"
        )
        return MaterializeResult(metadata=collection_metadata(outcome))

    return [source_extract, practice_balances, collection_targets]
