"""Validated source rows, as the connectors yield them, in pages.

Each row type names the staging relation (`schema.py`) its rows are appended to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar, Generic, TypeVar


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
