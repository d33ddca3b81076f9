"""Every sync asset is partitioned by practice; the partition key is the practice id.

The partitions are ordered so that practices syncing at the same moment (the same cron
expression in the same time zone: one schedule group) are next to each other: a group is
then one contiguous partition range, which one run syncs (`--partition-range FIRST...LAST`,
`schedules.py`). Groups come in the order of their first practice in the practices file;
within a group, the practices keep their file order. A practice alone in its group keeps
its place relative to the others of the file.
"""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from balances_pipeline.config import Practice, PracticesFile

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def sync_group_key(practice: Practice) -> tuple[str, str]:
    """Practices with the same key tick at the same moments: one schedule, one run."""
    return (practice.sync.cron_expression, practice.timezone)


def sync_groups(practices: PracticesFile) -> list[list[Practice]]:
    groups: dict[tuple[str, str], list[Practice]] = {}
    for practice in practices.practices:
        groups.setdefault(sync_group_key(practice), []).append(practice)
    return list(groups.values())


def partition_order(practices: PracticesFile) -> list[str]:
    return [practice.id for group in sync_groups(practices) for practice in group]


def practice_partitions(practices: PracticesFile) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(partition_order(practices))
