"""Validation of Open Dental rows: JSON pages in, `Page`s of typed rows and rejects out.

Field values are read by `values` (money exactly, never through a binary float; integers
within BIGINT). One bad value rejects its row, never its page. Reasons name the field and
the problem only, never a value, since values include patient names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from balances_pipeline.sources.errors import DuplicateRowsError, SchemaDriftError
from balances_pipeline.sources.opendental.values import (
    dump_raw,
    parse_integer,
    parse_money,
    parse_timestamp,
)
from balances_pipeline.sources.rows import (
    AdjustmentRow,
    AgingReportRow,
    ClaimProcRow,
    Page,
    PatientRow,
    PaySplitRow,
    ProcedureRow,
    RejectedRow,
)

AGING_ENDPOINT = "/reports/Aging"
PATIENTS_ENDPOINT = "/patients"
PROCEDURES_ENDPOINT = "/procedurelogs"
CLAIMPROCS_ENDPOINT = "/claimprocs"
PAYSPLITS_ENDPOINT = "/paysplits"
ADJUSTMENTS_ENDPOINT = "/adjustments"
EMPTY_DATE = date(1, 1, 1)  # Open Dental's "no date"

AGING_FIELDS = (
    "PatNum",
    "patName",
    "Bal_0_30",
    "Bal_31_60",
    "Bal_61_90",
    "BalOver90",
    "BalTotal",
    "InsWoEst",
    "InsPayEst",
    "PatientPortion",
)
PATIENT_FIELDS = ("PatNum", "Guarantor", "LName", "FName", "PatStatus")
PATIENT_OPTIONAL_FIELDS = ("DateTStamp",)

RowT = TypeVar("RowT")


class _RowReader:
    """Reads typed fields from one row, collecting one-line problems instead of raising."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.problems: list[str] = []

    def _get(self, name: str, *, optional: bool = False) -> Any:
        if name not in self.row:
            if not optional:
                self.problems.append(f"missing field '{name}'")
            return None
        value = self.row[name]
        if value is None and not optional:
            self.problems.append(f"field '{name}': is null")
        return value

    def _fail(self, name: str, problem: str) -> None:
        self.problems.append(f"field '{name}': {problem}")

    def identifier(self, name: str) -> int | None:
        value = self._get(name)
        if value is None:
            return None
        number, problem = parse_integer(value)
        if problem:
            self._fail(name, problem)
        elif number is not None and number <= 0:
            self._fail(name, "not a positive id")
            return None
        return number

    def money(self, name: str) -> Decimal | None:
        value = self._get(name)
        if value is None:
            return None
        amount, problem = parse_money(value)
        if problem:
            self._fail(name, problem)
        return amount

    def text(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self._fail(name, "not a string")
            return None
        return value.strip()

    def count(self, name: str) -> int | None:
        """A non-negative integer (a quantity, or an id where 0 means "none")."""
        value = self._get(name)
        if value is None:
            return None
        number, problem = parse_integer(value)
        if problem == "integer out of range":
            self._fail(name, problem)
            return None
        if number is None or number < 0:
            self._fail(name, "not a non-negative integer")
            return None
        return number

    def day(self, name: str) -> date | None:
        value = self._get(name)
        if value is None:
            return None
        if isinstance(value, str) and len(value) == 10:
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self._fail(name, "not a date (yyyy-MM-dd)")
        return None

    def timestamp(self, name: str) -> datetime | None:
        value = self._get(name, optional=True)
        if value is None:
            return None
        parsed = parse_timestamp(value)
        if parsed is None:
            self._fail(name, "not a timestamp (yyyy-MM-dd HH:mm:ss)")
        elif parsed.year == 1:
            return None  # Open Dental writes 0001-01-01 00:00:00 for "never"
        return parsed


@dataclass(frozen=True, slots=True)
class _EndpointSpec:
    endpoint: str
    fields: tuple[str, ...]
    optional_fields: tuple[str, ...]
    account_field: str
    key_field: str = "PatNum"


_AGING_SPEC = _EndpointSpec(AGING_ENDPOINT, AGING_FIELDS, (), "PatNum")
_PATIENT_SPEC = _EndpointSpec(
    PATIENTS_ENDPOINT, PATIENT_FIELDS, PATIENT_OPTIONAL_FIELDS, "Guarantor"
)
# Ledger rows name the patient, not the account: `account_id` of a reject is filled in by
# the sync from the patient's guarantor.
_PROCEDURE_SPEC = _EndpointSpec(
    PROCEDURES_ENDPOINT,
    ("ProcNum", "PatNum", "ProcDate", "ProcFee", "UnitQty", "BaseUnits", "ProcStatus"),
    ("DateTStamp",), "PatNum", "ProcNum",
)
_CLAIMPROC_SPEC = _EndpointSpec(
    CLAIMPROCS_ENDPOINT,
    ("ClaimProcNum", "ProcNum", "ClaimNum", "PatNum", "Status", "InsPayEst", "InsPayAmt",
     "WriteOff", "WriteOffEst", "DateCP"),
    ("SecDateTEdit",), "PatNum", "ClaimProcNum",
)
_PAYSPLIT_SPEC = _EndpointSpec(
    PAYSPLITS_ENDPOINT, ("SplitNum", "PatNum", "SplitAmt", "DatePay"), ("SecDateTEdit",),
    "PatNum", "SplitNum",
)
_ADJUSTMENT_SPEC = _EndpointSpec(
    ADJUSTMENTS_ENDPOINT, ("AdjNum", "PatNum", "AdjDate", "AdjAmt"), ("SecDateTEdit",),
    "PatNum", "AdjNum",
)


def _read_aging(reader: _RowReader) -> AgingReportRow | None:
    values = {
        "guarantor_id": reader.identifier("PatNum"),
        "display_name": reader.text("patName"),
        "bal_0_30": reader.money("Bal_0_30"),
        "bal_31_60": reader.money("Bal_31_60"),
        "bal_61_90": reader.money("Bal_61_90"),
        "bal_over_90": reader.money("BalOver90"),
        "bal_total": reader.money("BalTotal"),
        "ins_wo_est": reader.money("InsWoEst"),
        "ins_pay_est": reader.money("InsPayEst"),
        "patient_portion": reader.money("PatientPortion"),
    }
    if reader.problems:
        return None
    return AgingReportRow(**values)  # type: ignore[arg-type]


def patient_display_name(last_name: str, first_name: str) -> str:
    return ", ".join(part for part in (last_name, first_name) if part)


def _read_patient(reader: _RowReader) -> PatientRow | None:
    pat_num = reader.identifier("PatNum")
    guarantor_id = reader.identifier("Guarantor")
    last_name = reader.text("LName")
    first_name = reader.text("FName")
    status = reader.text("PatStatus")
    changed_at = reader.timestamp("DateTStamp")
    if reader.problems:
        return None
    return PatientRow(
        pat_num=pat_num,  # type: ignore[arg-type]
        guarantor_id=guarantor_id,  # type: ignore[arg-type]
        display_name=patient_display_name(last_name or "", first_name or ""),
        status=status or "",
        changed_at=changed_at,
    )


def _read_procedure(reader: _RowReader) -> ProcedureRow | None:
    values = {
        "proc_num": reader.identifier("ProcNum"),
        "pat_num": reader.identifier("PatNum"),
        "proc_date": reader.day("ProcDate"),
        "proc_fee": reader.money("ProcFee"),
        "unit_qty": reader.count("UnitQty"),
        "base_units": reader.count("BaseUnits"),
        "proc_status": reader.text("ProcStatus"),
        "changed_at": reader.timestamp("DateTStamp"),
    }
    if values["proc_status"] == "C" and values["proc_date"] == EMPTY_DATE:
        reader.problems.append("field 'ProcDate': a completed procedure without a date")
    if reader.problems:
        return None
    return ProcedureRow(**values)  # type: ignore[arg-type]


def _read_claimproc(reader: _RowReader) -> ClaimProcRow | None:
    values = {
        "claim_proc_num": reader.identifier("ClaimProcNum"),
        "proc_num": reader.count("ProcNum"),
        "claim_num": reader.count("ClaimNum"),
        "pat_num": reader.identifier("PatNum"),
        "status": reader.text("Status"),
        "ins_pay_est": reader.money("InsPayEst"),
        "ins_pay_amt": reader.money("InsPayAmt"),
        "write_off": reader.money("WriteOff"),
        "write_off_est": reader.money("WriteOffEst"),
        "date_cp": reader.day("DateCP"),
        "changed_at": reader.timestamp("SecDateTEdit"),
    }
    if reader.problems:
        return None
    return ClaimProcRow(**values)  # type: ignore[arg-type]


def _read_paysplit(reader: _RowReader) -> PaySplitRow | None:
    values = {
        "split_num": reader.identifier("SplitNum"),
        "pat_num": reader.identifier("PatNum"),
        "split_amt": reader.money("SplitAmt"),
        "date_pay": reader.day("DatePay"),
        "changed_at": reader.timestamp("SecDateTEdit"),
    }
    if values["date_pay"] == EMPTY_DATE and (values["split_amt"] or 0) < 0:
        reader.problems.append("field 'DatePay': a refund (a charge) without a date")
    if reader.problems:
        return None
    return PaySplitRow(**values)  # type: ignore[arg-type]


def _read_adjustment(reader: _RowReader) -> AdjustmentRow | None:
    values = {
        "adj_num": reader.identifier("AdjNum"),
        "pat_num": reader.identifier("PatNum"),
        "adj_date": reader.day("AdjDate"),
        "adj_amt": reader.money("AdjAmt"),
        "changed_at": reader.timestamp("SecDateTEdit"),
    }
    if values["adj_date"] == EMPTY_DATE and (values["adj_amt"] or 0) > 0:
        reader.problems.append("field 'AdjDate': a charge without a date")
    if reader.problems:
        return None
    return AdjustmentRow(**values)  # type: ignore[arg-type]


def _readable_id(row: dict[str, Any], name: str) -> str | None:
    number, _ = parse_integer(row.get(name))
    return str(number) if number is not None and number > 0 else None


def _check_schema(practice_id: str, spec: _EndpointSpec, rows: list[Any], offset: int) -> None:
    objects = [row for row in rows if isinstance(row, dict)]
    if not objects:
        return
    for name in spec.fields:
        if all(name not in row for row in objects):
            raise SchemaDriftError(
                f"practice {practice_id}: source schema changed: field '{name}' missing "
                f"from every row of {spec.endpoint} (offset {offset})"
            )


def _check_duplicate(
    practice_id: str, spec: _EndpointSpec, key: str | None, seen: set[str], offset: int
) -> None:
    if key is None:
        return
    if key in seen:
        raise DuplicateRowsError(
            f"practice {practice_id}: {spec.key_field} {key} returned twice by {spec.endpoint} "
            f"(offset {offset}); rows shifted between pages"
        )
    seen.add(key)


def _parse_page(
    practice_id: str,
    spec: _EndpointSpec,
    read: Callable[[_RowReader], RowT | None],
    rows: list[Any],
    offset: int,
    seen: set[str] | None,
) -> Page[RowT]:
    _check_schema(practice_id, spec, rows, offset)
    seen = set() if seen is None else seen
    page: Page[RowT] = Page(endpoint=spec.endpoint, offset=offset)
    for row in rows:
        if not isinstance(row, dict):
            page.rejected.append(
                RejectedRow(spec.endpoint, None, "row is not a JSON object", raw="{}")
            )
            continue
        key = _readable_id(row, spec.key_field)
        _check_duplicate(practice_id, spec, key, seen, offset)
        reader = _RowReader(row)
        parsed = read(reader)
        if parsed is None:
            page.rejected.append(
                RejectedRow(
                    endpoint=spec.endpoint,
                    row_key=key,
                    reason="; ".join(reader.problems),
                    raw=dump_raw(row, spec.fields + spec.optional_fields),
                    account_id=_readable_id(row, spec.account_field),
                )
            )
        else:
            page.rows.append(parsed)
    return page


def parse_aging_page(
    practice_id: str, rows: list[Any], offset: int, seen: set[str] | None = None
) -> Page[AgingReportRow]:
    """Validate one `/reports/Aging` page; `seen` carries PatNums across pages."""
    return _parse_page(practice_id, _AGING_SPEC, _read_aging, rows, offset, seen)


def parse_patient_page(
    practice_id: str, rows: list[Any], offset: int, seen: set[str] | None = None
) -> Page[PatientRow]:
    """Validate one `/patients` page; `seen` carries PatNums across pages."""
    return _parse_page(practice_id, _PATIENT_SPEC, _read_patient, rows, offset, seen)


LEDGER_PARSERS: dict[str, tuple[_EndpointSpec, Callable[[_RowReader], Any], str]] = {
    PATIENTS_ENDPOINT: (_PATIENT_SPEC, _read_patient, "DateTStamp"),
    PROCEDURES_ENDPOINT: (_PROCEDURE_SPEC, _read_procedure, "DateTStamp"),
    CLAIMPROCS_ENDPOINT: (_CLAIMPROC_SPEC, _read_claimproc, "SecDateTEdit"),
    PAYSPLITS_ENDPOINT: (_PAYSPLIT_SPEC, _read_paysplit, "SecDateTEdit"),
    ADJUSTMENTS_ENDPOINT: (_ADJUSTMENT_SPEC, _read_adjustment, "SecDateTEdit"),
}


def ledger_page_parser(endpoint: str) -> Callable[..., Page[Any]]:
    """The page parser of one ledger endpoint (`seen` carries its keys across pages)."""
    spec, read, _ = LEDGER_PARSERS[endpoint]

    def parse(practice_id: str, rows: list[Any], offset: int, seen: set[str] | None = None):
        return _parse_page(practice_id, spec, read, rows, offset, seen)

    return parse


def changed_since_parameter(endpoint: str) -> str:
    return LEDGER_PARSERS[endpoint][2]


# The ledger's endpoints, in reading order, and the staging relation each one fills.
LEDGER_RELATIONS: dict[str, str] = {
    PATIENTS_ENDPOINT: PatientRow.RELATION,
    PROCEDURES_ENDPOINT: ProcedureRow.RELATION,
    CLAIMPROCS_ENDPOINT: ClaimProcRow.RELATION,
    PAYSPLITS_ENDPOINT: PaySplitRow.RELATION,
    ADJUSTMENTS_ENDPOINT: AdjustmentRow.RELATION,
}
