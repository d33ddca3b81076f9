"""The sync job: every sync asset of one practice partition."""

from dagster import AssetSelection, PartitionsDefinition, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

SYNC_JOB = "practice_sync_job"


def build_sync_job(partitions_def: PartitionsDefinition) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        SYNC_JOB,
        selection=AssetSelection.groups("balances"),
        description="Sync one practice: extract, balances, overrides, summary.",
    )
