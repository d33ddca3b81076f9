"""Many practices in one Dagster run: the steps of a partition-range run.

`dagster asset materialize --partition-range FIRST...LAST` (and a grouped schedule's tick)
launches ONE run for every practice of the range (`BackfillPolicy.single_run()`), so the
run's fixed cost is paid once. Each step loops over `context.partition_keys`; each practice
keeps everything a single-practice sync has: its own as-of date, staging file, extract
lock, atomic publish and `sync_runs` row (all carrying the run's id).

- Extraction of different practices overlaps: a thread pool of `EXTRACT_WORKERS`. Staging
  files are per sync; the working database is reached only in short units of work under
  its cross-process file lock, which also excludes the threads of one process (one
  `FileLock` object per `WorkingDatabase`, so each thread's acquire is a real `flock`).
- Publishing stays one practice at a time (DuckDB work on two cores, each under its
  publish lock).
- A transient source failure is retried inside the practice's own thread, with the extract
  step's `RetryPolicy` delays: a retry never re-runs another practice's work (a Dagster
  step retry would). After its retries the practice fails alone.
- A failed practice (wrong key, broken source, collapse guard, rules) is recorded failed in
  `sync_runs`; later steps of the run skip it; the others go on and publish. The last step
  (`collection_targets`) then fails, naming the failed practices (ids and error classes,
  also as the `failed_practices` metadata), so the run is FAILED and `report_failed_syncs`
  alerts for each of them.

Per-partition reporting: Dagster 1.13 emits one materialization per partition of the range
for a step's output; `context.add_asset_metadata(..., partition_key=)` gives each its own
metadata. Check results are `AssetCheckEvaluation`s with `partition=` (an
`AssetCheckResult` takes the run's single partition key, which a range run has not). The
last step logs `AssetMaterialization(partition=)` for its successful practices only.
Known limit (dagster issue #17836): the first two steps cannot leave a failed practice's
partition unmaterialized without failing every practice; its materialization there carries
`sync_status: failed` and its error class, and it gets no check results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Failure,
    Output,
    RetryPolicy,
)

# The type of AssetCheckEvaluation's public `target_materialization_data` argument.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.errors import SyncFailed
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.working_db import WorkingDatabase

EXTRACT_WORKERS = 4
FAILED_PRACTICES = "failed_practices"  # the last step's Failure metadata: {id: error_class}
T = TypeVar("T")


@dataclass(frozen=True)
class PracticeFailure:
    practice_id: str
    error_class: str
    sync_id: str | None = None
    message: str = ""


def is_range_run(context: AssetExecutionContext) -> bool:
    """A run of a partition range (even a range of one), not of one partition key."""
    return not context.has_partition_key


def failure_of(practice: Practice, error: BaseException) -> PracticeFailure:
    if isinstance(error, SyncFailed):
        return PracticeFailure(practice.id, error.error_class or type(error).__name__,
                               error.sync_id, str(error))
    return PracticeFailure(practice.id, type(error).__name__, None, str(error))


def failed_metadata(failure: PracticeFailure) -> dict[str, Any]:
    return {"sync_status": "failed", "error_class": failure.error_class,
            "sync_id": failure.sync_id or ""}


def with_retries(attempt: Callable[[], T], policy: RetryPolicy | None) -> T:
    """Run one practice's extraction, again after a transient failure, as the extract
    step's RetryPolicy would (its count and delays), without touching other practices."""
    retries = 0
    while True:
        try:
            return attempt()
        except SyncFailed as error:
            if not error.transient or policy is None or retries >= policy.max_retries:
                raise
            retries += 1
            time.sleep(max(0.0, float(policy.calculate_delay(retries))))


def run_pool(
    practices: Sequence[Practice], work: Callable[[Practice], T], workers: int = EXTRACT_WORKERS
) -> list[T | PracticeFailure]:
    """`work` for every practice, at most `workers` at once; results in practice order. A
    practice's exception becomes its PracticeFailure (the others are not affected)."""

    def one(practice: Practice) -> T | PracticeFailure:
        try:
            return work(practice)
        except Exception as error:  # noqa: BLE001 - a practice's failure is its own
            return failure_of(practice, error)

    if len(practices) <= 1:
        return [one(practice) for practice in practices]
    with ThreadPoolExecutor(max_workers=min(workers, len(practices)),
                            thread_name_prefix="extract") as pool:
        return list(pool.map(one, practices))


def failed_in_run(layout: Layout, run_id: str) -> dict[str, PracticeFailure]:
    """Practices whose latest sync of this Dagster run failed (from `sync_runs`)."""
    with WorkingDatabase(layout).connect() as con:
        rows = con.execute(
            "SELECT practice_id, status, error_class, sync_id FROM ("
            " SELECT *, row_number() OVER (PARTITION BY practice_id ORDER BY started_at DESC)"
            " AS n FROM sync_runs WHERE dagster_run_id = ?) WHERE n = 1",
            [run_id],
        ).fetchall()
    return {pid: PracticeFailure(pid, error_class or "SyncFailed", sync_id)
            for pid, status, error_class, sync_id in rows if status == "failed"}


def latest_materialization(
    instance: DagsterInstance, asset_key: AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The latest materialization of an asset partition, as a check result's target (a
    partition's check status counts only while it targets that materialization)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    latest = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
    )


def partition_check_events(
    context: AssetExecutionContext, results_by_partition: dict[str, list[AssetCheckResult]]
) -> Iterator[Output | AssetCheckEvaluation]:
    """Each practice's check results as evaluations of its own partition, about its own
    partition's latest materialization (emitted by this step just before). The step's check
    outputs are yielded once each, as Dagster requires of a step with check specs."""
    assets_def = context.assets_def
    for key in sorted(assets_def.check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        yield Output(None, output_name=assets_def.get_output_name_for_asset_check_key(key))
    for partition, results in results_by_partition.items():
        targets: dict[AssetKey, Any] = {}
        for result in results:
            asset_key = AssetKey.from_coercible(result.asset_key)
            if asset_key not in targets:
                targets[asset_key] = latest_materialization(context.instance, asset_key,
                                                             partition)
            spec = assets_def.get_spec_for_check_key(AssetCheckKey(asset_key, result.check_name))
            yield AssetCheckEvaluation(
                asset_key=asset_key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity,
                description=result.description, partition=partition,
                target_materialization_data=targets[asset_key], blocking=spec.blocking,
            )


def _failure(description: str, failures: dict[str, PracticeFailure]) -> Failure:
    """A step's failure naming the failed practices (ids and error classes, also as the
    `failed_practices` metadata the failure sensor reads)."""
    named = ", ".join(f"{f.practice_id} ({f.error_class})" for f in failures.values())
    return Failure(
        description=f"{description}: {named}",
        metadata={FAILED_PRACTICES: json.dumps(
            {f.practice_id: f.error_class for f in failures.values()})},
        allow_retries=False,
    )


def fail_for(failures: dict[str, PracticeFailure], total: int) -> Failure:
    """The run's verdict when some practices failed."""
    return _failure(f"{len(failures)} of {total} practices failed in this run", failures)


def all_failed(failures: dict[str, PracticeFailure], step: str) -> Failure:
    return _failure(f"every practice of the run failed at {step}", failures)
