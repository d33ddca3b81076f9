"""Validated source rows, as the connectors yield them, in pages.

Each row type names the staging relation (`schema.py`) its rows are appended to, and its
fields are that relation's columns, in order (the staging database appends them by
position). The row types stay written out rather than generated from `schema.py` (with
`dataclasses.make_dataclass`): the connectors construct them by keyword, and spelled-out
fields keep that readable and checkable by type checkers and editors. So that they cannot
drift from the declaration, `_check_declared` compares every row type's fields (names,
order and types) with its relation's columns when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from balances_pipeline import schema


@dataclass(frozen=True, slots=True)
class AgingReportRow:
    """One guarantor of Open Dental's `/reports/Aging` (four buckets, Open Dental style)."""

    RELATION: ClassVar[str] = "stg_aging_report"  # the staging relation it fills (schema.py)
    guarantor_id: int
    display_name: str
    bal_0_30: Decimal
    bal_31_60: Decimal
    bal_61_90: Decimal
    bal_over_90: Decimal
    bal_total: Decimal
    ins_wo_est: Decimal
    ins_pay_est: Decimal
    patient_portion: Decimal


@dataclass(frozen=True, slots=True)
class PatientRow:
    """One patient of `/patients`: only what billing needs (no names but the display name)."""

    RELATION: ClassVar[str] = "stg_patients"  # the staging relation it fills (schema.py)
    pat_num: int
    guarantor_id: int
    display_name: str
    status: str
    changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SourceBalanceRow:
    """One account with its balances as the source reports them (FHIR `Account`, a row of
    an aging file). `None` where the source does not give a value: over-90 split, total
    (the sum of the buckets), patient portion (total minus the estimates)."""

    RELATION: ClassVar[str] = "stg_source_balances"  # the staging relation it fills
    account_id: str
    account_name: str
    bucket_0_30: Decimal
    bucket_31_60: Decimal
    bucket_61_90: Decimal
    bucket_91_120: Decimal | None
    bucket_over_120: Decimal | None
    bucket_over_90: Decimal | None
    balance_total: Decimal | None
    insurance_estimate: Decimal
    writeoff_estimate: Decimal
    patient_portion: Decimal | None
    has_split: bool = True
    active: bool = True


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A source row that failed validation: kept in `rejected_rows`, never in logs."""

    RELATION: ClassVar[str] = "stg_rejected_rows"  # the staging relation it fills (schema.py)
    endpoint: str
    row_key: str | None
    reason: str
    raw: str
    account_id: str | None = None


RowT = TypeVar("RowT")


@dataclass(slots=True)
class Page(Generic[RowT]):
    endpoint: str
    offset: int
    rows: list[RowT] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return len(self.rows) + len(self.rejected)


@dataclass(frozen=True)
class JsonPageSql:
    """How DuckDB reads one endpoint's pages set-based (`from_json` with `structure`):
    `values` (column, SQL) give the relation's typed columns (and helpers), `plain` is
    true of a row the row-by-row reader accepts with the same values, and `key` is the
    column that must not repeat on a page."""

    relation: str
    key: str
    structure: str
    values: tuple[tuple[str, str], ...]
    plain: str


@dataclass(slots=True)
class JsonPage:
    """A page kept as the JSON body the source sent, for set-based validation in the
    staging database. When it is not plainly valid in every row, `exactly()` (the
    row-by-row reader) gives its rows and rejects; `rows` and `rejected` read it so."""

    endpoint: str
    offset: int
    row_count: int
    body: bytes
    sql: JsonPageSql
    exact: Callable[[], Page[Any]]
    _page: Page[Any] | None = None

    def exactly(self) -> Page[Any]:
        if self._page is None:
            self._page = self.exact()
        return self._page

    @property
    def rows(self) -> list[Any]:
        return self.exactly().rows

    @property
    def rejected(self) -> list[RejectedRow]:
        return self.exactly().rejected


@dataclass(frozen=True, slots=True)
class ProcedureRow:
    RELATION: ClassVar[str] = "stg_ledger_procedures"  # the staging relation it fills (schema.py)
    proc_num: int
    pat_num: int
    proc_date: date
    proc_fee: Decimal
    unit_qty: int
    base_units: int
    proc_status: str
    changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimProcRow:
    RELATION: ClassVar[str] = "stg_ledger_claimprocs"  # the staging relation it fills (schema.py)
    claim_proc_num: int
    proc_num: int
    claim_num: int
    pat_num: int
    status: str
    ins_pay_est: Decimal
    ins_pay_amt: Decimal
    write_off: Decimal
    write_off_est: Decimal
    date_cp: date
    changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class PaySplitRow:
    RELATION: ClassVar[str] = "stg_ledger_paysplits"  # the staging relation it fills (schema.py)
    split_num: int
    pat_num: int
    split_amt: Decimal
    date_pay: date
    changed_at: datetime | None


@dataclass(frozen=True, slots=True)
class AdjustmentRow:
    RELATION: ClassVar[str] = "stg_ledger_adjustments"  # the staging relation it fills (schema.py)
    adj_num: int
    pat_num: int
    adj_date: date
    adj_amt: Decimal
    changed_at: datetime | None


# The Python type a staging column's values have (annotations are strings here).
_PYTHON_TYPES = {
    schema.BIGINT: "int",
    schema.VARCHAR: "str",
    schema.MONEY: "Decimal",
    schema.DATE: "date",
    schema.TIMESTAMP: "datetime",
    schema.BOOLEAN: "bool",
}


def _check_declared(row_type: type) -> None:
    relation = schema.STAGING_TABLES[row_type.RELATION]  # type: ignore[attr-defined]
    declared = [(column.name, _PYTHON_TYPES[column.type]) for column in relation.columns]
    written = [
        (f.name, str(f.type).removesuffix(" | None")) for f in fields(row_type)  # type: ignore[arg-type]
    ]
    if written != declared:
        raise TypeError(
            f"{row_type.__name__} does not match {relation.name} in schema.py:"
            f" fields {written}, columns {declared}"
        )


ROW_TYPES = (
    AgingReportRow, PatientRow, RejectedRow, ProcedureRow, ClaimProcRow, PaySplitRow,
    AdjustmentRow, SourceBalanceRow,
)
for _row_type in ROW_TYPES:
    _check_declared(_row_type)
if {row_type.RELATION for row_type in ROW_TYPES} != set(schema.STAGING_TABLES):
    raise TypeError("every staging table of schema.py needs exactly one row type")
