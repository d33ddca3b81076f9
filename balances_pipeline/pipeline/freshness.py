"""How long a practice's synced data stays fresh, from its schedule (product.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

from balances_pipeline.config import Practice
from balances_pipeline.cron import ticks_from

DAILY_STALE_AFTER = timedelta(hours=26)
HOURLY_STALE_AFTER = timedelta(hours=2)
CRON_GRACE = timedelta(hours=1)
CRON_LOOKAHEAD = timedelta(days=7)


def longest_cron_gap(cron: str, timezone: str, start: datetime) -> timedelta:
    """The longest gap between two consecutive ticks in the week after `start`."""
    ticks = ticks_from(start, cron, timezone)
    previous = next(ticks)
    longest = timedelta(0)
    end = start + CRON_LOOKAHEAD
    while previous <= end:
        current = next(ticks)
        longest = max(longest, current - previous)
        previous = current
    return longest


def stale_after(practice: Practice, now: datetime) -> timedelta:
    schedule = practice.sync
    if schedule.frequency == "hourly":
        return HOURLY_STALE_AFTER
    if schedule.frequency == "cron":
        return longest_cron_gap(schedule.cron, practice.timezone, now) + CRON_GRACE
    return DAILY_STALE_AFTER


def fresh_until(practice: Practice, synced_at: datetime) -> datetime:
    return synced_at + stale_after(practice, synced_at)


def stale_practices(
    last_fresh_until: dict[str, datetime], practice_ids: list[str], now: datetime
) -> dict[str, datetime]:
    """Practices whose latest successful sync is past its `fresh_until`.

    A practice that never synced successfully has no expectation yet and is not listed:
    its first sync's failure is reported as a failed sync.
    """
    return {
        practice_id: until
        for practice_id, until in last_fresh_until.items()
        if practice_id in practice_ids and until < now
    }
