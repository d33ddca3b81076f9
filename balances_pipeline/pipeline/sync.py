"""A whole sync in one call: extract, then publish (the CLI's demo, tests, the benchmark)."""

from __future__ import annotations

import time
from datetime import date

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.extract import ClientFactory, ProgressCallback, extract_practice
from balances_pipeline.pipeline.outcomes import SyncOutcome
from balances_pipeline.pipeline.publish_sync import publish_practice
from balances_pipeline.sources.clients import open_client
from balances_pipeline.storage.layout import Layout


def sync_practice(
    practice: Practice,
    layout: Layout,
    *,
    open_source: ClientFactory = open_client,
    as_of: date | None = None,
    dagster_run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> SyncOutcome:
    """Both steps, one after the other: extract, then transform and publish."""
    clock = time.monotonic()
    extract_practice(practice, layout, open_source, as_of=as_of, dagster_run_id=dagster_run_id,
                     progress=progress)
    outcome = publish_practice(practice, layout, dagster_run_id=dagster_run_id)
    outcome.duration_seconds = time.monotonic() - clock
    return outcome
