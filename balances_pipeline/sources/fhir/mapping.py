"""FHIR `Account` → `SourceBalanceRow` (or a `RejectedRow`, or nothing).

Balances come from the R5 cross-version extension on R4 servers
(`extension-Account.balance`, sub-extensions `aggregate`, `term`, `estimate`, `amount`) or
from R5's native `Account.balance`, detected per resource (native wins when a resource has
both). Terms map to buckets: `current` → 0-30, `30` → 31-60, `60` → 61-90, `90` → 91-120,
`120` → over 120. Per term, the bucket is the sum of its `patient` and `insurance` entries;
a term with only `total` entries counts that total, wholly as patient portion, and the
account then has no split (`has_split` False). A term giving both must agree.

`bucket_over_90` is left None (the source splits over-90; the SQL sums 91-120 and over
120). `balance_total` and `patient_portion` are filled in, `writeoff_estimate` is 0.

Reasons of rejected rows name the field and the problem, never a value; `raw` holds only
what was read (id, status, the balance entries), never the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from balances_pipeline.sources.fhir.values import (
    FHIR_ID,
    dump_raw,
    in_money_range,
    parse_money,
    reference_key,
)
from balances_pipeline.sources.rows import RejectedRow, SourceBalanceRow

ENDPOINT = "Account"
BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
AGGREGATE_SYSTEM = "http://hl7.org/fhir/account-aggregate"
TERM_SYSTEM = "http://hl7.org/fhir/account-balance-term"
TERMS = ("current", "30", "60", "90", "120")  # bucket order
AGGREGATES = ("patient", "insurance", "total")
LEAVING_STATUSES = frozenset({"inactive", "entered-in-error"})
NAME_MAX_CHARS = 200
ZERO = Decimal("0.00")

Names = dict[tuple[str, str], str]


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    aggregate: str
    term: str
    amount: Decimal


def human_name(resource: dict[str, Any]) -> str:
    """"Family, Given" of a Patient/RelatedPerson (its official name, else the first)."""
    names = [name for name in resource.get("name") or [] if isinstance(name, dict)]
    if not names:
        return ""
    name = next((n for n in names if n.get("use") == "official"), names[0])
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    given_list = name.get("given") if isinstance(name.get("given"), list) else []
    given = " ".join(part for part in given_list if isinstance(part, str))
    text = ", ".join(part.strip() for part in (family, given) if part and part.strip())
    if not text and isinstance(name.get("text"), str):
        text = name["text"]
    return _clean(text)


def _clean(text: str) -> str:
    return " ".join(text.split())[:NAME_MAX_CHARS]


def account_name(resource: dict[str, Any], names: Names) -> str:
    guarantors = resource.get("guarantor")
    if not isinstance(guarantors, list) or not guarantors or not isinstance(guarantors[0], dict):
        return ""
    party = guarantors[0].get("party")
    if not isinstance(party, dict):
        return ""
    display = party.get("display")
    if isinstance(display, str) and display.strip():
        return _clean(display)
    key = reference_key(party.get("reference"))
    return names.get(key, "") if key else ""


def _code(concept: Any, system: str, allowed: tuple[str, ...]) -> tuple[str | None, str]:
    if concept is None:
        return None, "missing"
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return None, "not a CodeableConcept with a coding"
    codings = [coding for coding in codings if isinstance(coding, dict)]
    for coding in codings:
        if coding.get("system") == system:
            code = coding.get("code")
            return (code, "") if code in allowed else (None, "unknown code")
    for coding in codings:  # a coding without a system, with one of the codes
        if "system" not in coding and coding.get("code") in allowed:
            return coding["code"], ""
    return None, f"no known code (system {system})"


def _raw_entries(resource: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The balance entries as {aggregate, term, amount} dicts, and the path they came from."""
    native = resource.get("balance")
    if native is not None:
        entries = native if isinstance(native, list) else [native]
        return [entry if isinstance(entry, dict) else {} for entry in entries], "balance"
    read: list[dict[str, Any]] = []
    extensions = resource.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if not isinstance(extension, dict) or extension.get("url") != BALANCE_EXTENSION:
            continue
        entry: dict[str, Any] = {}
        parts = extension.get("extension")
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            url = part.get("url")
            if url in ("aggregate", "term"):
                entry[url] = part.get("valueCodeableConcept")
            elif url == "amount":
                entry["amount"] = part.get("valueMoney")
        read.append(entry)
    return read, "extension-Account.balance"


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    """What `raw` keeps of an entry: the codes and the amount, as received."""
    def codes(concept: Any) -> Any:
        if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
            return [c.get("code") for c in concept["coding"] if isinstance(c, dict)]
        return None

    amount = entry.get("amount")
    money = ({key: amount.get(key) for key in ("value", "currency") if key in amount}
             if isinstance(amount, dict) else amount)
    return {"aggregate": codes(entry.get("aggregate")), "term": codes(entry.get("term")),
            "amount": money}


