"""The collapse guard's arithmetic and its practices-file key (no server, no sync)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from balances_pipeline.config import Practice
from balances_pipeline.pipeline.collapse_guard import collapse_message, is_collapse


def practice(**extra) -> Practice:
    return Practice.model_validate({
        "id": "x_dental", "name": "X", "timezone": "UTC",
        "source": {"type": "opendental", "base_url": "http://127.0.0.1:1/api/v1",
                   "developer_key_env": "D", "customer_key_env": "C"},
        **extra,
    })


@pytest.mark.parametrize(("accounts", "previous", "limit", "collapsed"), [
    (0, 400, 0.5, True),      # zero is always a collapse...
    (0, 400, 1.0, True),      # ...even where any share of drop is allowed
    (0, None, 0.5, False),    # a first sync is never a drop
    (0, 0, 0.5, False),       # nothing to drop from
    (200, 400, 0.5, False),   # exactly the share: allowed
    (199, 400, 0.5, True),    # more than the share
    (500, 400, 0.0, False),   # growth is never a drop
    (399, 400, 0.0, True),    # a share of 0: any drop needs a person
    (90, 100, 0.1, False),    # exact decimal comparison: 10% is not more than 0.1
    (89, 100, 0.1, True),
])
def test_what_collapses(accounts, previous, limit, collapsed) -> None:
    assert is_collapse(accounts, previous, limit) is collapsed


def test_the_message_names_the_drop_and_the_way_out() -> None:
    assert collapse_message(practice(), 0, 400) == (
        "practice x_dental: 0 accounts, previous sync had 400 (a drop of 100%, more than"
        " max_account_drop_fraction 50%); if this is genuine, run `balances sync accept-drop"
        " --practice x_dental --reason ... --actor ...` and sync again"
    )
    assert "(a drop of 62.5%, more than max_account_drop_fraction 25%)" in collapse_message(
        practice(max_account_drop_fraction=0.25), 150, 400
    )


def test_the_key_defaults_to_half_and_is_a_share() -> None:
    assert practice().max_account_drop_fraction == 0.5
    assert practice(max_account_drop_fraction=0).max_account_drop_fraction == 0
    for bad in (-0.1, 1.5, "lots"):
        with pytest.raises(ValidationError, match="max_account_drop_fraction"):
            practice(max_account_drop_fraction=bad)
