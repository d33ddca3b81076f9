"""Staff blocks: exclude an account from every collection rule (append-only history).

Like overrides, a block is validated first, recorded under the practice's publish lock,
and the practice's collection targets are re-evaluated before the command returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from balances_pipeline.config import PracticesFile
from balances_pipeline.pipeline.collections import refresh_collection_targets
from balances_pipeline.staff.overrides import OverrideError, staff_change, synced_portions
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.override_store import now
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.working_db import WorkingDatabase


class BlockError(OverrideError):
    """Bad block input; one line; nothing changed."""


@dataclass(frozen=True)
class BlockResult:
    practice_id: str
    account_id: str
    blocked: bool
    warning: str | None


def set_block(
    layout: Layout, practices: PracticesFile, practice_id: str, account_id: str, blocked: bool,
    reason: str | None, actor: str | None,
) -> BlockResult:
    account, reason_text, actor_text = staff_change(
        practices, practice_id, account_id, reason, actor
    )
    working_db = WorkingDatabase(layout)
    practice = practices.practice(practice_id)
    with practice_lock(layout, practice_id):
        if account not in synced_portions(layout, practice_id):
            raise BlockError(
                f"unknown account {account!r} in practice {practice_id} (not in its latest sync)"
            )
        with working_db.transaction() as con:
            con.execute(
                "INSERT INTO account_blocks VALUES (?, ?, ?, ?, ?, ?,"
                " nextval('account_block_sequence'))",
                [practice_id, account, blocked, reason_text, actor_text, now()],
            )
        warning = refresh_collection_targets(practice, practices, layout)
    return BlockResult(practice_id, account, blocked, warning)
