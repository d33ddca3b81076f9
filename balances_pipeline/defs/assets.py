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

Every asset has `BackfillPolicy.single_run()`: a partition range (many practices) is one
run, whose steps loop over the practices (`fleet.py`: isolation, retries within a
practice, partial failures). A run of one partition key takes the single-practice path.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
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
from balances_pipeline.defs import fleet
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
from balances_pipeline.pipeline.outcomes import ExtractOutcome, SyncOutcome
from balances_pipeline.pipeline.publish_sync import publish_practice
from balances_pipeline.pipeline.recompute import complete_pending_republishes
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.working_db import reusing_connections

GROUP = SYNC_GROUP
# A partition range is one run: the steps loop over its practices (fleet.py).
SINGLE_RUN = BackfillPolicy.single_run()
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


def _practices(context: AssetExecutionContext, warehouse: BalancesWarehouse) -> list[Practice]:
    """The run's practices, in partition order; an unknown one fails the run (config)."""
    try:
        practices = warehouse.practices()
        return [practices.practice(key) for key in context.partition_keys]
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


def _extract_range(
    context: AssetExecutionContext, warehouse: BalancesWarehouse, sources: SourceClients,
    retry_policy: RetryPolicy | None,
) -> MaterializeResult:
    practices = _practices(context, warehouse)
    layout = warehouse.layout()
    ensure_analyst_warehouse(layout)  # once, before the threads

    def extract(practice: Practice) -> ExtractOutcome:
        return fleet.with_retries(lambda: extract_practice(
            practice, layout, sources.open, as_of=warehouse.fixed_as_of(),
            dagster_run_id=context.run.run_id,
        ), retry_policy)

    failures = {}
    with reusing_connections():
        results = fleet.run_pool(practices, extract)
    for practice, result in zip(practices, results, strict=True):
        if isinstance(result, fleet.PracticeFailure):
            failures[practice.id] = result
            context.log.error(f"practice {practice.id}: extract failed ({result.error_class})")
            metadata = fleet.failed_metadata(result)
        else:
            metadata = extract_metadata(result)
        context.add_asset_metadata(metadata, partition_key=practice.id)
    if len(failures) == len(practices):
        raise fleet.all_failed(failures, "source_extract")
    return MaterializeResult()


def _balances_metadata(outcome: SyncOutcome) -> dict[str, dict]:
    return {
        "account_balances": balances_metadata(outcome),
        "manual_overrides": override_metadata(outcome),
        "outstanding_balances": balances_metadata(outcome),
        "aging_summary": summary_metadata(outcome),
    }


def _publish_range(
    context: AssetExecutionContext, warehouse: BalancesWarehouse
) -> Iterator[Any]:
    practices = _practices(context, warehouse)
    layout = warehouse.layout()
    failures = fleet.failed_in_run(layout, context.run.run_id)
    checks: dict[str, list[AssetCheckResult]] = {}
    for practice in practices:
        failure = failures.get(practice.id)
        if failure is None:
            try:
                with reusing_connections():
                    outcome = publish_practice(practice, layout,
                                               dagster_run_id=context.run.run_id)
            except SyncFailed as error:
                failure = failures[practice.id] = fleet.failure_of(practice, error)
                context.log.error(f"practice {practice.id}: publish failed ({failure.error_class})")
        if failure is not None:
            for spec in BALANCE_SPECS:
                context.add_asset_metadata(fleet.failed_metadata(failure),
                                           asset_key=spec.key, partition_key=practice.id)
            continue
        context.log.info(f"practice {practice.id}: {outcome.accounts} accounts published "
                         f"(sync {outcome.sync_id}, as of {outcome.as_of_date})")
        for asset_key, metadata in _balances_metadata(outcome).items():
            context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=practice.id)
        checks[practice.id] = check_results(outcome)
    if len(failures) >= len(practices):
        raise fleet.all_failed(failures, "practice_balances")
    for spec in BALANCE_SPECS:
        yield MaterializeResult(asset_key=spec.key)
    yield from fleet.partition_check_events(context, checks)


def _collections_range(
    context: AssetExecutionContext, warehouse: BalancesWarehouse
) -> None:
    practices = _practices(context, warehouse)
    layout = warehouse.layout()
    failures = fleet.failed_in_run(layout, context.run.run_id)
    practices_file = warehouse.practices()  # read once for the run, not per practice
    for practice in practices:
        if practice.id in failures:
            continue
        try:
            with reusing_connections():
                complete_pending_republishes(layout, practices_file, [practice.id])
                outcome = evaluate_collection_targets(practice, practices_file, layout)
        except (RulesError, NoBalancesYet) as error:
            failures[practice.id] = fleet.failure_of(practice, error)
            context.log.error(f"practice {practice.id}: collection rules failed: {error}")
            continue
        context.log_event(AssetMaterialization(
            "collection_targets", partition=practice.id, metadata=collection_metadata(outcome)
        ))
    if failures:
        raise fleet.fail_for(failures, len(practices))


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
        backfill_policy=SINGLE_RUN,
    )
    def source_extract(
        context: AssetExecutionContext, warehouse: BalancesWarehouse, sources: SourceClients
    ) -> MaterializeResult:
        if fleet.is_range_run(context):
            return _extract_range(context, warehouse, sources, retry_policy)
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
        backfill_policy=SINGLE_RUN,
    )
    def practice_balances(
        context: AssetExecutionContext, warehouse: BalancesWarehouse
    ) -> Iterator[Any]:
        if fleet.is_range_run(context):
            yield from _publish_range(context, warehouse)
            return
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
        for asset_key, metadata in _balances_metadata(outcome).items():
            yield MaterializeResult(asset_key=asset_key, metadata=metadata)
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
        backfill_policy=SINGLE_RUN,
        # A range run logs one materialization per practice that succeeded (none for a
        # failed one), so the step yields no output of its own then.
        output_required=False,
    )
    def collection_targets(
        context: AssetExecutionContext, warehouse: BalancesWarehouse
    ) -> Iterator[MaterializeResult]:
        if fleet.is_range_run(context):
            _collections_range(context, warehouse)
            return
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
        yield MaterializeResult(metadata=collection_metadata(outcome))

    return [source_extract, practice_balances, collection_targets]
