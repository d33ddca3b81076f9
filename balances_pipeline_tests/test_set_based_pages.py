"""Set-based page validation (page_sql.py, staging.append_json_bodies) never disagrees with
the row-by-row reader (rows.py): a page it calls plainly valid is one the row-by-row
reader accepts in full, with the same values; every other page goes the row-by-row way.

The oracle is the row-by-row reader itself, run on each generated page; the pages mix
values every field accepts with the awkward ones (number literals past a double's
precision, whitespace Python strips, impossible dates, enum numbers, keys twice).
"""

from __future__ import annotations

import json
import sys
from operator import attrgetter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balances_pipeline.sources.opendental import rows as od_rows
from balances_pipeline.sources.opendental.page_sql import (
    REST_PAGE_SQL,
    SHORT_QUERY_PAGE_SQL,
    SPACE_CHARACTERS,
    scan_json_list,
)
from balances_pipeline.sources.opendental.shortquery import to_rest_row
from balances_pipeline.storage import duck
from balances_pipeline.storage.staging import STAGING_TABLES, StagingDatabase

MISSING = object()  # the field is left out of the row

IDS = ["1", "42", "100234", '"42"', '"007"', "0", "-5", "true", "null", '"x"', "12.0",
       "123456789012345", "9223372036854775807", "9223372036854775808", "1e3", '" 5"', "[7]",
       '{"PatNum": 7}', '"1\\u0032"', "false"]
COUNTS = ["0", "1", "3", '"2"', "-1", "1.5", "null", '"a"', "[0]", "true"]
MONEY = ["12.5", "12.50", '"12.50"', '"130"', "130", "-3.25", "1.005", '"1.005"', "-0",
         "-0.0", "999999999.99", "1000000000", '"abc"', "true", "null", "1e2", "12.345",
         "0.1000000000000000055511151231257827", '"12.5 "', '"-0.10"', "0.1", "[1]",
         "4.35", "0.07", '"0.07"', "1E-2", '{"v": 1}', '"1\\u0032.5"', "false"]
TEXT = ['"Smith"', '" Smith"', '"Smith\\u00a0"', '"\\u3000x"', '""', "5", "null",
        '"\\u00d1\\u00fa\\u00f1ez"', '"a\\tb"', '"x "', '"\\ud800"', '"O\'Neil"', '"Li"']
REST_DAY = ['"2025-01-31"', '"2025-02-30"', '"0001-01-01"', '"0000-01-01"', '"2025-1-5"',
            '"20250105"', '"2025-W01-1"', "5", "null", '"2025-01-31T00:00:00"', '"2024-02-29"',
            '["2025-01-31"]', '{"d": "2025-01-31"}', "true", "20250131"]
MIDNIGHT = ['"2025-01-31T00:00:00"', '"2025-01-31 00:00:00"', '"2025-01-31T10:00:00"',
            '"2025-01-31"', '"0001-01-01T00:00:00"', '"2025-02-30T00:00:00"', "null", "7"]
STAMP = ['"2025-01-31 10:00:00"', '"2025-01-31T23:59:59"', '"2025-01-31 24:00:00"',
         '"0001-01-01 00:00:00"', '"2025-01-31 10:00:60"', "null", MISSING, '"2025-01-31"',
         "5", '"2025-02-30 10:00:00"', '"2025-1-31 1:00:00"', '"null"', "true",
         '["2025-01-31 10:00:00"]', '""']
PROC_STATUS = ['"C"', '"TP"', '" C"', "5", '"EC"', "null"]
ENUM = ['"1"', '"2"', '"02"', '"9"', "2", '"C"', "null", '" 2"', '"3"', '"0"', '"6"']

