"""Sensors: report failed practice syncs, and practices whose data went stale (and sweep the
published files between publishes)."""

import json
from datetime import UTC, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DagsterInvariantViolationError,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SensorResult,
    run_failure_sensor,
    sensor,
)

# Not exported by dagster, but the type of AssetCheckEvaluation's public
# `target_materialization_data` argument.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from balances_pipeline.alerts import new_alert
from balances_pipeline.config import PracticesFileError
from balances_pipeline.defs.checks import FRESH
from balances_pipeline.defs.fleet import FAILED_PRACTICES, latest_materialization
from balances_pipeline.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, partition_order
from balances_pipeline.defs.resources import AlertWebhook, BalancesWarehouse
from balances_pipeline.pipeline.freshness import stale_practices
from balances_pipeline.storage.snapshots import SnapshotStore

STALE_CHECK_INTERVAL_SECONDS = 300
SUMMARY = AssetKey("aging_summary")
RANGE_START = RANGE_START_TAG
RANGE_END = RANGE_END_TAG


def _failed_sync_error_class(
    context: RunFailureSensorContext, warehouse: BalancesWarehouse
) -> str:
    rows = warehouse.analyst_query(
        "SELECT error_class FROM sync_runs WHERE dagster_run_id = ? AND status = 'failed'"
        " ORDER BY started_at DESC LIMIT 1",
        [context.dagster_run.run_id],
    )
    if rows and rows[0][0]:
        return rows[0][0]
    error = getattr(context.failure_event.event_specific_data, "error", None)
    return getattr(error, "cls_name", None) or "RunFailure"


def _is_our_practice(
    context: RunFailureSensorContext, warehouse: BalancesWarehouse, practice_id: str
) -> bool:
    """Only runs of this deployment's practices are its syncs (an instance may serve other
    projects). A practices file broken since the location loaded must not hide a failure."""
    try:
        return practice_id in warehouse.practices().ids
    except PracticesFileError as error:
        context.log.warning(f"practices file unreadable ({error}); reporting the run anyway")
        return True


@run_failure_sensor(
    name="report_failed_syncs",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    # Every run of the instance, not only this code location's: a sync started with
    # `dagster asset materialize -m balances_pipeline.definitions` (or from another
    # workspace) belongs to no loaded location, and failed unnoticed.
    monitor_all_code_locations=True,
    description="One log line per failed practice sync (however the run was started), and a"
                " webhook post when configured.",
)
def report_failed_syncs(
    context: RunFailureSensorContext, warehouse: BalancesWarehouse, alerts: AlertWebhook
) -> None:
    practice_id = context.dagster_run.tags.get("dagster/partition")
    if practice_id:
        if not _is_our_practice(context, warehouse, practice_id):
            return
        failed = {practice_id: _failed_sync_error_class(context, warehouse)}
    elif context.dagster_run.tags.get(RANGE_START):
        failed = _failed_practices_of_range(context, warehouse)
    else:
        return
    for practice_id, error_class in failed.items():
        alert = new_alert("sync_failed", practice_id, context.dagster_run.run_id, error_class)
        context.log.error(alert.line())
        alerts.post(alert)


def _failed_practices_of_range(
    context: RunFailureSensorContext, warehouse: BalancesWarehouse
) -> dict[str, str]:
    """A run of many practices (a partition range): one alert per practice that failed in
    it, as its steps recorded them (`sync_runs` rows of the run, and the `failed_practices`
    the last step names). A run that failed before naming any: every practice of its range."""
    failed: dict[str, str] = {}
    for event in context.get_step_failure_events():
        data = event.step_failure_data.user_failure_data
        entry = data.metadata.get(FAILED_PRACTICES) if data else None
        if entry is not None:
            failed.update(json.loads(entry.value))
    for practice_id, error_class in warehouse.analyst_query(
        "SELECT practice_id, arg_max(error_class, started_at) FROM sync_runs"
        " WHERE dagster_run_id = ? AND status = 'failed' GROUP BY practice_id",
        [context.dagster_run.run_id],
    ):
        failed.setdefault(practice_id, error_class or "SyncFailed")
    try:
        ids = partition_order(warehouse.practices())
    except PracticesFileError as error:
        context.log.warning(f"practices file unreadable ({error}); reporting the run anyway")
        return failed or {context.dagster_run.tags[RANGE_START]: "RunFailure"}
    if not failed:
        tags = context.dagster_run.tags
        first, last = ids.index(tags[RANGE_START]), ids.index(tags[RANGE_END])
        error = getattr(context.failure_event.event_specific_data, "error", None)
        failed = dict.fromkeys(ids[first:last + 1],
                               getattr(error, "cls_name", None) or "RunFailure")
    return {pid: cls for pid, cls in sorted(failed.items()) if pid in ids}


def _latest_summary(
    context: SensorEvaluationContext, practice_id: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The practice's latest aging_summary materialization, which the failed check is about.

    Dagster counts a partition's check result (the partition status in the UI) only while it
    targets the latest materialization of that asset partition; without a target, the
    stale practice's failure would show in the check's history but not as its status.
    """
    try:
        instance = context.instance
    except DagsterInvariantViolationError:  # a context built without an instance (tests)
        return None
    return latest_materialization(instance, SUMMARY, practice_id)


@sensor(
    name="report_stale_practices",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=STALE_CHECK_INTERVAL_SECONDS,
    description="Fails the `fresh` check of a practice whose data is past its fresh_until.",
)
def report_stale_practices(
    context: SensorEvaluationContext, warehouse: BalancesWarehouse, alerts: AlertWebhook
) -> SensorResult:
    latest = dict(warehouse.analyst_query(
        "SELECT practice_id, max(fresh_until) FROM sync_runs WHERE status = 'success'"
        " GROUP BY practice_id"
    ))
    stale = stale_practices(latest, warehouse.practices().ids, datetime.now(UTC))
    reported = set(json.loads(context.cursor)) if context.cursor else set()
    evaluations = []
    for practice_id in sorted(set(stale) - reported):
        alert = new_alert("stale", practice_id, None, "Stale")
        context.log.error(f"{alert.line()} fresh_until={stale[practice_id].isoformat()}")
        alerts.post(alert)
        evaluations.append(
            AssetCheckEvaluation(
                asset_key=SUMMARY,
                check_name=FRESH,
                passed=False,
                partition=practice_id,  # the check is partitioned by practice
                target_materialization_data=_latest_summary(context, practice_id),
                severity=AssetCheckSeverity.ERROR,
                metadata={"fresh_until": stale[practice_id].isoformat()},
            )
        )
    _sweep_published(context, warehouse)
    return SensorResult(asset_events=evaluations, cursor=json.dumps(sorted(stale)))


def _sweep_published(context: SensorEvaluationContext, warehouse: BalancesWarehouse) -> None:
    """The published files' clean-up runs at publishes; this runs it between them too, so
    retired aliases do not outlive a quiet day (`SnapshotStore.sweep_if_due`)."""
    try:
        SnapshotStore(warehouse.layout()).sweep_if_due()
    except OSError as error:
        context.log.warning(f"published files not swept: {type(error).__name__}")
