"""Ledger mode through `PUT /queries/ShortQuery`: the SQL sent, and its rows made REST-shaped.

The SQL is fixed text kept as files in `queries/` (reviewed like code). Only two values
are put into it, both made here: `{since}`, a timestamp formatted by the connector
(`yyyy-MM-dd HH:mm:ss`), and `{clinic}`, a validated integer (-1: the whole database).
No column of PHI is selected (no SSN, Birthdate, address, phone, e-mail); names only of
guarantors.

ShortQuery answers database values, every one as text: enums as Open Dental's integers,
money as a double's shortest text (`"130"`, `"12.5"`), dates and timestamps as
`yyyy-MM-ddTHH:mm:ss`. `to_rest_row` turns a row into the REST endpoint's shape (enum
names as staging and the aging SQL spell them, dates `yyyy-MM-dd`), so one validator
(`rows.py`) reads both paths, money exactly.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from balances_pipeline.sources.opendental.rows import (
    ADJUSTMENTS_ENDPOINT,
    CLAIMPROCS_ENDPOINT,
    PATIENTS_ENDPOINT,
    PAYSPLITS_ENDPOINT,
    PROCEDURES_ENDPOINT,
)

QUERIES_DIR = Path(__file__).parent / "queries"
SHORT_QUERY_ENDPOINT = "/queries/ShortQuery"
SHORT_QUERY_PAGE_ROWS = 100  # ShortQuery pages hold at most 100 rows; Limit is not taken
EPOCH = datetime(1, 1, 1)  # `>= 0001-01-01 00:00:00`: every row (a full refresh)

# The table each ledger endpoint's rows come from.
TABLES: dict[str, str] = {
    PATIENTS_ENDPOINT: "patient",
    PROCEDURES_ENDPOINT: "procedurelog",
    CLAIMPROCS_ENDPOINT: "claimproc",
    PAYSPLITS_ENDPOINT: "paysplit",
    ADJUSTMENTS_ENDPOINT: "adjustment",
}

# Open Dental's enum numbers -> the REST names that staging and the aging SQL use.
PROC_STATUS = {1: "TP", 2: "C", 3: "EC", 4: "EO", 5: "R", 6: "D", 7: "Cn", 8: "TPi"}
CLAIMPROC_STATUS = {
    0: "NotReceived", 1: "Received", 2: "Preauth", 3: "Adjustment", 4: "Supplemental",
    5: "CapClaim", 6: "Estimate", 7: "CapComplete", 8: "CapEstimate", 9: "InsHist",
}
PAT_STATUS = {
    0: "Patient", 1: "NonPatient", 2: "Inactive", 3: "Archived", 4: "Deleted",
    5: "Deceased", 6: "Prospective",
}
_ENUMS: dict[str, tuple[str, dict[int, str]]] = {
    PATIENTS_ENDPOINT: ("PatStatus", PAT_STATUS),
    PROCEDURES_ENDPOINT: ("ProcStatus", PROC_STATUS),
    CLAIMPROCS_ENDPOINT: ("Status", CLAIMPROC_STATUS),
}
_DATES: dict[str, tuple[str, ...]] = {
    PROCEDURES_ENDPOINT: ("ProcDate",),
    CLAIMPROCS_ENDPOINT: ("DateCP",),
    PAYSPLITS_ENDPOINT: ("DatePay",),
    ADJUSTMENTS_ENDPOINT: ("AdjDate",),
}
# Columns no query may select (checked on every SQL text, tests check them too).
PHI_COLUMNS = ("SSN", "Birthdate", "Address", "Address2", "City", "State", "Zip",
               "HmPhone", "WkPhone", "WirelessPhone", "Email")


@cache
def _template(name: str) -> str:
    text = (QUERIES_DIR / f"{name}.sql").read_text(encoding="utf-8")
    # Comments stay in the files: the command sent starts with SELECT.
    return "\n".join(line for line in text.splitlines()
                     if not line.lstrip().startswith("--")).strip()


def format_timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def ledger_sql(endpoint: str, since: datetime | None, clinic_num: int | None) -> str:
    """The SQL of one ledger table: rows changed at or after `since` (all without), of
    the clinic's guarantors' families (the whole database without)."""
    if clinic_num is not None and (isinstance(clinic_num, bool) or not isinstance(clinic_num, int)
                                   or clinic_num < 0):
        raise ValueError("clinic_num must be a non-negative integer")
    if since is not None and not isinstance(since, datetime):
        raise ValueError("since must be a datetime")
    return _template(TABLES[endpoint]).format(
        since=format_timestamp(since or EPOCH),
        clinic=-1 if clinic_num is None else int(clinic_num),
    )


def count_sql(endpoint: str, clinic_num: int | None) -> str:
    """How many rows a full read of one table returns (`balances source check`)."""
    # The project's own SQL text, values formatted by ledger_sql.
    return f"SELECT COUNT(*) AS n FROM ({ledger_sql(endpoint, None, clinic_num)}) AS t"  # noqa: S608


def clock_sql() -> str:
    return _template("server_clock")


def _date_text(value: Any) -> Any:
    """`yyyy-MM-ddT00:00:00` (or `yyyy-MM-dd 00:00:00`) -> `yyyy-MM-dd`; anything else as
    it came (the validator rejects it)."""
    if isinstance(value, str) and len(value) == 19 and value[10] in "T " and \
            value.endswith("00:00:00"):
        return value[:10]
    return value


def _enum_name(value: Any, names: dict[int, str]) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
        return names.get(number, f"unknown {number}")
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, f"unknown {value}")
    return value


def to_rest_row(endpoint: str, row: Any) -> Any:
    """A ShortQuery row in the REST endpoint's shape (see the module doc)."""
    if not isinstance(row, dict):
        return row
    shaped = dict(row)
    if endpoint in _ENUMS:
        name, names = _ENUMS[endpoint]
        if name in shaped:
            shaped[name] = _enum_name(shaped[name], names)
    for name in _DATES.get(endpoint, ()):
        if name in shaped:
            shaped[name] = _date_text(shaped[name])
    return shaped
