"""Set-based validation of Open Dental pages in DuckDB: the fast path beside `rows.py`.

A batch of pages is read by DuckDB (`from_json` over the bodies the server sent, each
field as text or as JSON, see `_READ_AS_TEXT`), and one SQL predicate per row says
whether the row is *plainly* valid: every value one the row-by-row reader (`rows.py`,
after `to_rest_row` on the ShortQuery path) accepts, and whose typed value is the same
here. Plainly valid pages are loaded as they are. Every other page (one doubtful row, a
key twice on the page) is read row by row by `rows.py`, whose rows, rejects and reasons
are the ones kept. The predicates are deliberately narrower than the row-by-row reader
(a leading zero, an exotic date form, an unknown enum number all send a page the slow
way), never wider: the result is the row-by-row reader's for any input, only its cost
differs.

Bodies DuckDB would read differently from Python never come here (`scan_json_list`):
DuckDB reads JSON numbers through a binary double and keeps the first of two equal keys
of an object (Python keeps the last). A body whose numbers all have at most 15 digits
and no exponent reads exactly through a double, and `scan_json_list` refuses any other,
any repeated key, escaped surrogates or NULs, and anything but a list of objects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from balances_pipeline.sources.opendental.rows import (
    ADJUSTMENTS_ENDPOINT,
    AGING_ENDPOINT,
    CLAIMPROCS_ENDPOINT,
    PATIENTS_ENDPOINT,
    PAYSPLITS_ENDPOINT,
    PROCEDURES_ENDPOINT,
)
from balances_pipeline.sources.opendental.shortquery import (
    CLAIMPROC_STATUS,
    PAT_STATUS,
    PROC_STATUS,
)
from balances_pipeline.sources.rows import (
    AdjustmentRow,
    AgingReportRow,
    ClaimProcRow,
    JsonPageSql,
    PatientRow,
    PaySplitRow,
    ProcedureRow,
)

# A number literal of 16 or more digits (or dots), or one with an exponent: through a
# double it may not read back as written. Found on the body with every digit and dot made
# a "0" (inside strings too: that only costs speed). Also escaped surrogates and NULs,
# which DuckDB and Python decode differently.
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789.", b"0000000000")
_LONG_NUMBER = b"0" * 16
_ODD_ESCAPE = re.compile(rb"\\u[dD][89abAB]|\\u0000")
_UNICODE_ESCAPE = re.compile(rb"\\u[0-9a-fA-F]{4}")  # inside strings only: never a number


def _doubtful(body: bytes) -> bool:
    if b"\\u" in body:
        if _ODD_ESCAPE.search(body):
            return True
        body = _UNICODE_ESCAPE.sub(b"", body)  # "No\u00e9" is no exponent
    digits = body.translate(_DIGITS_AS_ZEROS)
    return _LONG_NUMBER in digits or b"0e" in digits or b"0E" in digits


class _NotPlain(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> object:
    if len({name for name, _ in pairs}) != len(pairs):
        raise _NotPlain  # a key twice: Python keeps the last value, DuckDB the first
    return _OBJECT


_OBJECT = object()


def scan_json_list(body: bytes) -> int | None:
    """The number of rows, if the body is a JSON list of objects DuckDB reads exactly as
    Python does (see the module doc); None: read it row by row."""
    if _doubtful(body):
        return None
    try:
        rows = json.loads(body.decode("utf-8"), object_pairs_hook=_object)
    except (ValueError, RecursionError, _NotPlain):
        return None
    if type(rows) is not list or any(row is not _OBJECT for row in rows):
        return None
    return len(rows)


# Python's `str.strip()` removes exactly the characters `str.isspace()` names: these
# (a test compares them with every code point's `isspace()`).
SPACE_CHARACTERS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(char):X}}}" for char in SPACE_CHARACTERS) + "]"
_EMPTY_DATE = "DATE '0001-01-01'"


@dataclass(frozen=True)
class _Field:
    """One JSON field: the column it fills, how it is read, and whether it may be absent."""

    name: str
    column: str
    kind: str  # identifier | count | money | text | day | day_at_midnight | timestamp | enum
    enum: dict[int, str] | None = None


def _text(ref: str) -> str:
    return f"json_extract_string({ref}, '$')"


def _is(ref: str, *types: str) -> str:
    return f"json_type({ref}) IN ({', '.join(repr(t) for t in types)})"


_DATE_TEXT = "[0-9]{4}-[0-9]{2}-[0-9]{2}"


# Kinds whose every accepted value is a JSON number or string of a shape only text can
# have: read by `from_json` as VARCHAR (a number as its literal, a string unescaped),
# which costs one parse instead of a `json_type` and a `json_extract_string` per use.
# Booleans, lists and objects read as their JSON text, which no pattern below matches.
# Text and enums keep their JSON, since a number there must not pass for a string.
_READ_AS_TEXT = frozenset(("identifier", "count", "money", "day", "day_at_midnight",
                           "timestamp"))


def _structure_type(field: _Field) -> str:
    return "VARCHAR" if field.kind in _READ_AS_TEXT else "JSON"


def _plain(field: _Field) -> tuple[str, str]:
    """(value SQL, plainly-valid SQL) of one field, `raw."<name>"` being its VARCHAR
    (`_READ_AS_TEXT`) or its JSON."""
    ref = f'raw."{field.name}"'
    text = ref if field.kind in _READ_AS_TEXT else _text(ref)
    kind = field.kind
    if kind in ("identifier", "count"):
        digits = "[1-9][0-9]{0,14}" if kind == "identifier" else "0|[1-9][0-9]{0,14}"
        return f"TRY_CAST({text} AS BIGINT)", f"regexp_full_match({text}, '{digits}')"
    if kind == "money":
        return (f"TRY_CAST({text} AS DECIMAL(14,2))",
                f"regexp_full_match({text}, '-?[0-9]{{1,9}}([.][0-9]{{1,2}})?')")
    if kind == "text":
        return (text, f"{_is(ref, 'VARCHAR')} AND NOT regexp_matches({text},"
                      f" '^{_SPACE_CLASS}|{_SPACE_CLASS}$')")
    if kind in ("day", "day_at_midnight"):
        pattern = _DATE_TEXT + ("" if kind == "day" else "[T ]00:00:00")
        day = f"left({text}, 10)"
        return (f"TRY_CAST({day} AS DATE)",
                f"regexp_full_match({text}, '{pattern}')"
                f" AND {day} >= '0001-01-01' AND TRY_CAST({day} AS DATE) IS NOT NULL")
    if kind == "timestamp":  # optional; Open Dental's 0001-01-01 00:00:00 is "never"
        pattern = _DATE_TEXT + "[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        moment = f"TRY_CAST(replace({text}, 'T', ' ') AS TIMESTAMP)"
        return (f"CASE WHEN {text} IS NULL OR left({text}, 4) = '0001' THEN NULL"
                f" ELSE {moment} END",
                f"{text} IS NULL OR (regexp_full_match({text}, '{pattern}')"
                f" AND {text} >= '0001' AND {moment} IS NOT NULL)")
    if kind == "enum":  # ShortQuery's enum numbers, named as `to_rest_row` names them
        assert field.enum is not None
        cases = " ".join(f"WHEN '{number}' THEN '{name}'" for number, name in field.enum.items())
        return (f"CASE {text} {cases} END",
                f"{_is(ref, 'VARCHAR')} AND {text} IN "
                f"({', '.join(repr(str(number)) for number in field.enum)})")
    raise ValueError(f"unknown field kind {kind!r}")


def _page_sql(
    relation: str, key: str, fields: tuple[_Field, ...], rule: str | None = None,
    derived: tuple[tuple[str, str], ...] = (),
) -> JsonPageSql:
    structure = json.dumps({field.name: _structure_type(field) for field in fields})
    values: list[tuple[str, str]] = []
    checks: list[str] = []
    for field in fields:
        value, plain = _plain(field)
        values.append((field.column, value))
        checks.append(f"coalesce({plain}, false)")
    if rule:
        checks.append(f"coalesce({rule}, false)")
    return JsonPageSql(
        relation=relation, key=key, structure=structure,
        values=tuple(values) + derived, plain=" AND ".join(f"({check})" for check in checks),
    )


AGING_PAGE_SQL = _page_sql(AgingReportRow.RELATION, "guarantor_id", (
    _Field("PatNum", "guarantor_id", "identifier"),
    _Field("patName", "display_name", "text"),
    *(_Field(name, column, "money") for name, column in (
        ("Bal_0_30", "bal_0_30"), ("Bal_31_60", "bal_31_60"), ("Bal_61_90", "bal_61_90"),
        ("BalOver90", "bal_over_90"), ("BalTotal", "bal_total"), ("InsWoEst", "ins_wo_est"),
        ("InsPayEst", "ins_pay_est"), ("PatientPortion", "patient_portion"),
    )),
))


def _patients(status: _Field) -> JsonPageSql:
    # rows.patient_display_name: "Last, First" of the parts that are not empty.
    last, first = _text('raw."LName"'), _text('raw."FName"')
    display = f"concat_ws(', ', nullif({last}, ''), nullif({first}, ''))"
    return _page_sql(PatientRow.RELATION, "pat_num", (
        _Field("PatNum", "pat_num", "identifier"),
        _Field("Guarantor", "guarantor_id", "identifier"),
        _Field("LName", "_last_name", "text"),
        _Field("FName", "_first_name", "text"),
        status,
        _Field("DateTStamp", "changed_at", "timestamp"),
    ), derived=(("display_name", display),))


def _ledger(status: str | None, date_kind: str) -> dict[str, JsonPageSql]:
    """The page SQL of the four ledger tables, REST-shaped (`status` None, dates `day`)
    or ShortQuery-shaped (enum numbers, dates at midnight)."""

    def status_field(name: str, column: str, names: dict[int, str]) -> _Field:
        return _Field(name, column, "enum", names) if status else _Field(name, column, "text")

    return {
        PROCEDURES_ENDPOINT: _page_sql(ProcedureRow.RELATION, "proc_num", (
            _Field("ProcNum", "proc_num", "identifier"),
            _Field("PatNum", "pat_num", "identifier"),
            _Field("ProcDate", "proc_date", date_kind),
            _Field("ProcFee", "proc_fee", "money"),
            _Field("UnitQty", "unit_qty", "count"),
            _Field("BaseUnits", "base_units", "count"),
            status_field("ProcStatus", "proc_status", PROC_STATUS),
            _Field("DateTStamp", "changed_at", "timestamp"),
        ), rule=f"NOT (proc_status = 'C' AND proc_date = {_EMPTY_DATE})"),
        CLAIMPROCS_ENDPOINT: _page_sql(ClaimProcRow.RELATION, "claim_proc_num", (
            _Field("ClaimProcNum", "claim_proc_num", "identifier"),
            _Field("ProcNum", "proc_num", "count"),
            _Field("ClaimNum", "claim_num", "count"),
            _Field("PatNum", "pat_num", "identifier"),
            status_field("Status", "status", CLAIMPROC_STATUS),
            _Field("InsPayEst", "ins_pay_est", "money"),
            _Field("InsPayAmt", "ins_pay_amt", "money"),
            _Field("WriteOff", "write_off", "money"),
            _Field("WriteOffEst", "write_off_est", "money"),
            _Field("DateCP", "date_cp", date_kind),
            _Field("SecDateTEdit", "changed_at", "timestamp"),
        )),
        PAYSPLITS_ENDPOINT: _page_sql(PaySplitRow.RELATION, "split_num", (
            _Field("SplitNum", "split_num", "identifier"),
            _Field("PatNum", "pat_num", "identifier"),
            _Field("SplitAmt", "split_amt", "money"),
            _Field("DatePay", "date_pay", date_kind),
            _Field("SecDateTEdit", "changed_at", "timestamp"),
        ), rule=f"NOT (date_pay = {_EMPTY_DATE} AND split_amt < 0)"),
        ADJUSTMENTS_ENDPOINT: _page_sql(AdjustmentRow.RELATION, "adj_num", (
            _Field("AdjNum", "adj_num", "identifier"),
            _Field("PatNum", "pat_num", "identifier"),
            _Field("AdjDate", "adj_date", date_kind),
            _Field("AdjAmt", "adj_amt", "money"),
            _Field("SecDateTEdit", "changed_at", "timestamp"),
        ), rule=f"NOT (adj_date = {_EMPTY_DATE} AND adj_amt > 0)"),
    }


# The REST endpoints' pages (`/reports/Aging`, `/patients`, the REST ledger fallback).
REST_PAGE_SQL: dict[str, JsonPageSql] = {
    AGING_ENDPOINT: AGING_PAGE_SQL,
    PATIENTS_ENDPOINT: _patients(_Field("PatStatus", "status", "text")),
    **_ledger(None, "day"),
}
# ShortQuery's pages of the ledger tables: every value as text, enums as numbers.
SHORT_QUERY_PAGE_SQL: dict[str, JsonPageSql] = {
    PATIENTS_ENDPOINT: _patients(_Field("PatStatus", "status", "enum", PAT_STATUS)),
    **_ledger("enum", "day_at_midnight"),
}
