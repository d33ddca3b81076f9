"""Open Dental field values: JSON bodies decoded exactly, integers, money and timestamps.

Money never passes through a binary float: bodies are decoded with `parse_float=Decimal`,
and amounts must be finite, below 10^9 in magnitude and have at most two decimal places
(anything finer is rejected, not rounded). Integers must fit a signed 64-bit integer
(the staging tables' BIGINT). Problems name the issue only, never a value.

One bad value is one rejected row, never a failed page: decoding never raises on a
number literal, however long. A literal no field could accept (an integer of more than
19 digits, which Python's `int()` refuses beyond 4300 digits; a decimal whose exponent no
`Decimal` context holds) is kept as its text in an `UnusableNumber`, which every field
reader rejects and `dump_raw` writes back as it came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

MONEY_LIMIT = Decimal(10) ** 9
MONEY_DIGITS = 9  # whole digits below MONEY_LIMIT
CENT = Decimal("0.01")
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT64_DIGITS = len(str(INT64_MAX))  # 19
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# Cents of an amount below MONEY_LIMIT fit in 11 digits: quantizing with this context is
# exact, whatever the thread's own decimal context says (its precision, its traps).
_CENTS_CONTEXT = Context(
    prec=MONEY_DIGITS + 4, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation]
)


@dataclass(frozen=True, slots=True)
class UnusableNumber:
    """A JSON number literal no field accepts, kept as the text the source sent."""

    text: str

    def __repr__(self) -> str:  # never the value: it may be a row's content
        return f"UnusableNumber({len(self.text)} characters)"


def _json_int(text: str) -> int | UnusableNumber:
    # JSON integers have no leading zeros: more than 19 digits is beyond any BIGINT.
    if len(text) - text.startswith("-") > INT64_DIGITS:
        return UnusableNumber(text)
    return int(text)


def _json_decimal(text: str) -> Decimal | UnusableNumber:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):  # an exponent beyond any context
        return UnusableNumber(text)


def decode_json_list(body: bytes) -> list[Any] | None:
    """The body as a JSON list (numbers with a fraction as `Decimal`), or None if it is not.

    Never raises on a number literal: see `UnusableNumber`.
    """
    try:
        payload = json.loads(
            body, parse_int=_json_int, parse_float=_json_decimal, parse_constant=Decimal
        )
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, list) else None


def dump_raw(row: dict[str, Any], fields: Iterable[str]) -> str:
    """JSON of only the fields the pipeline reads, as received (numbers stay numbers)."""
    parts = [f"{json.dumps(name)}: {_dump_value(row[name])}" for name in fields if name in row]
    return "{" + ", ".join(parts) + "}"


def _dump_value(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, UnusableNumber):
        return value.text
    if isinstance(value, list):
        return "[" + ", ".join(_dump_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return dump_raw(value, value.keys())
    return json.dumps(value)


def parse_integer(value: Any) -> tuple[int | None, str | None]:
    """(a signed 64-bit integer, None) or (None, one-line problem); a JSON integer or its
    text ("-42", leading zeros allowed)."""
    if isinstance(value, UnusableNumber):
        return None, "integer out of range"
    if isinstance(value, bool):
        return None, "not an integer"
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        digits = value.lstrip("-").lstrip("0") or "0"
        if len(digits) > INT64_DIGITS:  # and before int(), which refuses 4300 digits
            return None, "integer out of range"
        value = -int(digits) if value.startswith("-") else int(digits)
    if not isinstance(value, int):
        return None, "not an integer"
    if not INT64_MIN <= value <= INT64_MAX:
        return None, "integer out of range"
    return value, None


def parse_money(value: Any) -> tuple[Decimal | None, str | None]:
    """(amount quantized to cents, None) or (None, one-line problem).

    Exact whatever the size of the value: the range is checked on the exponent before any
    arithmetic, and quantizing uses its own context, not the thread's.
    """
    if isinstance(value, UnusableNumber):
        return None, "amount out of range"
    if isinstance(value, bool):
        return None, "not a decimal amount"
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # Only reachable when a caller decoded JSON itself; repr is the shortest exact text.
        amount = Decimal(repr(value))
    elif isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        amount = Decimal(value)
    else:
        return None, "not a decimal amount"
    if not amount.is_finite():
        return None, "not a finite amount"
    if not amount.is_zero() and amount.adjusted() >= MONEY_DIGITS:  # |amount| >= 10^9
        return None, "amount out of range"
    try:
        cents = amount.quantize(CENT, context=_CENTS_CONTEXT)
    except InvalidOperation:
        return None, "amount out of range"
    if cents != amount:
        return None, "more than 2 decimal places"
    return cents, None


def parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    for pattern in TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    return None
