"""aging.md written out again, plainly, for tests: an independent check of the code under test.

Works on Open Dental-shaped tables (lists of dicts). Deliberately simple and slow.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

EMPTY_DATE = "0001-01-01"
RECEIVED = {"Received", "Supplemental", "CapClaim", "CapComplete"}
BUCKETS = ["0_30", "31_60", "61_90", "91_120", "over_120"]
D = Decimal


def money(value: object) -> Decimal:
    return D(str(value))


def bucket_of(age: int) -> str:
    if age <= 30:
        return "0_30"
    if age <= 60:
        return "31_60"
    if age <= 90:
        return "61_90"
    if age <= 120:
        return "91_120"
    return "over_120"


def ledger_entries(tables: dict) -> dict[int, list[tuple[str, Decimal]]]:
    """Every family's (date, signed amount) entries, per aging.md's table."""
    guarantor = {p["PatNum"]: p["Guarantor"] for p in tables["patients"]}
    entries: dict[int, list[tuple[str, Decimal]]] = defaultdict(list)

    def add(pat_num: int, day: str, amount: Decimal) -> None:
        entries[guarantor.get(pat_num, pat_num)].append((day, amount))

    for proc in tables["procedurelogs"]:
        if proc["ProcStatus"] == "C":
            fee = money(proc["ProcFee"]) * (int(proc["UnitQty"]) + int(proc["BaseUnits"]))
            add(proc["PatNum"], proc["ProcDate"], fee)
    for claim in tables["claimprocs"]:
        if claim["Status"] in RECEIVED:
            add(claim["PatNum"], claim["DateCP"], -money(claim["InsPayAmt"]))
            add(claim["PatNum"], claim["DateCP"], -money(claim["WriteOff"]))
    for split in tables["paysplits"]:
        add(split["PatNum"], split["DatePay"], -money(split["SplitAmt"]))
    for adjustment in tables.get("adjustments", []):
        add(adjustment["PatNum"], adjustment["AdjDate"], money(adjustment["AdjAmt"]))
    return entries


def pending_insurance(tables: dict) -> dict[int, tuple[Decimal, Decimal]]:
    guarantor = {p["PatNum"]: p["Guarantor"] for p in tables["patients"]}
    completed = {p["ProcNum"] for p in tables["procedurelogs"] if p["ProcStatus"] == "C"}
    found: dict[int, list[Decimal]] = defaultdict(lambda: [D(0), D(0)])
    for claim in tables["claimprocs"]:
        if claim["Status"] == "NotReceived" and claim["ProcNum"] in completed:
            family = found[guarantor.get(claim["PatNum"], claim["PatNum"])]
            family[0] += money(claim["InsPayEst"])
            if money(claim["WriteOffEst"]) >= 0:
                family[1] += money(claim["WriteOffEst"])
    return {key: (value[0], value[1]) for key, value in found.items()}


def cents(value: Decimal) -> Decimal:
    return value.quantize(D("0.01"), rounding=ROUND_HALF_UP)


def age_accounts(tables: dict, as_of: date) -> dict[int, dict[str, Decimal | int | None]]:
    """Five buckets per aging.md's ledger mode, keyed by guarantor."""
    pending = pending_insurance(tables)
    result = {}
    families = ledger_entries(tables)
    for family in set(families) | set(pending):
        charges: list[tuple[date, Decimal]] = []
        credit = D(0)
        total = D(0)
        for day, amount in families.get(family, []):
            if amount < 0:
                if day == EMPTY_DATE or date.fromisoformat(day) <= as_of:
                    credit -= amount
                    total += amount
            elif amount > 0 and day != EMPTY_DATE and date.fromisoformat(day) <= as_of:
                charges.append((date.fromisoformat(day), amount))
                total += amount
        buckets = dict.fromkeys(BUCKETS, D(0))
        for day, amount in charges:
            buckets[bucket_of((as_of - day).days)] += amount
        remaining = credit
        for name in reversed(BUCKETS):
            taken = min(buckets[name], remaining)
            buckets[name] -= taken
            remaining -= taken
        open_days = None
        remaining = credit
        for day, amount in sorted(charges, key=lambda c: c[0]):
            if remaining >= amount:
                remaining -= amount
                continue
            open_days = (as_of - day).days
            break
        ins, wo = pending.get(family, (D(0), D(0)))
        if total == 0 and ins == 0 and wo == 0:
            continue
        row: dict[str, Decimal | int | None] = {f"bucket_{n}": cents(v) for n, v in buckets.items()}
        row.update(
            balance_total=cents(total),
            insurance_estimate=cents(ins),
            writeoff_estimate=cents(wo),
            patient_portion=cents(total - ins - wo),
            days_outstanding=open_days if total > 0 else None,
        )
        result[family] = row
    return result


def open_dental_report(tables: dict, as_of: date) -> dict[int, dict[str, Decimal]]:
    """The same, in Open Dental's four buckets (a credit balance is a negative Bal_0_30)."""
    report = {}
    for family, row in age_accounts(tables, as_of).items():
        total = row["balance_total"]
        report[family] = {
            "Bal_0_30": row["bucket_0_30"] if total >= 0 else total,
            "Bal_31_60": row["bucket_31_60"],
            "Bal_61_90": row["bucket_61_90"],
            "BalOver90": row["bucket_91_120"] + row["bucket_over_120"],
            "BalTotal": total,
            "InsPayEst": row["insurance_estimate"],
            "InsWoEst": row["writeoff_estimate"],
        }
    return report
