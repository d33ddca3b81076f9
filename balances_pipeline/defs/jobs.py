"""The sync job: every sync asset, for the practice partition a run asks for."""

from dagster import AssetSelection, define_asset_job

SYNC_JOB = "practice_sync_job"
SYNC_GROUP = "balances"


def build_sync_job():  # -> UnresolvedAssetJobDefinition (no public name for the type)
    return define_asset_job(
        SYNC_JOB,
        selection=AssetSelection.groups(SYNC_GROUP),
        description="Sync one practice: extract, balances, overrides, summary, collection "
        "targets.",
    )
