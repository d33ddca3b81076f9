"""FHIR connector: Account balances mapped to rows, over a real search on loopback.

Expected values are computed here from the JSON the fake serves (read back with
`parse_float=Decimal`), independently of the connector's mapping code.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal

from balances_pipeline_tests.fhir_fake import (
    FakeFhir,
    account,
    dumps,
    fhir_fixture,  # noqa: F401
    make_client,
    patient,
    read_all,
)

TERM_FIELDS = {"current": "bucket_0_30", "30": "bucket_31_60", "60": "bucket_61_90",
               "90": "bucket_91_120", "120": "bucket_over_120"}


def served(resource: dict) -> dict:
    """The resource as the client receives it."""
    return json.loads(dumps(resource), parse_float=Decimal)


def expected_from(resource: dict) -> dict[str, Decimal]:
    """Sums per term and aggregate, from the served extension or native balance."""
    sums: dict[tuple[str, str], Decimal] = {}
    entries = []
    for ext in resource.get("extension", []):
        parts = {part["url"]: part for part in ext["extension"]}
        entries.append((parts["aggregate"]["valueCodeableConcept"]["coding"][0]["code"],
                        parts["term"]["valueCodeableConcept"]["coding"][0]["code"],
                        parts["amount"]["valueMoney"]["value"]))
    for entry in resource.get("balance", []):
        entries.append((entry["aggregate"]["coding"][0]["code"],
                        entry["term"]["coding"][0]["code"], entry["amount"]["value"]))
    for aggregate, term, value in entries:
        sums[aggregate, term] = sums.get((aggregate, term), Decimal(0)) + Decimal(value)
    result = {}
    for term, name in TERM_FIELDS.items():
        result[name] = sums.get(("patient", term), Decimal(0)) + sums.get(
            ("insurance", term), Decimal(0))
    result["balance_total"] = sum(result.values(), Decimal(0))
    result["insurance_estimate"] = sum(
        (v for (agg, _), v in sums.items() if agg == "insurance"), Decimal(0))
    result["patient_portion"] = sum(
        (v for (agg, _), v in sums.items() if agg == "patient"), Decimal(0))
    return result


def random_entries(rng: random.Random) -> list[tuple[str, str, str]]:
    entries = []
    for term in TERM_FIELDS:
        for aggregate in ("patient", "insurance"):
            for _ in range(rng.randint(1, 2)):  # repeated entries of a term sum up
                entries.append((aggregate, term, f"{rng.randint(-5000, 900000) / 100:.2f}"))
    return entries


def by_id(rows: list) -> dict:
    return {row.account_id: row for row in rows}


def test_every_term_and_aggregate_r4_extension(fhir: FakeFhir) -> None:
    rng = random.Random(20261130)
    fhir.accounts = [account(f"acc-{n}", random_entries(rng), patient=f"p{n}")
                     for n in range(12)]
    fhir.patients = {f"p{n}": patient(f"p{n}", f"Family{n}", "Given", "M")
                     for n in range(12)}
    with make_client(fhir, page_size=5) as client:
        rows, rejected = read_all(client)
    assert rejected == []
    got = by_id(rows)
    assert len(got) == 12
    for n, resource in enumerate(fhir.accounts):
        row = got[f"acc-{n}"]
        for name, value in expected_from(served(resource)).items():
            assert getattr(row, name) == value, (n, name)
        assert row.account_name == f"Family{n}, Given M"
        assert row.bucket_over_90 is None
        assert row.writeoff_estimate == Decimal("0.00")
        assert row.has_split and row.active


def test_native_r5_balance(fhir: FakeFhir) -> None:
    rng = random.Random(5)
    fhir.accounts = [account(f"r5-{n}", random_entries(rng), native=True, display=f"R5, N{n}")
                     for n in range(4)]
    with make_client(fhir) as client:
        rows, rejected = read_all(client)
    assert rejected == []
    got = by_id(rows)
    for n, resource in enumerate(fhir.accounts):
        for name, value in expected_from(served(resource)).items():
            assert getattr(got[f"r5-{n}"], name) == value
        assert got[f"r5-{n}"].account_name == f"R5, N{n}"


def test_total_only_account_has_no_split(fhir: FakeFhir) -> None:
    fhir.accounts = [account("t1", [("total", "current", "100.10"), ("total", "90", "20"),
                                    ("total", "120", "3.05")])]
    with make_client(fhir) as client:
        (row,), rejected = read_all(client)
    assert rejected == []
    assert not row.has_split
    assert (row.bucket_0_30, row.bucket_91_120, row.bucket_over_120) == (
        Decimal("100.10"), Decimal("20.00"), Decimal("3.05"))
    assert row.balance_total == Decimal("123.15") == row.patient_portion
    assert row.insurance_estimate == Decimal("0.00")
    assert row.account_name == ""


def test_split_with_matching_total_and_mismatching_total(fhir: FakeFhir) -> None:
    fhir.accounts = [
        account("ok", [("patient", "30", "10"), ("insurance", "30", "5"),
                       ("total", "30", "15")]),
        account("bad", [("patient", "30", "10"), ("insurance", "30", "5"),
                        ("total", "30", "16")]),
    ]
    with make_client(fhir) as client:
        rows, rejected = read_all(client)
    assert [row.account_id for row in rows] == ["ok"]
    assert rows[0].bucket_31_60 == Decimal("15.00") and rows[0].has_split
    assert [r.account_id for r in rejected] == ["bad"]
    assert "term 30" in rejected[0].reason


def test_other_currency_rejected_rest_kept(fhir: FakeFhir) -> None:
    fhir.accounts = [account("usd", [("patient", "current", "10")]),
                     account("eur", [("patient", "current", "10")], currency="EUR"),
                     account("none", [("patient", "current", "4")], currency=None)]
    with make_client(fhir) as client:
        rows, rejected = read_all(client)
    assert sorted(row.account_id for row in rows) == ["none", "usd"]
    (bad,) = rejected
    assert bad.account_id == bad.row_key == "eur"
    assert "amount.currency" in bad.reason and "USD" in bad.reason
    assert "EUR" not in bad.reason  # reasons never carry a value
    assert json.loads(bad.raw)["id"] == "eur"


def test_practice_currency_is_the_one_expected(fhir: FakeFhir) -> None:
    fhir.accounts = [account("cad", [("patient", "current", "10")], currency="CAD"),
                     account("usd", [("patient", "current", "10")])]
    with make_client(fhir, currency="CAD") as client:
        rows, rejected = read_all(client)
    assert [row.account_id for row in rows] == ["cad"]
    assert [r.account_id for r in rejected] == ["usd"]


def test_bad_values_are_rejected_rows(fhir: FakeFhir) -> None:
    fhir.accounts = [
        account("fine", [("patient", "current", "1.00")]),
        account("cents3", [("patient", "current", "1.005")]),
        account("huge", [("patient", "current", "1000000000000.00")]),
        account("nan", [("patient", "current", "NaN")]),
        account("term", [("patient", "45", "1")]),
        account("aggregate", [("guarantor", "current", "1")]),
        account(None, [("patient", "current", "1")]),
    ]
    with make_client(fhir) as client:
        rows, rejected = read_all(client)
    assert [row.account_id for row in rows] == ["fine"]
    reasons = {r.row_key: r.reason for r in rejected}
    assert "more than 2 decimal places" in reasons["cents3"]
    assert "out of range" in reasons["huge"]
    assert "finite" in reasons["nan"]
    assert ".term: unknown code" in reasons["term"]
    assert ".aggregate: unknown code" in reasons["aggregate"]
    assert reasons[None] == "missing field 'id'"
    for r in rejected:
        json.loads(r.raw)  # raw is JSON of the fields read
        assert "Patient account" not in r.raw


def test_exact_amounts_never_floats(fhir: FakeFhir) -> None:
    fhir.accounts = [account("x", [("patient", "current", "0.10"), ("patient", "current",
                                                                    "0.20"),
                                   ("insurance", "60", "999999999.99")])]
    with make_client(fhir) as client:
        (row,), _ = read_all(client)
    assert row.bucket_0_30 == Decimal("0.30")
    assert row.balance_total == Decimal("1000000000.29")


def test_zero_and_empty_accounts_not_listed_on_full_reads(fhir: FakeFhir) -> None:
    fhir.accounts = [account("zero", [("patient", "current", "0"), ("insurance", "30", "0")]),
                     account("empty", []),
                     account("credit", [("patient", "current", "-25.00")])]
    with make_client(fhir) as client:
        rows, rejected = read_all(client)
    assert [row.account_id for row in rows] == ["credit"]
    assert rows[0].balance_total == Decimal("-25.00")
    assert rejected == []


def test_names_display_first_then_included_patient(fhir: FakeFhir) -> None:
    fhir.accounts = [account("a", [("patient", "current", "1")], display="Shown, Name",
                             patient="p1"),
                     account("b", [("patient", "current", "1")], patient="p1"),
                     account("c", [("patient", "current", "1")], patient="missing")]
    fhir.patients = {"p1": patient("p1", "Included", "Pat")}
    with make_client(fhir) as client:
        rows, _ = read_all(client)
    assert {row.account_id: row.account_name for row in rows} == {
        "a": "Shown, Name", "b": "Included, Pat", "c": ""}
    (search,) = fhir.requests_to("account")
    assert search.query["_include"] == ["Account:guarantor"]
