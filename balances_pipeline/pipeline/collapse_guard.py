"""The collapse guard: a sync whose account count collapses waits for a person.

A source can answer HTTP 200 with no rows (or far fewer than it has): published, that
would replace the practice's data and expire every override on the missing accounts. So
before a sync's overrides are reconciled and it is published (`publish_sync.py`), its
account count is compared with the previous successful sync's. It *collapses* when it is
zero, or smaller by more than the practice's `max_account_drop_fraction` (default 0.5);
the sync then fails with one line naming the drop, and the previous data stays published.
A practice's first sync is never a drop.

A genuine drop is accepted by a person, `balances sync accept-drop --practice P --reason
TEXT --actor NAME`, which records who, why and when in `drop_acceptances` (working
database). The practice's next sync that reaches this check uses every waiting acceptance
(once: it records itself and the counts in the rows), whether or not its count dropped, so
an acceptance never lingers to let a later, unexpected collapse through.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from balances_pipeline.config import Practice, PracticesFile
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.storage import sync_runs
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.sync_runs import DropAcceptance
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)

MAX_REASON = 500
MAX_ACTOR = 200


class AccountCountCollapsed(SourceError):
    """The sync's account count collapsed against the previous successful sync's: it is
    not published until a person accepts the drop (not retried: the source answered)."""


class DropAcceptanceError(ValueError):
    """Bad `accept-drop` input; one line naming what is wrong. Nothing was recorded."""


@dataclass(frozen=True)
class CountCheck:
    """What the guard found for one sync."""

    accounts: int
    previous_accounts: int | None  # None: the practice's first sync
    collapsed: bool
    used: tuple[DropAcceptance, ...] = ()  # acceptances this sync used up

    @property
    def accepted(self) -> bool:
        """The count collapsed and a person had accepted it."""
        return self.collapsed and bool(self.used)


def _percent(fraction: Decimal) -> str:
    """50%, 62.5%, 100%: one decimal where it is not a whole percent."""
    text = f"{fraction * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def drop_fraction(accounts: int, previous_accounts: int) -> Decimal:
    return Decimal(previous_accounts - accounts) / Decimal(previous_accounts)


def is_collapse(accounts: int, previous_accounts: int | None, max_drop: float) -> bool:
    """Zero accounts, or fewer by more than `max_drop` of the previous count (exact, no
    binary float in the comparison). No previous count (a first sync): never."""
    if not previous_accounts:
        return False
    if accounts == 0:
        return True
    return Decimal(previous_accounts - accounts) > Decimal(str(max_drop)) * previous_accounts


def collapse_message(practice: Practice, accounts: int, previous_accounts: int) -> str:
    drop = drop_fraction(accounts, previous_accounts)
    limit = Decimal(str(practice.max_account_drop_fraction))
    why = (
        f"more than max_account_drop_fraction {_percent(limit)}" if drop > limit
        else "a sync with no accounts always needs confirming"
    )
    return (
        f"practice {practice.id}: {accounts} accounts, previous sync had {previous_accounts}"
        f" (a drop of {_percent(drop)}, {why}); if this is genuine, run"
        f" `balances sync accept-drop --practice {practice.id} --reason ... --actor ...`"
        " and sync again"
    )


def check_account_count(
    working_db: WorkingDatabase, practice: Practice, sync_id: str, accounts: int
) -> CountCheck:
    """Compare the sync's account count with the previous successful sync's and use up the
    practice's waiting acceptances. Raises `AccountCountCollapsed` (nothing recorded) when
    the count collapsed and no acceptance was waiting.

    Call with the practice's publish lock held, before its overrides are reconciled.
    """
    with working_db.transaction() as con:
        previous = sync_runs.latest_published(con, practice.id)
        previous_accounts = previous.counts.accounts if previous is not None else None
        collapsed = is_collapse(accounts, previous_accounts,
                                practice.max_account_drop_fraction)
        used = sync_runs.use_drop_acceptances(
            con, practice.id, sync_id=sync_id, used_at=datetime.now(UTC), accounts=accounts,
            previous_accounts=previous_accounts,
        )
        if collapsed and not used:
            # Leaving the transaction by this error rolls it back: nothing is changed.
            raise AccountCountCollapsed(
                collapse_message(practice, accounts, previous_accounts or 0)
            )
    check = CountCheck(accounts, previous_accounts, collapsed, tuple(used))
    if check.accepted:
        latest = used[-1]
        log.warning(
            "practice %s: %d accounts, previous sync had %d; publishing the drop accepted"
            " by %s (acceptance %s)", practice.id, accounts, previous_accounts, latest.actor,
            latest.acceptance_id,
        )
    elif used:
        log.info("practice %s: no drop in accounts; acceptance(s) %s used up", practice.id,
                 ", ".join(a.acceptance_id for a in used))
    return check


def _required_text(value: str | None, field: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise DropAcceptanceError(f"{field} is required")
    if len(text) > limit:
        raise DropAcceptanceError(f"{field} is longer than {limit} characters")
    if any(ord(ch) < 32 for ch in text):
        raise DropAcceptanceError(f"{field} contains control characters")
    return text


def accept_drop(
    layout: Layout, practices: PracticesFile, practice_id: str, reason: str | None,
    actor: str | None,
) -> DropAcceptance:
    """Record that the practice's next sync may publish a collapsed account count.
    Validates everything first (unknown practice, missing reason or actor): then nothing
    is recorded."""
    try:
        practices.practice(practice_id)
    except KeyError:
        raise DropAcceptanceError(f"unknown practice {practice_id!r}") from None
    acceptance = DropAcceptance(
        acceptance_id=f"acc_{uuid.uuid4().hex[:16]}", practice_id=practice_id,
        reason=_required_text(reason, "reason", MAX_REASON),
        actor=_required_text(actor, "actor", MAX_ACTOR), accepted_at=datetime.now(UTC),
    )
    with WorkingDatabase(layout).transaction() as con:
        sync_runs.record_drop_acceptance(con, acceptance)
    log.info("practice %s: drop accepted by %s (acceptance %s)", practice_id,
             acceptance.actor, acceptance.acceptance_id)
    return acceptance
