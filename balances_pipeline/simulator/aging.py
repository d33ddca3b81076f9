"""Open Dental style aging report (four buckets) computed from the simulator's ledger.

Implements the `ledger` mode rules of docs/aging.md, then folds 91-120 and over-120 into
`BalOver90` and reports a credit balance as a negative `Bal_0_30`, as Open Dental does.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from balances_pipeline.simulator.ledger import CENT, EMPTY_DATE, Ledger

RECEIVED_STATUSES = frozenset({"Received", "Supplemental", "CapClaim", "CapComplete"})
BUCKET_BOUNDS = (30, 60, 90, 120)
REPORT_FIELDS = (
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
ZERO = Decimal(0)
ZERO_CENTS = Decimal("0.00")


class _Account:
    __slots__ = ("buckets", "credits", "ins_est", "wo_est")

    def __init__(self) -> None:
        self.buckets = [ZERO] * 5
        self.credits = ZERO
        self.ins_est = ZERO
        self.wo_est = ZERO


def bucket_index(age_days: int) -> int:
    for i, bound in enumerate(BUCKET_BOUNDS):
        if age_days <= bound:
            return i
    return 4


class _Ager:
    def __init__(self, ledger: Ledger, as_of: date) -> None:
        self.ledger = ledger
        self.as_of = as_of.isoformat()
        self.as_of_ord = as_of.toordinal()
        self.accounts: dict[int, _Account] = {}
        self.ordinals: dict[str, int] = {}
        # NotReceived estimates by ProcNum (set by run(); the FHIR view splits them by term)
        self.pending: dict[int, list[tuple[int, Decimal, Decimal]]] = {}
        patients = ledger.patients
        pat, guar = patients.pos("PatNum"), patients.pos("Guarantor")
        self.family = {row[pat]: row[guar] for row in patients.rows}

    def account(self, patnum: int) -> _Account:
        guarantor = self.family.get(patnum, patnum)
        account = self.accounts.get(guarantor)
        if account is None:
            account = self.accounts[guarantor] = _Account()
        return account

    def entry(self, patnum: int, day: str, amount: Decimal) -> None:
        if amount == 0 or day > self.as_of:
            return
        if amount < 0:
            self.account(patnum).credits -= amount
            return
        if day == EMPTY_DATE:
            return
        ordinal = self.ordinals.get(day)
        if ordinal is None:
            ordinal = self.ordinals[day] = date.fromisoformat(day).toordinal()
        self.account(patnum).buckets[bucket_index(self.as_of_ord - ordinal)] += amount

    def run(self) -> dict[int, _Account]:
        pending = self.pending = self.claimprocs()
        self.procedures(pending)
        self.simple("paysplits", "SplitAmt", "DatePay", sign=-1)
        self.simple("adjustments", "AdjAmt", "AdjDate", sign=1)
        return self.accounts

    def claimprocs(self) -> dict[int, list[tuple[int, Decimal, Decimal]]]:
        """Apply received insurance; return NotReceived estimates by ProcNum."""
        t = self.ledger.claimprocs
        i_proc, i_pat, i_status = t.pos("ProcNum"), t.pos("PatNum"), t.pos("Status")
        i_est, i_amt, i_wo = t.pos("InsPayEst"), t.pos("InsPayAmt"), t.pos("WriteOff")
        i_woest, i_date = t.pos("WriteOffEst"), t.pos("DateCP")
        pending: dict[int, list[tuple[int, Decimal, Decimal]]] = {}
        for row in t.rows:
            status = row[i_status]
            if status in RECEIVED_STATUSES:
                self.entry(row[i_pat], row[i_date], -row[i_amt])
                self.entry(row[i_pat], row[i_date], -row[i_wo])
            elif status == "NotReceived":
                wo_est = row[i_woest] if row[i_woest] >= 0 else ZERO
                pending.setdefault(row[i_proc], []).append((row[i_pat], row[i_est], wo_est))
        return pending

    def procedures(self, pending: dict[int, list[tuple[int, Decimal, Decimal]]]) -> None:
        t = self.ledger.procedurelogs
        i_num, i_pat, i_date = t.pos("ProcNum"), t.pos("PatNum"), t.pos("ProcDate")
        i_fee, i_qty, i_base = t.pos("ProcFee"), t.pos("UnitQty"), t.pos("BaseUnits")
        i_status = t.pos("ProcStatus")
        for row in t.rows:
            if row[i_status] != "C":
                continue
            self.entry(row[i_pat], row[i_date], row[i_fee] * (row[i_qty] + row[i_base]))
            for patnum, ins_est, wo_est in pending.get(row[i_num], ()):
                account = self.account(patnum)
                account.ins_est += ins_est
                account.wo_est += wo_est

    def simple(self, table: str, amount_field: str, date_field: str, sign: int) -> None:
        t = self.ledger.table(table)
        i_pat, i_amt, i_date = t.pos("PatNum"), t.pos(amount_field), t.pos(date_field)
        for row in t.rows:
            amount = row[i_amt]
            self.entry(row[i_pat], row[i_date], -amount if sign < 0 else amount)


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def apply_credits(buckets: list[Decimal], credits: Decimal) -> list[Decimal]:
    """Credits reduce buckets from the oldest (last) to the newest, never below zero."""
    result = list(buckets)
    for i in range(len(result) - 1, -1, -1):
        taken = min(result[i], credits)
        result[i] -= taken
        credits -= taken
    return result


def _report_row(patnum: int, name: str, account: _Account) -> dict[str, Any] | None:
    total = _round(sum(account.buckets, ZERO) - account.credits)
    ins_est, wo_est = _round(account.ins_est), _round(account.wo_est)
    if total == 0 and ins_est == 0 and wo_est == 0:
        return None
    if total < 0:
        b0, b31, b61, b90 = total, ZERO_CENTS, ZERO_CENTS, ZERO_CENTS
    else:
        aged = [_round(b) for b in apply_credits(account.buckets, account.credits)]
        b0, b31, b61, b90 = aged[0], aged[1], aged[2], aged[3] + aged[4]
    return {
        "PatNum": patnum,
        "patName": name,
        "Bal_0_30": b0 + ZERO,
        "Bal_31_60": b31 + ZERO,
        "Bal_61_90": b61 + ZERO,
        "BalOver90": b90 + ZERO,
        "BalTotal": total,
        "InsWoEst": wo_est,
        "InsPayEst": ins_est,
        "PatientPortion": total - ins_est - wo_est,
    }


def _names(ledger: Ledger) -> dict[int, str]:
    t = ledger.patients
    i_pat, i_last, i_first = t.pos("PatNum"), t.pos("LName"), t.pos("FName")
    return {row[i_pat]: f"{row[i_last]}, {row[i_first]}" for row in t.rows}


def aging_report(ledger: Ledger, as_of: date) -> list[dict[str, Any]]:
    """One row per guarantor with a balance or pending insurance, ordered by PatNum."""
    with ledger.lock:
        accounts = _Ager(ledger, as_of).run()
        names = _names(ledger)
    rows = (
        _report_row(patnum, names.get(patnum, ""), accounts[patnum]) for patnum in sorted(accounts)
    )
    return [row for row in rows if row is not None]


def guarantor_clinics(ledger: Ledger) -> dict[int, int]:
    """Each patient's assigned clinic (patient.ClinicNum), by PatNum."""
    t = ledger.patients
    i_pat, i_clinic = t.pos("PatNum"), t.pos("ClinicNum")
    return {row[i_pat]: row[i_clinic] for row in t.rows}


