"""Cron ticks exactly as Dagster's daemon computes them.

Dagster 1.13 has no public API to iterate a cron schedule's ticks in a time zone or to
validate a cron string; its schedules use `dagster._utils.schedules`. This module is the one
place that imports it, so schedule guards and freshness agree with the daemon's ticks
(DST included) and a change in Dagster's private module is fixed here only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string


def is_valid_cron(expression: str) -> bool:
    return len(expression.split()) == 5 and is_valid_cron_string(expression)


def ticks_from(start: datetime, expression: str, timezone: str) -> Iterator[datetime]:
    """The schedule's ticks at or after `start`, time-zone aware, in order."""
    return cron_string_iterator(start.timestamp(), expression, timezone)
