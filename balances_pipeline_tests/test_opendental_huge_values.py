"""One bad number is one rejected row: integers beyond BIGINT, literals too long for
Python's `int()` and decimals beyond any context are rejected with a reason naming the
field, and the rest of their page is kept (never an exception, never a failed page).

The pages are written as JSON text by hand: `json.dumps` itself refuses the 5000-digit
integers a server can send.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.sources.opendental.rows import ledger_page_parser, parse_aging_page
from balances_pipeline.sources.opendental.values import (
    INT64_MAX,
    decode_json_list,
    parse_integer,
    parse_money,
)
from balances_pipeline_tests.conftest import (
    DEVELOPER_KEY_ENV,
    practice_entry,
    sync_practice,
    warehouse_dicts,
    write_practices_file,
)
from balances_pipeline_tests.opendental_fake import (
    AS_OF,
    AUTHORIZATION,
    CUST_KEY,
    DEV_KEY,
    FakeOpenDental,
    aging_row,
    collect,
    make_client,
    patient_row,
)

HUGE = "9" * 5000  # over Python's 4300-digit limit for int(str)
TWO_TO_64 = 18446744073709551616


class RawFake(FakeOpenDental):
    """Serves pages whose rows are JSON text, so a row can hold any number literal."""

    def _page(self, path: str, query: dict[str, str]) -> bytes:
        offset = int(query.get("Offset", "0"))
        limit = min(int(query.get("Limit", "100")), 100)
        rows = self.rows.get(path, [])[offset : offset + limit]
        return ("[" + ", ".join(rows) + "]").encode()


def row_text(row: dict[str, Any], **literals: str) -> str:
    """`row` as JSON, with some fields' values replaced by raw JSON literals."""
    text = json.dumps({**row, **{name: f"@@{name}@@" for name in literals}})
    for name, literal in literals.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text


@pytest.fixture(name="raw_server")
def raw_server_fixture():
    fake = RawFake().start()
    yield fake
    fake.stop()


def test_patnum_beyond_bigint_is_a_rejected_row(raw_server: RawFake) -> None:
    raw_server.rows["/reports/Aging"] = [
        json.dumps(aging_row(1)),
        row_text(aging_row(0), PatNum=str(TWO_TO_64)),
        row_text(aging_row(0), PatNum=str(INT64_MAX + 1)),
        row_text(aging_row(0), PatNum=str(INT64_MAX)),  # the largest BIGINT is fine
        json.dumps(aging_row(5)),
    ]
    rows, rejected = collect(make_client(raw_server).aging_report_pages(AS_OF))
    assert [row.guarantor_id for row in rows] == [1, INT64_MAX, 5]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        (None, None, "field 'PatNum': integer out of range"),
        (None, None, "field 'PatNum': integer out of range"),
    ]
    assert json.loads(rejected[0].raw)["PatNum"] == TWO_TO_64  # kept as the source sent it


def test_a_5000_digit_integer_is_a_rejected_row_not_a_failed_page(raw_server: RawFake) -> None:
    # Before: int() refused the literal, the page was "not a JSON list" and retried.
    raw_server.rows["/reports/Aging"] = [
        json.dumps(aging_row(1)),
        row_text(aging_row(0), PatNum=HUGE),
        row_text(aging_row(0), PatNum="-" + HUGE),
        row_text(aging_row(4), Bal_0_30=HUGE),
        row_text(aging_row(5), BalTotal=HUGE + ".25"),
        row_text(aging_row(6), InsPayEst="1e1000000"),
        row_text(aging_row(7), InsWoEst="1e99999999999999999999"),
        row_text(aging_row(8), PatientPortion="1e-99999999999999999999"),
        row_text(aging_row(9), Bal_61_90="0." + "1" * 5000),
        row_text(aging_row(10), patName=HUGE),
        json.dumps(aging_row(11)),
    ]
    client = make_client(raw_server)
    rows, rejected = collect(client.aging_report_pages(AS_OF))
    assert [row.guarantor_id for row in rows] == [1, 11]
    assert [(r.row_key, r.reason) for r in rejected] == [
        (None, "field 'PatNum': integer out of range"),
        (None, "field 'PatNum': integer out of range"),
        ("4", "field 'Bal_0_30': amount out of range"),
        ("5", "field 'BalTotal': amount out of range"),
        ("6", "field 'InsPayEst': amount out of range"),
        ("7", "field 'InsWoEst': amount out of range"),
        ("8", "field 'PatientPortion': amount out of range"),  # no context holds it
        ("9", "field 'Bal_61_90': more than 2 decimal places"),
        ("10", "field 'patName': not a string"),
    ]
    assert (client.stats.requests, client.stats.retries, client.stats.pages) == (1, 0, 1)
    assert f'"PatNum": {HUGE}' in rejected[0].raw  # the literal as received
    assert f'"BalTotal": {HUGE}.25' in rejected[3].raw


def test_integer_strings_are_bounded_too(raw_server: RawFake) -> None:
    raw_server.rows["/patients"] = [
        json.dumps(patient_row(1, 1)),
        json.dumps(patient_row(str(TWO_TO_64), 1)),
        json.dumps(patient_row(3, HUGE)),
        json.dumps(patient_row(4, "-" + "0" * 5000 + "1")),
        json.dumps(patient_row("0" * 5000 + "5", 1)),  # leading zeros: the number is small
    ]
    rows, rejected = collect(make_client(raw_server).patient_pages())
    assert [(row.pat_num, row.guarantor_id) for row in rows] == [(1, 1), (5, 1)]
    assert [(r.row_key, r.account_id, r.reason) for r in rejected] == [
        (None, "1", "field 'PatNum': integer out of range"),
        ("3", None, "field 'Guarantor': integer out of range"),
        ("4", None, "field 'Guarantor': not a positive id"),
    ]


