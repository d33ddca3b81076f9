"""Switchable fault injection for one simulated practice."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MALFORMED_VALUE = "12.3.4"
MALFORMED_FIELD = {
    "reports/Aging": "Bal_0_30",
    "procedurelogs": "ProcFee",
    "claimprocs": "InsPayAmt",
    "paysplits": "SplitAmt",
    "adjustments": "AdjAmt",
}
MISSING_FIELD_ROWS_FIELD = {
    "reports/Aging": "BalTotal",
    "patients": "Guarantor",
    "patients/Simple": "Guarantor",
    "procedurelogs": "ProcFee",
    "claimprocs": "InsPayAmt",
    "paysplits": "SplitAmt",
    "adjustments": "AdjAmt",
}


@dataclass
class Faults:
    """Faults of one practice. Counters (`*_next`) are used up one request at a time.

    Per request, at most one of drop / 429 / 503 / truncated applies, in that order.
    `malformed_rows`, `missing_field_rows`, `missing_field` and `duplicate_rows` alter the
    data of list endpoints and stay on until cleared.
    """

    rate_limit_next: int = 0
    retry_after_seconds: int = 1
    server_error_next: int = 0
    slow_seconds: float = 0.0
    drop_connection_next: int = 0
    truncated_body_next: int = 0
    malformed_rows: int = 0
    missing_field: str | None = None
    missing_field_rows: int = 0
    duplicate_rows: bool = False

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        if not isinstance(body, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in body.items():
            values[name] = _check(name, value, cls.__dataclass_fields__[name].default)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, value: Any, default: Any) -> Any:
    if name == "missing_field":
        if value is not None and not isinstance(value, str):
            raise ValueError("missing_field must be a field name or null")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return float(value) if isinstance(default, float) else int(value)


class FaultState:
    """The live faults of a practice, thread-safe; counters decrement as requests use them."""

    def __init__(self) -> None:
        self._faults = Faults()
        self._lock = threading.Lock()

    def set(self, faults: Faults) -> None:
        with self._lock:
            self._faults = replace(faults)

    def clear(self) -> None:
        self.set(Faults())

    def snapshot(self) -> Faults:
        with self._lock:
            return replace(self._faults)

    def take_transport_fault(self) -> str | None:
        """The transport fault for this request ("drop", "rate_limit", ...), used up."""
        with self._lock:
            for name, counter in (
                ("drop", "drop_connection_next"),
                ("rate_limit", "rate_limit_next"),
                ("server_error", "server_error_next"),
                ("truncate", "truncated_body_next"),
            ):
                remaining = getattr(self._faults, counter)
                if remaining > 0:
                    setattr(self._faults, counter, remaining - 1)
                    return name
            return None


def spread_indices(count: int, total: int) -> set[int]:
    """`count` row positions spread evenly over `total` rows (deterministic)."""
    if count <= 0 or total <= 0:
        return set()
    if count >= total:
        return set(range(total))
    return {(2 * i + 1) * total // (2 * count) for i in range(count)}


def corrupt_page(
    endpoint: str, rows: list[dict[str, Any]], start: int, total: int, faults: Faults
) -> list[dict[str, Any]]:
    """Apply the data faults to a page whose first row is row `start` of `total`."""
    malformed = spread_indices(faults.malformed_rows, total)
    missing = spread_indices(faults.missing_field_rows, total)
    if not (malformed or missing or faults.missing_field):
        return rows
    malformed_field = MALFORMED_FIELD.get(endpoint)
    missing_field = MISSING_FIELD_ROWS_FIELD.get(endpoint)
    for i, row in enumerate(rows, start=start):
        if i in malformed and malformed_field:
            row[malformed_field] = MALFORMED_VALUE
        if i in missing and missing_field:
            row.pop(missing_field, None)
        if faults.missing_field:
            row.pop(faults.missing_field, None)
    return rows
