"""Money cells of aging files: every accepted form parsed exactly, everything else refused
with a reason that never repeats the cell. Expected values are written out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from balances_pipeline.sources.file_drop.money import parse_money_cell

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("cell", "expected"), [
    ("0", "0.00"),
    ("0.00", "0.00"),
    ("12", "12.00"),
    ("12.5", "12.50"),
    ("1234.56", "1234.56"),
    ("1,234.56", "1234.56"),
    ("$1,234.56", "1234.56"),
    ("$12,345,678.09", "12345678.09"),
    ("  $7.10 ", "7.10"),
    ("\t$7.10", "7.10"),
    ("-12.00", "-12.00"),
    ("-$12.00", "-12.00"),
    ("$-12.00", "-12.00"),
    ("(12.00)", "-12.00"),
    ("($1,234.56)", "-1234.56"),
    ("(0.01)", "-0.01"),
    ("-0.00", "0.00"),
    ("999999999.99", "999999999.99"),
    ("$999,999,999.99", "999999999.99"),
])
def test_amounts_parse_exactly(cell: str, expected: str) -> None:
    amount, problem = parse_money_cell(cell)
    assert problem is None
    assert amount == Decimal(expected)
    assert str(amount) == expected  # exactly cents, no float ever


@pytest.mark.parametrize("cell", ["", "   ", "\t"])
def test_an_empty_cell_is_no_amount(cell: str) -> None:
    assert parse_money_cell(cell) == (None, None)


@pytest.mark.parametrize(("cell", "problem"), [
    ("12,34", "comma"),
    ("1,2345.00", "comma"),
    ("1234,567", "comma"),
    ("1.234", "more than 2 decimal places"),
    ("12.000", "more than 2 decimal places"),
    ("abc", "not an amount"),
    ("1e5", "not an amount"),
    ("NaN", "not an amount"),
    ("Infinity", "not an amount"),
    ("+12.00", "not an amount"),
    ("12-", "not an amount"),
    ("12.", "not an amount"),
    (".50", "not an amount"),
    ("$ 12.00", "not an amount"),
    ("1 234.00", "not an amount"),
    ("€12.00", "non-ASCII"),
    ("١٢", "non-ASCII"),  # Arabic-Indic digits: Decimal would take them
    ("１２", "non-ASCII"),  # full-width digits
    ("12\u00a0000", "non-ASCII"),
    ("--12", "not an amount"),
    ("-$-12", "two minus signs"),
    ("(-12.00)", "not an amount"),
    ("(12.00", "not an amount"),
    ("1000000000.00", "out of range"),
    ("$1,000,000,000", "out of range"),
    ("12\x00", "not an amount"),
])
def test_other_text_is_refused_without_repeating_it(cell: str, problem: str) -> None:
    amount, reason = parse_money_cell(cell)
    assert amount is None
    assert reason is not None and problem in reason
    assert cell.strip() not in reason