def test_ledger_counts_and_ids_are_bounded() -> None:
    parse = ledger_page_parser("/procedurelogs")
    procedure = {
        "ProcNum": 1, "PatNum": 2, "ProcDate": "2026-11-01", "ProcFee": 10.0,
        "UnitQty": 1, "BaseUnits": 0, "ProcStatus": "C",
    }
    rows = decode_json_list(
        ("[" + ", ".join([
            row_text(procedure),
            row_text({**procedure, "ProcNum": 2}, UnitQty=str(TWO_TO_64)),
            row_text({**procedure, "ProcNum": 3}, BaseUnits=HUGE),
            row_text({**procedure, "ProcNum": 4}, ProcFee=HUGE),
        ]) + "]").encode()
    )
    assert rows is not None
    page = parse("p", rows, 0, None)
    assert [row.proc_num for row in page.rows] == [1]
    assert [(r.row_key, r.reason) for r in page.rejected] == [
        ("2", "field 'UnitQty': integer out of range"),
        ("3", "field 'BaseUnits': integer out of range"),
        ("4", "field 'ProcFee': amount out of range"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (INT64_MAX, (INT64_MAX, None)),
        (-INT64_MAX - 1, (-INT64_MAX - 1, None)),
        (INT64_MAX + 1, (None, "integer out of range")),
        (-INT64_MAX - 2, (None, "integer out of range")),
        (str(TWO_TO_64), (None, "integer out of range")),
        (HUGE, (None, "integer out of range")),
        ("-0042", (-42, None)),
        ("4.2", (None, "not an integer")),
        (True, (None, "not an integer")),
        (Decimal("7"), (None, "not an integer")),
    ],
)
def test_parse_integer_is_bounded_to_bigint(value: Any, expected: tuple[Any, Any]) -> None:
    assert parse_integer(value) == expected


@pytest.mark.parametrize(
    "value",
    [Decimal("1e1000000"), Decimal("-1e1000000"), HUGE, HUGE + ".5", 10**5000],
    ids=["exponent", "negative exponent", "integer text", "decimal text", "integer"],
)
def test_parse_money_never_raises_on_huge_amounts(value: Any) -> None:
    assert parse_money(value) == (None, "amount out of range")


def test_money_does_not_depend_on_the_decimal_context() -> None:
    import decimal

    with decimal.localcontext() as context:
        context.prec = 3  # someone else's setting in the same thread
        context.traps[decimal.Inexact] = True
        assert parse_money(Decimal("123456.78")) == (Decimal("123456.78"), None)
        assert parse_money(Decimal("0.001")) == (None, "more than 2 decimal places")


def test_decoding_never_raises_on_huge_literals() -> None:
    body = f'[{{"a": {HUGE}, "b": -{HUGE}, "c": 1e99999999999999999999, "d": NaN}}]'
    [row] = decode_json_list(body.encode()) or [None]
    assert parse_integer(row["a"]) == (None, "integer out of range")
    assert parse_money(row["c"]) == (None, "amount out of range")
    assert parse_money(row["d"]) == (None, "not a finite amount")
    [aging] = decode_json_list(f"[{row_text(aging_row(0), PatNum=HUGE)}]".encode()) or [None]
    page = parse_aging_page("p", [aging], 0)
    assert [r.reason for r in page.rejected] == ["field 'PatNum': integer out of range"]
    assert "9999" not in repr(aging["PatNum"])  # the value never shows in a repr


# -- a whole sync -----------------------------------------------------------------------------


def test_a_sync_with_a_patnum_beyond_bigint_keeps_the_other_accounts(
    tmp_path: Path, balances_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: OverflowError from the staging insert, naming neither field nor row.
    monkeypatch.setenv(DEVELOPER_KEY_ENV, DEV_KEY)
    monkeypatch.setenv("TEST_BIG_DENTAL_CUSTOMER_KEY", CUST_KEY)
    monkeypatch.setenv("BALANCES_AS_OF", AS_OF.isoformat())
    fake = RawFake().start()
    try:
        fake.rows["/reports/Aging"] = [json.dumps(aging_row(n)) for n in range(1, 100)]
        fake.rows["/reports/Aging"] += [
            row_text(aging_row(0), PatNum=str(TWO_TO_64)),
            row_text(aging_row(0), PatNum=HUGE),
        ]
        entry = practice_entry("big_dental", fake.url, max_rejected_fraction=0.05)
        practice = load_practices(
            write_practices_file(tmp_path / "practices.yaml", [entry])
        ).practice("big_dental")
        outcome = sync_practice(practice)
        assert len(fake.seen) == 2 and all(
            seen.path == "/reports/Aging" for seen in fake.seen
        )
    finally:
        fake.stop()
    assert outcome.accounts == 99
    rejected = warehouse_dicts("SELECT row_key, reason FROM rejected_rows ORDER BY reason")
    assert [row["reason"] for row in rejected] == ["field 'PatNum': integer out of range"] * 2
    assert AUTHORIZATION not in repr(outcome)
