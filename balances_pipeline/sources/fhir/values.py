"""FHIR JSON values: bodies decoded exactly, money, instants, ids and references.

Money never passes through a binary float: bodies are decoded with `parse_float=Decimal`.
An amount must be finite, have at most two decimal places (finer is rejected, never
rounded) and fit `DECIMAL(14,2)` (below 10^12 in magnitude). Problems name the issue
only, never a value.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

MONEY_DIGITS = 12  # DECIMAL(14,2): 12 whole digits
MONEY_LIMIT = Decimal(10) ** MONEY_DIGITS
CENT = Decimal("0.01")
_CENTS_CONTEXT = Context(prec=MONEY_DIGITS + 4, rounding=ROUND_HALF_EVEN,
                         traps=[InvalidOperation])
# FHIR's `id` datatype.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class UnusableNumber:
    """A JSON number literal no field accepts (an exponent beyond any context, NaN)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:  # never the value
        return f"UnusableNumber({len(self.text)} characters)"


def _decimal(text: str) -> Decimal | UnusableNumber:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return UnusableNumber(text)


def _integer(text: str) -> int | UnusableNumber:
    if len(text) > 40:  # beyond any amount; int() of thousands of digits is refused
        return UnusableNumber(text)
    return int(text)


def decode_json(data: bytes | str) -> Any:
    """JSON with numbers as `int`/`Decimal` (NaN and Infinity kept unusable); raises
    ValueError on text that is not JSON."""
    try:
        return json.loads(data, parse_float=_decimal, parse_int=_integer,
                          parse_constant=UnusableNumber)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_money(value: Any) -> tuple[Decimal | None, str | None]:
    """(amount in cents, None) or (None, one-line problem)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        if isinstance(value, UnusableNumber):
            return None, "not a finite amount"
        return None, "not a decimal number"
    amount = Decimal(value)
    if not amount.is_finite():
        return None, "not a finite amount"
    if not amount.is_zero() and amount.adjusted() >= MONEY_DIGITS:
        return None, "amount out of range for DECIMAL(14,2)"
    try:
        cents = amount.quantize(CENT, context=_CENTS_CONTEXT)
    except InvalidOperation:
        return None, "amount out of range for DECIMAL(14,2)"
    if cents != amount:
        return None, "more than 2 decimal places"
    return cents, None


def in_money_range(amount: Decimal) -> bool:
    return abs(amount) < MONEY_LIMIT


def format_instant(moment: datetime) -> str:
    """A naive UTC datetime as a FHIR instant, floored to the second (for `ge`)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat() + "Z"


def parse_instant(value: Any) -> datetime | None:
    """A FHIR instant/dateTime with a zone as naive UTC, or None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None)


def dump_raw(value: Any) -> str:
    """JSON of a small structure of the fields read, numbers written as received."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, UnusableNumber):
        return json.dumps(value.text)
    if isinstance(value, dict):
        items = (f"{json.dumps(str(key))}: {dump_raw(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dump_raw(item) for item in value) + "]"
    return json.dumps(value)


def reference_key(reference: Any) -> tuple[str, str] | None:
    """("Patient", "123") from "Patient/123", an absolute URL or one with `_history`."""
    if not isinstance(reference, str) or not reference:
        return None
    parts = [part for part in reference.split("?")[0].split("/") if part]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    return parts[-2], parts[-1]
