"""Every sync asset is partitioned by practice; the partition key is the practice id."""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from balances_pipeline.config import PracticesFile


def practice_partitions(practices: PracticesFile) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(practices.ids)
