"""The sync assets, partitioned by practice:
extract → balances → overrides → summary → collection targets.

Two steps per run. `source_extract` reads the practice's PMS into a staging file and
holds no shared resource, so extraction runs in parallel across practices. The balances
step transforms and publishes all of the practice's relations together, atomically, under
the practice's publish lock (a file lock: the one mechanism that serializes publishing,
released by the OS when a process dies, so a killed run never blocks anyone); then the
collection rules are evaluated on the published effective balances. None needs run
config, so `--select '*'` works.

Retries: urllib3 retries each request (throttling, 5xx, resets); the extract step's
`RetryPolicy` retries the whole extraction when the source stayed unavailable; bad data,
bad credentials and bad configuration fail at once (`Failure(allow_retries=False)`).
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Backoff,
    Failure,
    Jitter,
    MaterializeResult,
    PartitionsDefinition,
    RetryPolicy,
    asset,
    multi_asset,
)

from balances_pipeline.config import Practice, PracticesFileError, RulesError
from balances_pipeline.defs.checks import build_check_specs, check_results
from balances_pipeline.defs.jobs import SYNC_GROUP
from balances_pipeline.defs.metadata import (
    balances_metadata,
    collection_metadata,
    extract_metadata,
    override_metadata,
    summary_metadata,
)
from balances_pipeline.defs.resources import BalancesWarehouse, SourceClients
from balances_pipeline.pipeline.collections import NoBalancesYet, evaluate_collection_targets
from balances_pipeline.pipeline.errors import SyncFailed
from balances_pipeline.pipeline.extract import extract_practice
from balances_pipeline.pipeline.publish_sync import publish_practice
from balances_pipeline.pipeline.recompute import complete_pending_republishes

GROUP = SYNC_GROUP
# When the source stayed unavailable through urllib3's own retries: two more attempts of
# the whole extraction, a minute apart and more (exponential, with jitter).
EXTRACT_RETRY_POLICY = RetryPolicy(
    max_retries=2, delay=60, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)

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
        description="One row per account, as synced (docs/aging.md).",
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
        raise Failure(description=str(error).strip("'\""), allow_retries=False) from None


def _failure(error: SyncFailed) -> Exception:
    """A transient failure is re-raised for the step's RetryPolicy; anything else fails
    the step for good."""
    if error.transient:
        return error
    return Failure(
        description=str(error),
        metadata={"sync_id": error.sync_id or "", "error_class": error.error_class},
        allow_retries=False,
    )


def build_sync_assets(
    partitions_def: PartitionsDefinition,
    *,
    retry_policy: RetryPolicy | None = EXTRACT_RETRY_POLICY,  # the extract step's
) -> list[AssetsDefinition]:
    @asset(
        name="source_extract",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python"},
        description="The practice's source read into staging: Open Dental's aging report or "
        "ledger, a FHIR EHR's accounts, or the newest aging file dropped.",
        retry_policy=retry_policy,
    )
    def source_extract(
        context: AssetExecutionContext, warehouse: BalancesWarehouse, sources: SourceClients
    ) -> MaterializeResult:
        practice = _practice(context, warehouse)

        def progress(pages: int, rows: int) -> None:
            context.log.info(f"practice {practice.id}: {rows} rows in {pages} pages")

        try:
            outcome = extract_practice(
                practice, warehouse.layout(), sources.open, as_of=warehouse.fixed_as_of(),
                dagster_run_id=context.run.run_id, progress=progress,
            )
        except SyncFailed as error:
            if error.transient:
                context.log.warning(f"practice {practice.id}: {error}")
            raise _failure(error) from None
        return MaterializeResult(metadata=extract_metadata(outcome))

    @multi_asset(
        name="practice_balances",
        specs=BALANCE_SPECS,
        check_specs=build_check_specs(partitions_def),
        partitions_def=partitions_def,
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
        # A staff command killed after its commit left this practice's views behind:
        # publish its committed changes first, so the rules never read stale balances.
        if complete_pending_republishes(warehouse.layout(), warehouse.practices(), [practice.id]):
            context.log.info(f"practice {practice.id}: published pending staff changes first")
        try:
            outcome = evaluate_collection_targets(
                practice, warehouse.practices(), warehouse.layout()
            )
        except (RulesError, NoBalancesYet) as error:
            raise Failure(description=str(error), allow_retries=False) from None
        context.log.info(
            f"practice {practice.id}: {sum(outcome.targets_by_action.values())} targets, "
            f"{sum(outcome.exclusions_by_cause.values())} exclusions"
        )
        return MaterializeResult(metadata=collection_metadata(outcome))

    return [source_extract, practice_balances, collection_targets]
