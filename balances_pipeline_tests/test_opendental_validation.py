"""The Open Dental connector's validation of what it reads: money exactly as sent, bad
values rejected row by row (naming the field, never the value), a field missing from a
whole page as schema drift, and rows repeated across pages.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from balances_pipeline.sources.errors import DuplicateRowsError, SchemaDriftError
from balances_pipeline.sources.opendental.rows import parse_money
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    FakeOpenDental,
    Reply,
    aging_row,
    collect,
    make_client,
    patient_row,
    server_fixture,  # noqa: F401 - a pytest fixture
    sim_client,
    simulator_fixture,  # noqa: F401 - a pytest fixture
)


def test_malformed_money_is_rejected_and_valid_rows_still_yielded(
    server: FakeOpenDental,
) -> None:
    server.rows["/reports/Aging"] = [
        aging_row(1),
        aging_row(2, Bal_31_60="twelve"),
        aging_row(3),
        aging_row(4, BalTotal=None),
        aging_row(5, PatientPortion="1e400"),
        aging_row(6, InsPayEst=True),
    ]
    client = make_client(server)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert [row.guarantor_id for row in rows] == [1, 3]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        ("2", "2", "field 'Bal_31_60': not a decimal amount"),
        ("4", "4", "field 'BalTotal': is null"),
        ("5", "5", "field 'PatientPortion': not a decimal amount"),
        ("6", "6", "field 'InsPayEst': not a decimal amount"),
    ]
    first = rejected[0]
    assert first.endpoint == "/reports/Aging"
    raw = json.loads(first.raw)
    assert "SSN" not in raw
    assert raw["Bal_31_60"] == "twelve" and raw["PatNum"] == 2
    assert '"Bal_0_30": 100.0' in first.raw  # numbers kept as the source sent them
    assert "Family2" not in first.reason


def test_money_is_exact_decimal(server: FakeOpenDental) -> None:
    row = '{"PatNum": %d, "patName": "A, B", "Bal_0_30": %s, "Bal_31_60": 0, "Bal_61_90": 0,'
    row += ' "BalOver90": 0, "BalTotal": 0.30, "InsWoEst": 0, "InsPayEst": 0,'
    row += ' "PatientPortion": 0.30}'
    body = "[" + ", ".join([row % (1, "0.30"), row % (2, "0.30000000000000004")]) + "]"
    server.always = Reply(body=body.encode())
    rows, rejected = collect(make_client(server).aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert rows[0].bal_0_30 == Decimal("0.30")
    assert str(rows[0].bal_0_30) == "0.30"
    assert isinstance(rows[0].bal_total, Decimal)
    assert rejected[0].reason == "field 'Bal_0_30': more than 2 decimal places"
    assert '"Bal_0_30": 0.30000000000000004' in rejected[0].raw


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.30"), Decimal("0.30")),
        (Decimal("-12.5"), Decimal("-12.50")),
        (7, Decimal("7.00")),
        ("15.25", Decimal("15.25")),
        (Decimal("1E+2"), Decimal("100.00")),
        (Decimal("999999999.99"), Decimal("999999999.99")),
    ],
)
def test_parse_money_accepts(value: Any, expected: Decimal) -> None:
    assert parse_money(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (Decimal("0.001"), "more than 2 decimal places"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("-Infinity"), "not a finite amount"),
        (Decimal("1000000000"), "amount out of range"),
        (Decimal("1E+30"), "amount out of range"),
        ("1,000.00", "not a decimal amount"),
        ("", "not a decimal amount"),
        (False, "not a decimal amount"),
        ([1], "not a decimal amount"),
    ],
)
def test_parse_money_rejects(value: Any, problem: str) -> None:
    assert parse_money(value) == (None, problem)


def test_bad_ids_and_timestamps_are_rejected(server: FakeOpenDental) -> None:
    server.rows["/patients"] = [
        patient_row(1, 1),
        patient_row("x", 1),
        patient_row(3, "1.5"),
        patient_row(4, 1, DateTStamp="yesterday"),
        patient_row(5, 1, LName=None),
        "not an object",
    ]
    rows, rejected = collect(make_client(server).patient_pages())
    assert [row.pat_num for row in rows] == [1]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        (None, "1", "field 'PatNum': not an integer"),
        ("3", None, "field 'Guarantor': not an integer"),
        ("4", "1", "field 'DateTStamp': not a timestamp (yyyy-MM-dd HH:mm:ss)"),
        ("5", "1", "field 'LName': is null"),
        (None, None, "row is not a JSON object"),
    ]
    assert "Birthdate" not in rejected[0].raw


def test_field_missing_from_some_rows_is_a_rejected_row(server: FakeOpenDental) -> None:
    partial = aging_row(2)
    del partial["BalTotal"]
    server.rows["/reports/Aging"] = [aging_row(1), partial]
    rows, rejected = collect(make_client(server).aging_report_pages(AS_OF))
    assert len(rows) == 1
    assert rejected[0].reason == "missing field 'BalTotal'"


def test_field_missing_from_whole_page_is_schema_drift(server: FakeOpenDental) -> None:
    rows = [aging_row(n) for n in range(1, 151)]
    for row in rows[100:]:
        del row["BalTotal"]
    server.rows["/reports/Aging"] = rows
    with pytest.raises(SchemaDriftError) as raised:
        collect(make_client(server).aging_report_pages(AS_OF))
    assert str(raised.value) == (
        "practice test_practice: source schema changed: field 'BalTotal' missing from every "
        "row of /reports/Aging (offset 100)"
    )


def test_duplicate_key_across_pages(server: FakeOpenDental) -> None:
    # Rows shifted while paging: the first row of page two repeats the last of page one.
    server.rows["/reports/Aging"] = [aging_row(n) for n in range(1, 101)] + [aging_row(100)]
    with pytest.raises(DuplicateRowsError) as raised:
        collect(make_client(server).aging_report_pages(AS_OF))
    message = str(raised.value)
    assert "/reports/Aging" in message and "PatNum 100" in message and "offset 100" in message


def test_duplicate_check_is_per_extraction(server: FakeOpenDental) -> None:
    server.rows["/reports/Aging"] = [aging_row(1)]
    client = make_client(server)
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 1
    assert len(collect(client.aging_report_pages(AS_OF))[0]) == 1


# -- against the bundled simulator ----------------------------------------------------------


def test_simulator_bad_data(simulator: Any) -> None:
    sim, module = simulator
    sim.set_faults("sim_practice", module.Faults(malformed_rows=2))
    rows, rejected = collect(sim_client(sim).aging_report_pages(AS_OF))
    assert len(rejected) == 2 and rows
    assert {r.reason for r in rejected} == {"field 'Bal_0_30': not a decimal amount"}
    sim.set_faults("sim_practice", module.Faults(missing_field="BalTotal"))
    with pytest.raises(SchemaDriftError, match="field 'BalTotal' missing from every row"):
        collect(sim_client(sim).aging_report_pages(AS_OF))
    sim.set_faults("sim_practice", module.Faults(duplicate_rows=True))
    with pytest.raises(DuplicateRowsError, match="returned twice by /patients"):
        collect(sim_client(sim).patient_pages())  # several pages, unlike the aging report
