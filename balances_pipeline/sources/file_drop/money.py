"""Money cells of an aging export, parsed exactly.

Accepted (spaces and tabs around the cell are ignored):

- plain decimals: `0`, `12`, `1234.5`, `1234.56`, `-12.00`;
- thousands separators in groups of three: `1,234.56`, `12,345,678`;
- a dollar sign, before or after a minus: `$1,234.56`, `-$12.00`, `$-12.00`;
- accounting negatives in parentheses: `(12.00)`, `($1,234.56)`;
- an empty cell: no amount (the caller decides what that means for its column).

Anything else is refused with a one-line problem that never repeats the value: a comma
not grouping thousands (`12,34`: a decimal comma, or a typo), three or more decimals
(`1.234` may be a European thousands separator), exponents (`1e5`), `+`, other currency
signs, inner spaces, non-ASCII digits (`١٢`, `１２`), `NaN`, a trailing minus (`12-`).
Amounts must stay below 10^9 in magnitude, as every amount of this pipeline
(`opendental/values.py`); the warehouse column is DECIMAL(14,2).
"""

from __future__ import annotations

import re
from decimal import Decimal

from balances_pipeline.sources.opendental.values import parse_money

# ASCII only ([0-9], never \d): Decimal would read other scripts' digits.
_NUMBER = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]{1,2})?"
_MONEY = re.compile(
    rf"(?P<minus>-)?(?P<dollar>\$)?(?P<minus2>-)?(?P<number>{_NUMBER})"
)
_PARENTHESES = re.compile(rf"\(\$?(?P<number>{_NUMBER})\)")
_SURROUNDING = " \t"


def parse_money_cell(cell: str) -> tuple[Decimal | None, str | None]:
    """(amount in cents, None), (None, None) for an empty cell, or (None, problem)."""
    text = cell.strip(_SURROUNDING)
    if not text:
        return None, None
    negative = False
    match = _PARENTHESES.fullmatch(text)
    if match is not None:
        negative = True
    else:
        match = _MONEY.fullmatch(text)
        if match is None:
            return None, _problem(text)
        if match["minus"] and match["minus2"]:
            return None, "not an amount (two minus signs)"
        negative = bool(match["minus"] or match["minus2"])
    digits = match["number"].replace(",", "")
    amount, problem = parse_money(f"-{digits}" if negative else digits)
    if amount is None:
        return None, problem
    return amount + 0, None  # -0.00 is 0.00


def _problem(text: str) -> str:
    """Why a cell is not an amount, without repeating it."""
    if not text.isascii():
        return "not an amount (non-ASCII characters)"
    if re.search(r"\.[0-9]{3,}$", text):
        return "more than 2 decimal places"
    if "," in text:
        return "not an amount (a comma that does not separate thousands)"
    return "not an amount"
