"""Open Dental field values: JSON bodies decoded exactly, integers, money and timestamps.

Money never passes through a binary float: bodies are decoded with `parse_float=Decimal`,
and amounts must be finite, below 10^9 in magnitude and have at most two decimal places
(anything finer is rejected, not rounded). Problems name the issue only, never a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

MONEY_LIMIT = Decimal(10) ** 9
CENT = Decimal("0.01")
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def decode_json_list(body: bytes) -> list[Any] | None:
    """The body as a JSON list (numbers with a fraction as `Decimal`), or None if it is not."""
    try:
        payload = json.loads(body, parse_float=Decimal, parse_constant=Decimal)
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
    if isinstance(value, list):
        return "[" + ", ".join(_dump_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return dump_raw(value, value.keys())
    return json.dumps(value)


def parse_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    return None


def parse_money(value: Any) -> tuple[Decimal | None, str | None]:
    """(amount quantized to cents, None) or (None, one-line problem)."""
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
    if abs(amount) >= MONEY_LIMIT:
        return None, "amount out of range"
    try:
        cents = amount.quantize(CENT)
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
