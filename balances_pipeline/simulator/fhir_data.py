"""The FHIR view of a simulated ledger: one `Account` per guarantor family, its balances.

Figures come from the same ledger and the same aging as `/reports/Aging` (aging.py), as of
the office's today, split into the five FHIR balance terms (`current` 0-30 days, `30`
31-60, `60` 61-90, `90` 91-120, `120` over 120):

- **term totals**: the aged buckets after credits (oldest first), so their sum is the aging
  report's `BalTotal`; a credit balance (negative `BalTotal`) is all in `current`, as Open
  Dental reports a negative `Bal_0_30`. Buckets are rounded to cents each; a cent of
  rounding difference goes to `current`.
- **insurance**: the expected insurance (`InsPayEst` of NotReceived claim procedures, the
  report's `InsPayEst`), each in the term of its procedure's date (a future or empty date:
  `current`). A term never shows more insurance than its (non-negative) total: the excess
  moves on to the next newer term, and what fits nowhere stays in `current`.
- **patient** = term total - insurance. Write-off estimates (`InsWoEst`) have no aggregate
  in FHIR: they stay in the patient entries (patient = `BalTotal - InsPayEst`), as an EHR
  reporting gross balances shows them until the write-off is posted.

Served entries: for each term a `patient` then an `insurance` entry (insurance entries are
`estimate: true`), or for accounts without a split (guarantor PatNum divisible by 17) one
`total` entry per term. An account whose entries would all be zero carries no balance.
`status` is `active` unless the family owes nothing and its ledger has not changed for a
year (`inactive`). `guarantor[0].party.display` ("Last, First") is left out when the
guarantor's PatNum % 5 == 2: the name is then only on the `Patient` resource.
`meta.lastUpdated` is the newest change stamp of the family's rows (and deletions), in the
office's UTC offset: days passing move balances between terms without changing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from balances_pipeline.simulator.aging import ZERO, _Account, _Ager, apply_credits, bucket_index
from balances_pipeline.simulator.ledger import CENT, EMPTY_DATE, STAMP_FIELDS, Ledger

TERMS = ("current", "30", "60", "90", "120")
BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
AGGREGATE_SYSTEM = "http://hl7.org/fhir/account-aggregate"
TERM_SYSTEM = "http://hl7.org/fhir/account-balance-term"
CURRENCY = "USD"
NO_SPLIT_EVERY = 17  # guarantor PatNum % 17 == 0: only `total` entries
NO_DISPLAY_EVERY, NO_DISPLAY_REMAINDER = 5, 2  # PatNum % 5 == 2: no party.display
DORMANT_DAYS = 365
STAMP_PARSE = "%Y-%m-%d %H:%M:%S"
ZEROS = (Decimal("0.00"),) * 5

# A naive office-local change stamp ("yyyy-MM-dd HH:mm:ss") as an aware datetime.
Localize = Callable[[datetime], datetime]


@dataclass(frozen=True)
class FhirAccount:
    """The expected figures of one served Account (what its resource says).

    `patient` and `insurance` are per term (TERMS order); `total` their sum per term. An
    account with `split` False serves only its `total` entries.
    """

    id: str
    guarantor: int
    family_name: str
    given_name: str
    status: str
    last_updated: datetime
    patient_updated: datetime | None
    split: bool
    display: bool
    patient: tuple[Decimal, ...]
    insurance: tuple[Decimal, ...]
    total: tuple[Decimal, ...]

    @property
    def name(self) -> str:
        return f"{self.family_name}, {self.given_name}"

    @property
    def balance_total(self) -> Decimal:
        return sum(self.total, Decimal("0.00"))

    @property
    def has_balance(self) -> bool:
        return any(self.patient) or any(self.insurance) or any(self.total)


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP) + ZERO


def _term_totals(account: _Account | None) -> list[Decimal]:
    if account is None:
        return list(ZEROS)
    total = _round(sum(account.buckets, ZERO) - account.credits)
    if total < 0:
        return [total, *ZEROS[1:]]
    terms = [_round(b) for b in apply_credits(account.buckets, account.credits)]
    terms[0] += total - sum(terms, ZERO)
    return terms


def _insurance_terms(raw: list[Decimal], totals: list[Decimal], ins_total: Decimal) -> list:
    """Insurance per term: by procedure date, capped at each term's total (see above)."""
    result = [Decimal("0.00")] * 5
    carry = ZERO
    for i in range(4, 0, -1):
        wanted = raw[i] + carry
        taken = max(min(wanted, max(totals[i], ZERO)), ZERO)
        result[i] = _round(taken)
        carry = wanted - taken
    result[0] = ins_total - sum(result[1:], ZERO)
    return result


