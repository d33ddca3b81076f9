"""Staff blocks: exclude an account from every collection rule (append-only history).

Like overrides, a block is validated first, recorded under the practice's publish lock
(with the practice marked as pending republishing, in the same transaction), and the
practice's collection targets are re-evaluated before the command returns; the result
says whether they were (`Republished`).
"""

from __future__ import annotations

from dataclasses import dataclass

from balances_pipeline.config import PracticesFile
from balances_pipeline.pipeline.recompute import complete_pending_republishes, republish_practice
from balances_pipeline.schema import ACCOUNT_BLOCKS
from balances_pipeline.staff.overrides import (
    OverrideError,
    Republished,
    republished,
    staff_change,
    synced_portions,
)
from balances_pipeline.storage import override_store
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.sequences import next_sequence
from balances_pipeline.storage.working_db import WorkingDatabase

INSERT_BLOCK = (
    "INSERT INTO account_blocks (practice_id, account_id, blocked, reason, actor, created_at,"
    " sequence) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class BlockError(OverrideError):
    """Bad block input; one line; nothing changed."""


@dataclass(frozen=True)
class BlockResult:
    practice_id: str
    account_id: str
    blocked: bool
    warning: str | None  # why the collection targets were not re-evaluated
    sequence: int  # the block's row in account_blocks (its id)
    republished: Republished


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
        complete_pending_republishes(layout, practices, [practice_id])
        if account not in synced_portions(layout, practice_id):
            raise BlockError(
                f"unknown account {account!r} in practice {practice_id} (not in its latest sync)"
            )
        at = override_store.now()
        with working_db.transaction() as con:
            sequence = next_sequence(con, ACCOUNT_BLOCKS.sequence)
            con.execute(
                INSERT_BLOCK,
                [practice_id, account, blocked, reason_text, actor_text, at, sequence],
            )
            override_store.mark_pending(con, [practice_id], at)
        # A block changes no balance: re-evaluating the targets republishes it.
        warning = republish_practice(practice, practices, layout, recompute=False)
    return BlockResult(practice_id, account, blocked, warning, sequence,
                       republished(practice_id, (), warning))