FIELDS: dict[str, list[tuple[str, list]]] = {
    od_rows.AGING_ENDPOINT: [("PatNum", IDS), ("patName", TEXT)] + [
        (name, MONEY) for name in od_rows.AGING_FIELDS[2:]
    ],
    od_rows.PATIENTS_ENDPOINT: [("PatNum", IDS), ("Guarantor", IDS), ("LName", TEXT),
                                ("FName", TEXT), ("PatStatus", TEXT), ("DateTStamp", STAMP)],
    od_rows.PROCEDURES_ENDPOINT: [
        ("ProcNum", IDS), ("PatNum", IDS), ("ProcDate", REST_DAY), ("ProcFee", MONEY),
        ("UnitQty", COUNTS), ("BaseUnits", COUNTS), ("ProcStatus", PROC_STATUS),
        ("DateTStamp", STAMP)],
    od_rows.CLAIMPROCS_ENDPOINT: [
        ("ClaimProcNum", IDS), ("ProcNum", COUNTS), ("ClaimNum", COUNTS), ("PatNum", IDS),
        ("Status", TEXT), ("InsPayEst", MONEY), ("InsPayAmt", MONEY), ("WriteOff", MONEY),
        ("WriteOffEst", MONEY), ("DateCP", REST_DAY), ("SecDateTEdit", STAMP)],
    od_rows.PAYSPLITS_ENDPOINT: [("SplitNum", IDS), ("PatNum", IDS), ("SplitAmt", MONEY),
                                 ("DatePay", REST_DAY), ("SecDateTEdit", STAMP)],
    od_rows.ADJUSTMENTS_ENDPOINT: [("AdjNum", IDS), ("PatNum", IDS), ("AdjDate", REST_DAY),
                                   ("AdjAmt", MONEY), ("SecDateTEdit", STAMP)],
}
SHORT_QUERY_VALUES = {  # ShortQuery's own shapes: dates at midnight, enums as numbers
    "ProcDate": MIDNIGHT, "DateCP": MIDNIGHT, "DatePay": MIDNIGHT, "AdjDate": MIDNIGHT,
    "ProcStatus": ENUM, "Status": ENUM, "PatStatus": ENUM,
}
CASES = [(endpoint, False) for endpoint in FIELDS] + [
    (endpoint, True) for endpoint in SHORT_QUERY_PAGE_SQL
]


def _valid(pool: list) -> object:
    return pool[0]


def _body(rows: list[dict[str, object]]) -> bytes:
    objects = []
    for row in rows:
        members = [f"{json.dumps(name)}: {literal}" for name, literal in row.items()
                   if literal is not MISSING]
        objects.append("{" + ", ".join(members) + "}")
    return ("[" + ", ".join(objects) + "]").encode("utf-8")


def _row_by_row(endpoint: str, short_query: bool, body: bytes):
    decoded = od_rows_decode(body)
    if short_query:
        decoded = [to_rest_row(endpoint, row) for row in decoded]
    if endpoint == od_rows.AGING_ENDPOINT:
        return od_rows.parse_aging_page("p", decoded, 0, None)
    if endpoint == od_rows.PATIENTS_ENDPOINT:
        return od_rows.parse_patient_page("p", decoded, 0, None)
    return od_rows.ledger_page_parser(endpoint)("p", decoded, 0, None)


def od_rows_decode(body: bytes) -> list:
    from balances_pipeline.sources.opendental.values import decode_json_list

    decoded = decode_json_list(body)
    assert decoded is not None
    return decoded


def _pools(endpoint: str, short_query: bool) -> list[tuple[str, list]]:
    return [(name, SHORT_QUERY_VALUES.get(name, pool) if short_query else pool)
            for name, pool in FIELDS[endpoint]]


@st.composite
def pages(draw, endpoint: str, short_query: bool) -> bytes:
    pools = _pools(endpoint, short_query)
    count = draw(st.integers(1, 6))
    rows = []
    for number in range(count):
        row: dict[str, object] = {}
        for index, (name, pool) in enumerate(pools):
            if index == 0 and not draw(st.booleans()):
                row[name] = str(1000 + number)  # a distinct key, mostly
            elif draw(st.integers(0, 3)) == 0:
                row[name] = draw(st.sampled_from([*pool, MISSING]))
            else:
                row[name] = _valid(pool)
        rows.append(row)
    return _body(rows)


@pytest.fixture()
def staging(tmp_path: Path):
    database = StagingDatabase(duck.DuckSettings("64MB", tmp_path / "tmp"), tmp_path, "sync")
    yield database
    database.close()


def _sql(endpoint: str, short_query: bool):
    return (SHORT_QUERY_PAGE_SQL if short_query else REST_PAGE_SQL)[endpoint]


def _staged(staging: StagingDatabase, relation: str) -> list[tuple]:
    columns = ", ".join(STAGING_TABLES[relation].names)
    return staging.con.execute(f"SELECT {columns} FROM {relation}").fetchall()  # noqa: S608