def build_accounts(ledger: Ledger, as_of: date, localize: Localize) -> dict[int, FhirAccount]:
    """Every guarantor family's Account figures as of `as_of`, by guarantor PatNum."""
    with ledger.lock:
        ager = _Ager(ledger, as_of)
        aged = ager.run()
        family = ager.family
        newest: dict[int, str] = {}
        for name, table in ledger.tables.items():
            i_pat, i_stamp = table.pos("PatNum"), table.pos(STAMP_FIELDS[name])
            for row in table.rows:
                guarantor = family.get(row[i_pat], row[i_pat])
                if row[i_stamp] > newest.get(guarantor, ""):
                    newest[guarantor] = row[i_stamp]
        for patnum, stamp in ledger.deletions:
            guarantor = family.get(patnum, patnum)
            if stamp > newest.get(guarantor, ""):
                newest[guarantor] = stamp
        insurance = _pending_by_term(ledger, ager, as_of)
        p = ledger.patients
        i_pat, i_last, i_first, i_stamp = (
            p.pos("PatNum"), p.pos("LName"), p.pos("FName"), p.pos("DateTStamp"))
        people = {row[i_pat]: (row[i_last], row[i_first], row[i_stamp]) for row in p.rows}
    dormant_before = date.fromordinal(as_of.toordinal() - DORMANT_DAYS).isoformat()
    accounts: dict[int, FhirAccount] = {}
    for guarantor in sorted(set(family.values()) | set(aged) | set(newest)):
        account = aged.get(guarantor)
        totals = _term_totals(account)
        ins_total = _round(account.ins_est) if account else ZEROS[0]
        wo_total = _round(account.wo_est) if account else ZEROS[0]
        ins = _insurance_terms(insurance.get(guarantor, [ZERO] * 5), totals, ins_total)
        owes = any(totals) or ins_total != 0 or wo_total != 0
        stamp = newest.get(guarantor, "")
        last, first, patient_stamp = people.get(guarantor, ("", "", None))
        accounts[guarantor] = FhirAccount(
            id=str(guarantor),
            guarantor=guarantor,
            family_name=last,
            given_name=first,
            status="active" if owes or stamp >= dormant_before else "inactive",
            last_updated=_instant(stamp, localize),
            patient_updated=_instant(patient_stamp, localize) if patient_stamp else None,
            split=guarantor % NO_SPLIT_EVERY != 0,
            display=bool(last) and guarantor % NO_DISPLAY_EVERY != NO_DISPLAY_REMAINDER,
            patient=tuple(t - i for t, i in zip(totals, ins, strict=True)),
            insurance=tuple(ins),
            total=tuple(totals),
        )
    return accounts


