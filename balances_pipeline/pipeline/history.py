"""`balance_history`: the day's file, written after each publish (best effort)."""

from __future__ import annotations

import logging

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.outcomes import SyncOutcome
from balances_pipeline.storage.history import write_history
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.snapshots import SnapshotStore

log = logging.getLogger(__name__)


def record_history(practice: Practice, layout: Layout, outcome: SyncOutcome) -> None:
    """The day's balance_history file, after the publish; a failure here is logged, and the
    next publish of the day writes it again."""
    try:
        snapshot_dir = SnapshotStore(layout).snapshot_dir(practice.id, outcome.snapshot_id)
        write_history(
            layout, practice.id, snapshot_dir, outcome.as_of_date, practice.history_days
        )
    except Exception as error:  # noqa: BLE001 - the sync itself succeeded
        log.warning("practice %s: balance_history not written (%s)", practice.id,
                    type(error).__name__)