@pytest.mark.parametrize(("endpoint", "short_query"), CASES)
def test_a_page_taken_set_based_is_what_the_row_by_row_reader_reads(
    endpoint: str, short_query: bool, tmp_path: Path
) -> None:
    sql = _sql(endpoint, short_query)
    relation = sql.relation
    taken: list[int] = []

    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=pages(endpoint, short_query))
    def check(body: bytes) -> None:
        exact_error = None
        try:
            exact = _row_by_row(endpoint, short_query, body)
        except Exception as error:  # noqa: BLE001 - a duplicate key raises: never plain
            exact, exact_error = None, error
        count = scan_json_list(body)
        if count is None:
            return
        staging = StagingDatabase(duck.DuckSettings("64MB", tmp_path / "tmp"), tmp_path,
                                  f"s{len(taken)}")
        try:
            doubtful = staging.append_json_bodies(sql, [body])
            staged = _staged(staging, relation)
        finally:
            staging.remove()
        if doubtful:
            assert staged == []
            return
        taken.append(count)
        assert exact_error is None, f"taken set-based, but row by row: {exact_error}"
        assert exact.rejected == [], f"taken set-based, but rejected: {exact.rejected}"
        values = attrgetter(*STAGING_TABLES[relation].names)
        assert sorted(staged, key=repr) == sorted(map(values, exact.rows), key=repr)

    check()
    assert taken, "no generated page was taken set-based: the fast path went untested"


def _valid_rows(endpoint: str, short_query: bool, count: int) -> list[dict[str, object]]:
    return [{name: (str(500 + number) if index == 0 else _valid(pool))
             for index, (name, pool) in enumerate(_pools(endpoint, short_query))}
            for number in range(count)]


@pytest.mark.parametrize(("endpoint", "short_query"), CASES)
def test_pages_of_valid_rows_go_set_based(endpoint, short_query, staging) -> None:
    body = _body(_valid_rows(endpoint, short_query, 100))
    sql = _sql(endpoint, short_query)
    exact = _row_by_row(endpoint, short_query, body)
    assert scan_json_list(body) == 100
    assert staging.append_json_bodies(sql, [body]) == set()
    values = attrgetter(*STAGING_TABLES[sql.relation].names)
    assert len(exact.rows) == 100
    assert sorted(_staged(staging, sql.relation), key=repr) == sorted(
        map(values, exact.rows), key=repr)


@pytest.mark.parametrize(("endpoint", "short_query"), CASES)
def test_a_page_with_one_doubtful_row_is_left_whole_to_the_row_by_row_reader(
    endpoint, short_query, staging
) -> None:
    sql = _sql(endpoint, short_query)
    good = _body(_valid_rows(endpoint, short_query, 3))
    rows = _valid_rows(endpoint, short_query, 3)
    money_or_id = next(name for name, pool in _pools(endpoint, short_query)[1:]
                       if pool in (MONEY, IDS))
    rows[1][money_or_id] = '"1.005"' if money_or_id in dict(FIELDS[endpoint]) and dict(
        FIELDS[endpoint])[money_or_id] is MONEY else '"-5"'
    bad = _body(rows)
    assert _row_by_row(endpoint, short_query, bad).rejected, "the row is one rows.py rejects"
    assert staging.append_json_bodies(sql, [good, bad]) == {1}
    assert len(_staged(staging, sql.relation)) == 3  # the good page only


def test_space_characters_are_exactly_those_python_strips() -> None:
    assert SPACE_CHARACTERS == "".join(
        char for char in map(chr, range(sys.maxunicode + 1)) if char.isspace()
    )


@pytest.mark.parametrize("body", [
    b'[{"a": 1e5}]', b'[{"a": 12345678901234567}]', b'[{"a": "\\ud800"}]',
    b'[{"a": 1, "a": 2}]', b'[1, 2]', b'{"a": 1}', b'[{"a": NaN}]x', b'\xff',
])
def test_bodies_duckdb_would_read_differently_go_row_by_row(body: bytes) -> None:
    assert scan_json_list(body) is None


def test_escaped_letters_in_names_are_no_exponent() -> None:
    # json.dumps (and many servers) escape non-ASCII: "No\u00e9" holds "00e9", not 0e9.
    assert scan_json_list(b'[{"patName": "No\\u00e9l", "Bal_0_30": 12.5}]') == 1