def _pending_by_term(ledger: Ledger, ager: _Ager, as_of: date) -> dict[int, list[Decimal]]:
    """Pending insurance estimates per family and term of their procedure's date."""
    t = ledger.procedurelogs
    i_num, i_date, i_status = t.pos("ProcNum"), t.pos("ProcDate"), t.pos("ProcStatus")
    as_of_text, as_of_ord = as_of.isoformat(), as_of.toordinal()
    result: dict[int, list[Decimal]] = {}
    for row in t.rows:
        claims = ager.pending.get(row[i_num])
        if not claims or row[i_status] != "C":
            continue
        day = row[i_date]
        term = 0
        if day != EMPTY_DATE and day <= as_of_text:
            term = bucket_index(as_of_ord - date.fromisoformat(day).toordinal())
        for patnum, ins_est, _ in claims:
            terms = result.setdefault(ager.family.get(patnum, patnum), [ZERO] * 5)
            terms[term] += ins_est
    return result


def _instant(stamp: str, localize: Localize) -> datetime:
    try:
        moment = datetime.strptime(stamp, STAMP_PARSE)
    except ValueError:  # no stamp at all (never for generated rows)
        moment = datetime(1970, 1, 2)
    return localize(moment)


def format_instant(moment: datetime) -> str:
    """A FHIR instant with the moment's own UTC offset: 2026-11-29T10:20:00-07:00."""
    return moment.isoformat(timespec="seconds")


# --- resources -------------------------------------------------------------------------


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def balance_entries(account: FhirAccount) -> list[dict[str, Any]]:
    """The account's balances as R5 `Account.balance` elements (none when all are zero)."""
    if not account.has_balance:
        return []
    entries: list[dict[str, Any]] = []
    for i, term in enumerate(TERMS):
        if account.split:
            parts = [("patient", account.patient[i], False),
                     ("insurance", account.insurance[i], True)]
        else:
            parts = [("total", account.total[i], False)]
        for aggregate, amount, estimate in parts:
            entries.append({
                "aggregate": _coding(AGGREGATE_SYSTEM, aggregate),
                "term": _coding(TERM_SYSTEM, term),
                "estimate": estimate,
                "amount": {"value": amount, "currency": CURRENCY},
            })
    return entries


def _as_extension(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": BALANCE_EXTENSION,
        "extension": [
            {"url": "aggregate", "valueCodeableConcept": entry["aggregate"]},
            {"url": "term", "valueCodeableConcept": entry["term"]},
            {"url": "estimate", "valueBoolean": entry["estimate"]},
            {"url": "amount", "valueMoney": entry["amount"]},
        ],
    }


def account_resource(account: FhirAccount, version: str) -> dict[str, Any]:
    """The `Account` resource, balances native (`r5`) or as the cross-version extension."""
    party: dict[str, Any] = {"reference": f"Patient/{account.guarantor}"}
    if account.display:
        party["display"] = account.name
    resource: dict[str, Any] = {
        "resourceType": "Account",
        "id": account.id,
        "meta": {"lastUpdated": format_instant(account.last_updated)},
        "status": account.status,
        "subject": [{"reference": f"Patient/{account.guarantor}"}],
        "guarantor": [{"party": party}],
    }
    entries = balance_entries(account)
    if entries and version == "r5":
        resource["balance"] = entries
    elif entries:
        resource["extension"] = [_as_extension(e) for e in entries]
    return resource


def patient_resource(account: FhirAccount) -> dict[str, Any] | None:
    """The guarantor's `Patient`: an id and a name only (the simulator serves no PHI)."""
    if account.patient_updated is None:
        return None
    return {
        "resourceType": "Patient",
        "id": str(account.guarantor),
        "meta": {"lastUpdated": format_instant(account.patient_updated)},
        "name": [{"family": account.family_name, "given": [account.given_name]}],
    }


# --- JSON with exact money ---------------------------------------------------------------

_DECIMAL_MARK = re.compile(r'"\\u0000(-?[0-9]+(?:\.[0-9]+)?)\\u0000"')


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"\x00{value + ZERO:f}\x00"
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def fhir_json(value: Any) -> bytes:
    """JSON with every Decimal as the exact number it is (123.45, never 123.4500000001)."""
    text = json.dumps(value, default=_default, separators=(",", ":"))
    return _DECIMAL_MARK.sub(r"\1", text).encode()
