"""The simulator's loopback control paths (`/_sim/...`): faults, clock, ledger rows, tokens.

`balances simulator advance|row` and tests out of process use them; a real server has no
such thing, so they answer on loopback only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from balances_pipeline.simulator.faults import Faults
from balances_pipeline.simulator.rest import ApiError

if TYPE_CHECKING:
    from balances_pipeline.simulator.server import SimulatorServer


class Control:
    """`/_sim/faults/<id>`, `/_sim/clock/<id>`, `/_sim/rows/<id>/<table>[/<key>]`,
    `DELETE /_sim/fhir-tokens/<id>` (expire the practice's issued FHIR access tokens)."""

    def __init__(self, simulator: SimulatorServer) -> None:
        self.simulator = simulator

    def handle(self, method: str, parts: list[str], payload: Any) -> tuple[int, Any]:
        kind, args = (parts[0], parts[1:]) if parts else ("", [])
        if kind == "faults" and len(args) == 1:
            return self.faults(method, args[0], payload)
        if kind == "clock" and len(args) == 1:
            return self.clock(method, args[0], payload)
        if kind == "rows" and len(args) in (2, 3):
            return self.rows(method, args, payload)
        if kind == "fhir-tokens" and len(args) == 1 and method == "DELETE":
            return 200, {"expired": self.simulator.expire_fhir_tokens(args[0])}
        raise ApiError(404, f"unknown control path: /_sim/{'/'.join(parts)}")

    def faults(self, method: str, practice_id: str, payload: Any) -> tuple[int, Any]:
        runtime = self.simulator.runtime(practice_id)
        if method == "POST":
            runtime.faults.set(Faults.from_json(payload))
        elif method == "DELETE":
            runtime.faults.clear()
        elif method != "GET":
            raise ApiError(405, f"method {method} not allowed")
        return 200, runtime.faults.snapshot().to_json()

    def clock(self, method: str, practice_id: str, payload: Any) -> tuple[int, Any]:
        runtime = self.simulator.runtime(practice_id)
        if method == "POST":
            days = payload.get("advance_days", 0) if isinstance(payload, dict) else None
            if isinstance(days, bool) or not isinstance(days, int | float | Decimal):
                raise ValueError("advance_days must be a number")
            runtime.advance(float(days))
        elif method != "GET":
            raise ApiError(405, f"method {method} not allowed")
        return 200, {"now": runtime.now().strftime("%Y-%m-%d %H:%M:%S")}

    def rows(self, method: str, args: list[str], payload: Any) -> tuple[int, Any]:
        ledger = self.simulator.ledger(args[0])
        table = args[1]
        if len(args) == 2 and method == "POST":
            if not isinstance(payload, dict):
                raise ValueError("the row must be a JSON object")
            return 201, ledger.add_row(table, payload)
        if len(args) == 3:
            key = int(args[2])
            if method == "GET":
                return 200, ledger.table(table).get(key)
            if method == "PATCH" and isinstance(payload, dict):
                return 200, ledger.edit_row(table, key, **payload)
            if method == "DELETE":
                return 200, ledger.delete_row(table, key)
        raise ApiError(405, f"method {method} not allowed here")


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")