def read_entries(
    resource: dict[str, Any], currency: str
) -> tuple[list[BalanceEntry], list[str], list[dict[str, Any]]]:
    """The balance entries, the problems found (one line each) and the raw summary."""
    raw, path = _raw_entries(resource)
    entries: list[BalanceEntry] = []
    problems: list[str] = []
    for index, entry in enumerate(raw):
        where = f"{path}[{index}]"
        aggregate, problem = _code(entry.get("aggregate"), AGGREGATE_SYSTEM, AGGREGATES)
        if aggregate is None:
            problems.append(f"{where}.aggregate: {problem}")
        term, problem = _code(entry.get("term"), TERM_SYSTEM, TERMS)
        if term is None:
            problems.append(f"{where}.term: {problem}")
        amount = _amount(entry.get("amount"), currency, f"{where}.amount", problems)
        if aggregate and term and amount is not None:
            entries.append(BalanceEntry(aggregate, term, amount))
    return entries, problems, [_summary(entry) for entry in raw]


def _amount(money: Any, currency: str, where: str, problems: list[str]) -> Decimal | None:
    if not isinstance(money, dict):
        problems.append(f"{where}: {'missing' if money is None else 'not a Money'}")
        return None
    code = money.get("currency")
    # No currency: the practice's (servers of one currency often leave it out).
    if code is not None and code != currency:
        problems.append(f"{where}.currency: not the practice currency {currency}")
        return None
    if "value" not in money:
        problems.append(f"{where}.value: missing")
        return None
    amount, problem = parse_money(money["value"])
    if amount is None:
        problems.append(f"{where}.value: {problem}")
    return amount


def _inactive(account_id: str, name: str) -> SourceBalanceRow:
    return SourceBalanceRow(
        account_id=account_id, account_name=name, bucket_0_30=ZERO, bucket_31_60=ZERO,
        bucket_61_90=ZERO, bucket_91_120=ZERO, bucket_over_120=ZERO, bucket_over_90=None,
        balance_total=ZERO, insurance_estimate=ZERO, writeoff_estimate=ZERO,
        patient_portion=ZERO, has_split=True, active=False,
    )


def _buckets(entries: list[BalanceEntry], problems: list[str]) -> dict[str, Any] | None:
    """Buckets and portions, or None when every amount is zero (or there is none)."""
    sums = {(term, aggregate): ZERO for term in TERMS for aggregate in AGGREGATES}
    given: set[tuple[str, str]] = set()
    for entry in entries:
        sums[entry.term, entry.aggregate] += entry.amount
        given.add((entry.term, entry.aggregate))
    buckets: list[Decimal] = []
    patient = insurance = ZERO
    has_split = True
    for term in TERMS:
        split = (term, "patient") in given or (term, "insurance") in given
        total = sums[term, "total"]
        if split:
            bucket = sums[term, "patient"] + sums[term, "insurance"]
            if (term, "total") in given and total != bucket:
                problems.append(f"balance term {term}: the total entry differs from the sum "
                                "of its patient and insurance entries")
            patient += sums[term, "patient"]
            insurance += sums[term, "insurance"]
        else:
            bucket = total
            patient += total
            if total:
                has_split = False
        buckets.append(bucket)
    balance_total = sum(buckets, ZERO)
    if not all(in_money_range(v) for v in (*buckets, balance_total, patient, insurance)):
        problems.append("balance: a sum is out of range for DECIMAL(14,2)")
    if all(not amount for amount in sums.values()):
        return None
    return {
        "bucket_0_30": buckets[0], "bucket_31_60": buckets[1], "bucket_61_90": buckets[2],
        "bucket_91_120": buckets[3], "bucket_over_120": buckets[4],
        "balance_total": balance_total, "insurance_estimate": insurance,
        "patient_portion": patient, "has_split": has_split,
    }


def map_account(
    resource: dict[str, Any], names: Names, *, currency: str, incremental: bool,
    endpoint: str = ENDPOINT,
) -> SourceBalanceRow | RejectedRow | None:
    """One Account: a row, a rejected row, or None (a full read does not list it)."""
    account_id = resource.get("id")
    status = resource.get("status")
    if not isinstance(account_id, str) or not FHIR_ID.fullmatch(account_id):
        reason = "missing field 'id'" if account_id is None else "field 'id': not a FHIR id"
        raw = dump_raw({"status": status if isinstance(status, str) else None})
        return RejectedRow(endpoint, None, reason, raw)
    if status in LEAVING_STATUSES:
        return _inactive(account_id, account_name(resource, names)) if incremental else None
    entries, problems, raw_entries = read_entries(resource, currency)
    values = _buckets(entries, problems) if not problems else None
    if problems:
        raw = dump_raw({"id": account_id, "status": status, "balance": raw_entries})
        return RejectedRow(endpoint, account_id, "; ".join(problems), raw, account_id)
    name = account_name(resource, names)
    if values is None:
        return _inactive(account_id, name) if incremental else None
    return SourceBalanceRow(account_id=account_id, account_name=name, bucket_over_90=None,
                            writeoff_estimate=ZERO, active=True, **values)