class AgingCache:
    """Reports per as-of date, recomputed when the ledger's version changes.

    `report(as_of, clinic)` keeps the families whose guarantor is assigned to `clinic`, as
    Open Dental's Aging of A/R report filters clinics when grouped by family: the guarantor
    owns the debt, so the whole family's balance goes with the guarantor's clinic, whatever
    clinic each procedure or payment was entered at.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._reports: dict[date, tuple[int, list[dict[str, Any]]]] = {}
        self._clinics: tuple[int, dict[int, int]] = (-1, {})
        self._by_clinic: dict[tuple[date, int], tuple[int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def report(self, as_of: date, clinic: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            version = self.ledger.version
            cached = self._reports.get(as_of)
            if cached is not None and cached[0] == version:
                rows = cached[1]
            else:
                rows = aging_report(self.ledger, as_of)
                if len(self._reports) >= 16:
                    self._reports.clear()
                self._reports[as_of] = (version, rows)
            if clinic is None:
                return rows
            kept = self._by_clinic.get((as_of, clinic))
            if kept is not None and kept[0] == version:
                return kept[1]
            if self._clinics[0] != version:
                with self.ledger.lock:
                    self._clinics = (version, guarantor_clinics(self.ledger))
            clinics = self._clinics[1]
            filtered = [row for row in rows if clinics.get(row["PatNum"], 0) == clinic]
            if len(self._by_clinic) >= 64:
                self._by_clinic.clear()
            self._by_clinic[(as_of, clinic)] = (version, filtered)
            return filtered
