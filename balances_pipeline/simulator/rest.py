"""The simulator's REST list endpoints: which filters each has, what it refuses, its rows.

As the real Open Dental API v1 (docs/sources.md, "What the simulator serves and refuses"):

| endpoint | filters | refused |
| --- | --- | --- |
| `/patients` | (none served) | `DateTStamp` (400: use `/patients/Simple`) |
| `/patients/Simple` | `DateTStamp` (changed on or after) | |
| `/procedurelogs` | `PatNum`, `ClinicNum`, `DateTStamp` (ignored with `PatNum`) | |
| `/claimprocs` | `ProcNum`, `ClaimNum`, `PatNum`, `ClaimPaymentNum` | |
| `/paysplits` | `PatNum`, `PayNum`, `ProcNum` | |
| `/adjustments` | `PatNum` (required), `AdjType`, `ProcNum` | no `PatNum`: 400 |

Any other parameter is ignored, as Open Dental ignores parameters a method does not take:
`SecDateTEdit` on `/claimprocs` reads the whole table. Rows come in primary-key order, with
the field names and types of the real API: `ProcFee` and `AptNum` as text on
`/procedurelogs`, enums by name (`ProcStatus` "C", `Status` "Received", `PatStatus`
"Patient"), money elsewhere as JSON numbers, `serverDateTime` (the server clock when the
request began) on `/patients/Simple` and `/procedurelogs` rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from balances_pipeline.simulator.ledger import CENT, STAMP_FORMAT


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Shape = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class ListEndpoint:
    name: str
    table: str
    shape: Shape
    # parameter (lower case) -> (field, "eq" for an integer, "since" for a change stamp)
    filters: dict[str, tuple[str, str]] = field(default_factory=dict)
    required: dict[str, str] = field(default_factory=dict)  # parameter -> 400 message
    refused: dict[str, str] = field(default_factory=dict)  # parameter -> 400 message
    # parameter -> parameters it makes ignored (DateTStamp is "only useful without PatNum")
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _patient(row: dict[str, Any], server_time: str | None) -> dict[str, Any]:
    shaped = {
        "PatNum": row["PatNum"],
        "LName": row["LName"],
        "FName": row["FName"],
        "MiddleI": "",
        "Preferred": "",
        "PatStatus": row["PatStatus"],
        "Gender": row["Gender"],
        "Position": "Single",
        "Birthdate": row["Birthdate"],
        "SSN": row["SSN"],
        "Address": row["Address"],
        "Address2": "",
        "City": row["City"],
        "State": row["State"],
        "Zip": row["Zip"],
        "HmPhone": row["HmPhone"],
        "WkPhone": "",
        "WirelessPhone": row["WirelessPhone"],
        "Guarantor": row["Guarantor"],
        "Email": row["Email"],
        "PriProv": 1,
        "priProvAbbr": "DOC1",
        "BillingType": "Standard Account",
        "ClinicNum": row["ClinicNum"],
        "DateTStamp": row["DateTStamp"],
    }
    if server_time is not None:
        shaped["serverDateTime"] = server_time
    return shaped


def _patients(row: dict[str, Any], server_time: str) -> dict[str, Any]:
    return _patient(row, None)


def _procedure(row: dict[str, Any], server_time: str) -> dict[str, Any]:
    return {
        "ProcNum": row["ProcNum"],
        "PatNum": row["PatNum"],
        "AptNum": "0",
        "ProcDate": row["ProcDate"],
        "ProcFee": str(row["ProcFee"].quantize(CENT)),
        "ProcStatus": row["ProcStatus"],
        "ProvNum": 1,
        "PlannedAptNum": "0",
        "ClinicNum": row["ClinicNum"],
        "UnitQty": row["UnitQty"],
        "BaseUnits": row["BaseUnits"],
        "DateTStamp": row["DateTStamp"],
        "serverDateTime": server_time,
    }


def _claimproc(row: dict[str, Any], server_time: str) -> dict[str, Any]:
    return {
        "ClaimProcNum": row["ClaimProcNum"],
        "ProcNum": row["ProcNum"],
        "ClaimNum": row["ClaimNum"],
        "PatNum": row["PatNum"],
        "ProvNum": 1,
        "InsPayEst": row["InsPayEst"],
        "Status": row["Status"],
        "InsPayAmt": row["InsPayAmt"],
        "ClaimPaymentNum": row["ClaimPaymentNum"],
        "DateCP": row["DateCP"],
        "WriteOff": row["WriteOff"],
        "WriteOffEst": row["WriteOffEst"],
        "ClinicNum": row["ClinicNum"],
        "SecDateTEdit": row["SecDateTEdit"],
    }


def _paysplit(row: dict[str, Any], server_time: str) -> dict[str, Any]:
    return {
        "SplitNum": row["SplitNum"],
        "SplitAmt": row["SplitAmt"],
        "PatNum": row["PatNum"],
        "PayNum": row["PayNum"],
        "ProvNum": 1,
        "DatePay": row["DatePay"],
        "ProcNum": row["ProcNum"],
        "ClinicNum": row["ClinicNum"],
        "SecDateTEdit": row["SecDateTEdit"],
    }


def _adjustment(row: dict[str, Any], server_time: str) -> dict[str, Any]:
    return {
        "AdjNum": row["AdjNum"],
        "AdjDate": row["AdjDate"],
        "AdjAmt": row["AdjAmt"],
        "PatNum": row["PatNum"],
        "AdjType": row["AdjType"],
        "ProvNum": 1,
        "ProcNum": row["ProcNum"],
        "ClinicNum": row["ClinicNum"],
        "SecDateTEdit": row["SecDateTEdit"],
    }


def _eq(name: str) -> tuple[str, str]:
    return (name, "eq")


LIST_ENDPOINTS: dict[str, ListEndpoint] = {
    e.name.lower(): e
    for e in (
        ListEndpoint(
            "patients",
            "patients",
            _patients,
            refused={
                "datetstamp": "DateTStamp is not a parameter of Patients GET (multiple). "
                "Use Patients GET Simple (/patients/Simple) to get recent changes.",
            },
        ),
        ListEndpoint(
            "patients/Simple",
            "patients",
            _patient,
            filters={"datetstamp": ("DateTStamp", "since")},
        ),
        ListEndpoint(
            "procedurelogs",
            "procedurelogs",
            _procedure,
            filters={
                "patnum": _eq("PatNum"),
                "clinicnum": _eq("ClinicNum"),
                "datetstamp": ("DateTStamp", "since"),
            },
            overrides={"patnum": ("datetstamp",)},
        ),
        ListEndpoint(
            "claimprocs",
            "claimprocs",
            _claimproc,
            filters={
                "procnum": _eq("ProcNum"),
                "claimnum": _eq("ClaimNum"),
                "patnum": _eq("PatNum"),
                "claimpaymentnum": _eq("ClaimPaymentNum"),
            },
        ),
        ListEndpoint(
            "paysplits",
            "paysplits",
            _paysplit,
            filters={
                "patnum": _eq("PatNum"),
                "paynum": _eq("PayNum"),
                "procnum": _eq("ProcNum"),
            },
        ),
        ListEndpoint(
            "adjustments",
            "adjustments",
            _adjustment,
            filters={
                "patnum": _eq("PatNum"),
                "adjtype": _eq("AdjType"),
                "procnum": _eq("ProcNum"),
            },
            required={"patnum": "PatNum is required."},
        ),
    )
}


# --- request parameters (shared by the list endpoints and /reports/Aging) ---------------

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")


def int_param(
    params: dict[str, str],
    name: str,
    default: int | None,
    minimum: int,
    label: str | None = None,
) -> Any:
    raw = params.get(name)
    if raw is None:
        return default
    label = label or {"offset": "Offset", "limit": "Limit", "clinicnum": "ClinicNum"}.get(
        name, name
    )
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{label} is not a valid number.") from None
    if value < minimum:
        raise ApiError(400, f"{label} must be at least {minimum}.")
    return value


def as_of_param(params: dict[str, str]) -> date:
    raw = params.get("dateasof")
    if not raw:
        raise ApiError(400, "DateAsOf is required (yyyy-MM-dd).")
    try:
        if not DATE_RE.match(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"DateAsOf is not a yyyy-MM-dd date: {raw!r}") from None


def stamp_param(params: dict[str, str], name: str) -> str | None:
    raw = params.get(name.lower())
    if raw is None:
        return None
    raw = raw.strip()
    try:
        if not STAMP_RE.match(raw):
            raise ValueError
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name} is not a yyyy-MM-dd HH:mm:ss timestamp: {raw!r}") from None
    return moment.strftime(STAMP_FORMAT)


def list_filters(
    endpoint: ListEndpoint, params: dict[str, str]
) -> tuple[tuple[str, str, Any], ...]:
    """An endpoint's filters from the query string: refused and required parameters first,
    then each filter it has; any other parameter is ignored, as Open Dental ignores it."""
    for param, message in endpoint.refused.items():
        if param in params:
            raise ApiError(400, message)
    for param, message in endpoint.required.items():
        if not params.get(param, "").strip():
            raise ApiError(400, message)
    ignored = {i for p, names in endpoint.overrides.items() if p in params for i in names}
    filters: list[tuple[str, str, Any]] = []
    for param, (field_name, op) in endpoint.filters.items():
        if param not in params or param in ignored:
            continue
        if op == "since":
            filters.append((field_name, op, stamp_param(params, field_name)))
        else:
            filters.append((field_name, op, int_param(params, param, None, 0, field_name)))
    return tuple(filters)


def require_method(method: str, allowed: str) -> None:
    if method != allowed:
        raise ApiError(405, f"The method {method} is not allowed here (use {allowed}).")


def sql_command(body: bytes) -> Any:
    try:
        document = json.loads(body) if body.strip() else None
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(document, dict) or "SqlCommand" not in document:
        raise ApiError(400, "SqlCommand is required.")
    return document["SqlCommand"]
