"""FileDropClient on real files in tmp folders: which file, how it is decoded and mapped,
what is rejected and what fails the read."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from balances_pipeline.config import PracticesFileError
from balances_pipeline.sources.clients import open_client
from balances_pipeline.sources.errors import SchemaDriftError, SourceError
from balances_pipeline.sources.file_drop.reader import FileDropClient
from balances_pipeline.sources.rows import SourceBalanceRow
from balances_pipeline_tests.file_drop_helpers import (
    COLUMNS,
    HEADER,
    HOUR,
    csv_text,
    drop,
    practice,
    practice_entry,
    practices_file,
)

D = Decimal


def read_all(client: FileDropClient):
    rows, rejected, pages = [], [], []
    for iterator in client.account_balance_pages(None):
        for page in iterator:
            pages.append(page)
            rows += page.rows
            rejected += page.rejected
    return rows, rejected, pages


def read(tmp_path: Path, folder: Path, **overrides):
    with FileDropClient(practice(tmp_path, folder, **overrides)) as client:
        rows, rejected, _ = read_all(client)
        return rows, rejected, client.facts()


def test_every_column_mapped_unsplit(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text(
        '1001,"Ashgrove, Avery","$1,234.56",$20.00,(3.50),$400.00,"$1,651.06",$100.00,$5.25',
        '00042,Quinn Birchwell,0,0,0,0,0,,',
    ))
    rows, rejected, facts = read(tmp_path, folder)
    assert rejected == []
    assert rows == [
        SourceBalanceRow(
            account_id="1001", account_name="Ashgrove, Avery", bucket_0_30=D("1234.56"),
            bucket_31_60=D("20.00"), bucket_61_90=D("-3.50"), bucket_91_120=None,
            bucket_over_120=None, bucket_over_90=D("400.00"), balance_total=D("1651.06"),
            insurance_estimate=D("100.00"), writeoff_estimate=D("5.25"),
            patient_portion=None, has_split=True, active=True,
        ),
        SourceBalanceRow(
            account_id="00042", account_name="Quinn Birchwell", bucket_0_30=D("0.00"),
            bucket_31_60=D("0.00"), bucket_61_90=D("0.00"), bucket_91_120=None,
            bucket_over_120=None, bucket_over_90=D("0.00"), balance_total=D("0.00"),
            insurance_estimate=D("0.00"), writeoff_estimate=D("0.00"),
            patient_portion=None, has_split=True, active=True,
        ),
    ]
    assert facts.as_of_date is None  # no as_of_column: the sync's own date
    assert facts.read_path == "file"


def test_over_90_split_and_no_total_column(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    columns = {"account_id": "Acct", "bucket_0_30": "Current", "bucket_31_60": "30",
               "bucket_61_90": "60", "bucket_91_120": "90", "bucket_over_120": "120+"}
    drop(folder, "aging_1.csv",
         "Acct;Current;30;60;90;120+;Notes\n7;1.00;2.00;3.00;4.00;5.00;anything at all\n")
    rows, rejected, _ = read(tmp_path, folder, columns=columns, delimiter=";")
    assert rejected == []
    [row] = rows
    assert (row.bucket_0_30, row.bucket_31_60, row.bucket_61_90) == (D("1.00"), D("2.00"),
                                                                     D("3.00"))
    assert (row.bucket_91_120, row.bucket_over_120, row.bucket_over_90) == (D("4.00"),
                                                                           D("5.00"), None)
    assert row.balance_total is None  # the sum of the buckets, downstream
    assert row.account_name == ""
    assert (row.insurance_estimate, row.writeoff_estimate) == (D("0.00"), D("0.00"))
    assert row.has_split is False  # no insurance estimate column: no patient/insurance split


def test_an_empty_total_is_the_buckets_sum_only_when_the_buckets_give_it(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text("1,A,1.00,2.00,3.00,4.00,,,"))
    [row], _, _ = read(tmp_path, folder)
    assert row.balance_total is None
    only_total = {"account_id": "Guarantor ID", "balance_total": "Total Balance"}
    drop(folder, "aging_1.csv", csv_text("1,A,1.00,2.00,3.00,4.00,,,", "2,B,,,,,9.00,,"))
    rows, [rejected], _ = read(tmp_path, folder, columns=only_total)
    assert [r.account_id for r in rows] == ["2"]
    assert rows[0].bucket_0_30 == D("0.00") and rows[0].balance_total == D("9.00")
    assert "balance_total" in rejected.reason and rejected.row_key == "1"


def test_a_bad_money_cell_rejects_its_row_and_keeps_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text(
        "1,A,$1.00,0,0,0,$1.00,0,0,secret note",
        "2,B,\"12,34\",0,0,0,$1.00,0,0,secret note",
        "3,C,$3.00,0,0,0,$3.00,1.234,0,secret note",
        "4,D,$4.00,0,0,0,$4.00,0,0,",
        header=HEADER + ",Notes",
    ))
    rows, rejected, _ = read(tmp_path, folder)
    assert [r.account_id for r in rows] == ["1", "4"]
    assert [(r.row_key, r.account_id) for r in rejected] == [("2", "2"), ("3", "3")]
    assert rejected[0].reason == "line 3: '0-30' (bucket_0_30): not an amount (a comma that" \
        " does not separate thousands)"
    assert rejected[1].reason == "line 4: 'Ins Est' (insurance_estimate): more than 2 decimal" \
        " places"
    raw = json.loads(rejected[0].raw)
    assert set(raw) == set(COLUMNS.values())  # mapped cells only: never the Notes column
    assert raw["0-30"] == "12,34"
    assert all("12,34" not in r.reason for r in rejected)


def test_account_ids_empty_controlled_duplicated_and_short_rows(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text(
        "1,A,1,0,0,0,1,0,0",
        ",Total,1,0,0,0,1,0,0",
        "5\u202e,B,1,0,0,0,1,0,0",
        "1,A again,2,0,0,0,2,0,0",
        "6,C,1,0,0,0,1,0",
        "7,Bad\x1bname,1,0,0,0,1,0,0",
        ",,,,,,,,",  # an empty row: skipped
        "",
    ))
    rows, rejected, _ = read(tmp_path, folder)
    assert [r.account_id for r in rows] == ["1"]
    assert [(r.row_key, r.reason) for r in rejected] == [
        (None, "line 3: account_id is empty"),
        (None, "line 4: account_id contains a control or formatting character (U+202E)"),
        ("1", "line 5: duplicate account_id (first on line 2)"),
        (None, "line 6: row has 8 cells, the header 9"),
        ("7", "line 7: account_name contains a control or formatting character (U+001B)"),
    ]


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8-sig"])
def test_encodings(tmp_path: Path, encoding: str) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text('1,"Ibáñez, Noé",1,0,0,0,1,0,0'), encoding=encoding)
    if encoding == "utf-8-sig":
        assert (folder / "aging_1.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    [row], rejected, _ = read(tmp_path, folder, encoding=encoding)
    assert rejected == [] and row.account_name == "Ibáñez, Noé"


def test_a_utf8_bom_under_plain_utf8_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0"), encoding="utf-8-sig")
    [row], _, _ = read(tmp_path, folder)  # encoding: utf-8 (default)
    assert row.account_id == "1"


def test_encoding_mismatches_fail_with_the_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0", "2,Peña,1,0,0,0,1,0,0"),
         encoding="cp1252")
    with pytest.raises(SourceError) as error:
        read(tmp_path, folder, encoding="utf-8")
    assert str(error.value) == ("practice sunrise: aging_1.csv: line 3 is not valid utf-8 "
                                "(byte 0xf1); check source.encoding")
    drop(folder, "aging_1.csv", csv_text("1,Peña,1,0,0,0,1,0,0"), encoding="utf-8-sig")
    with pytest.raises(SourceError, match="UTF-8 byte order mark.*utf-8-sig"):
        read(tmp_path, folder, encoding="cp1252")
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0").encode() + b"\x81\r\n")
    with pytest.raises(SourceError, match="line 3 is not valid cp1252"):
        read(tmp_path, folder, encoding="cp1252")


def test_a_file_still_being_written_is_not_taken(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text("1,Old,1,0,0,0,1,0,0"), age_seconds=2 * HOUR)
    drop(folder, "aging_2.csv", csv_text("1,New,2,0,0,0,2,0,0", "2,Half"), age_seconds=1)
    [row], _, facts = read(tmp_path, folder)
    assert (row.account_name, facts.source_file) == ("Old", "aging_1.csv")
    (folder / "aging_1.csv").unlink()
    with pytest.raises(SourceError) as error:
        read(tmp_path, folder)
    assert str(error.value) == (
        f"practice sunrise: no settled file matching 'aging_*.csv' in {folder} (1 still "
        "being written: modified less than 60 s ago)")
    [row], _, _ = read(tmp_path, folder, settle_seconds=0)
    assert row.account_name == "New"


def test_the_newest_settled_file_is_chosen(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    text = csv_text("1,A,1,0,0,0,1,0,0")
    drop(folder, "aging_c.csv", text, age_seconds=3 * HOUR)
    drop(folder, "aging_a.csv", text, age_seconds=HOUR)
    drop(folder, "aging_b.csv", text, age_seconds=HOUR)  # same mtime as a: the name decides
    drop(folder, "aging_z.csv", text, age_seconds=2 * HOUR)
    drop(folder, ".aging_new.csv", text, age_seconds=100)  # hidden: an upload in progress
    drop(folder, "other_new.csv", text, age_seconds=100)  # does not match the pattern
    (folder / "aging_zz.csv").mkdir()  # a folder
    os.symlink(tmp_path / "elsewhere.csv", folder / "aging_zzz.csv")  # a link: never followed
    drop(tmp_path, "elsewhere.csv", text, age_seconds=100)
    os.utime(folder / "aging_b.csv", ns=((folder / "aging_a.csv").stat().st_mtime_ns,) * 2)
    _, _, facts = read(tmp_path, folder)
    assert facts.source_file == "aging_b.csv"
    with FileDropClient(practice(tmp_path, folder)) as client:
        assert client.check_connection() == {
            "practice_id": "sunrise", "folder": str(folder), "pattern": "aging_*.csv",
            "matching_files": 4, "settled_files": 4, "still_being_written": 0,
            "file": "aging_b.csv", "bytes": len(text), "rows": 1, "rejected": 0,
        }


def test_checksum_is_the_sha256_of_the_bytes_read(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    path = drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0"))
    _, _, facts = read(tmp_path, folder)
    assert facts.source_checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert facts.source_file == "aging_1.csv"


def test_report_date_column(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    header = HEADER + ",Report Date"
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0,03/01/2025",
                                         "2,B,1,0,0,0,1,0,0, 3/1/2025", header=header))
    options = {"as_of_column": "Report Date", "date_format": "%m/%d/%Y"}
    rows, _, facts = read(tmp_path, folder, **options)
    assert len(rows) == 2 and facts.as_of_date == date(2025, 3, 1)

    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0,03/01/2025",
                                         "2,B,1,0,0,0,1,0,0,03/02/2025", header=header))
    with pytest.raises(SourceError, match="line 3: 'Report Date' .* is 2025-03-02, earlier"
                                          " rows say 2025-03-01"):
        read(tmp_path, folder, **options)
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0,2025-03-01", header=header))
    with pytest.raises(SourceError, match="line 2: 'Report Date' .* not a date in the format"):
        read(tmp_path, folder, **options)
    future = (date.today() + timedelta(days=3)).strftime("%m/%d/%Y")
    drop(folder, "aging_1.csv", csv_text(f"1,A,1,0,0,0,1,0,0,{future}", header=header))
    with pytest.raises(SourceError, match="in the future"):
        read(tmp_path, folder, **options)


def test_a_missing_or_repeated_header_is_schema_drift(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,0,0", header=HEADER.replace(
        ",Total Balance", "")))
    with pytest.raises(SchemaDriftError) as error:
        read(tmp_path, folder)
    assert str(error.value) == ("practice sunrise: aging_1.csv: header 'Total Balance' "
                                "(columns.balance_total) not found in the file's header row")
    drop(folder, "aging_1.csv", csv_text("1,A,1,0,0,0,1,0,0,1", header=HEADER + ",0-30"))
    with pytest.raises(SchemaDriftError, match="'0-30' .* appears 2 times"):
        read(tmp_path, folder)
    drop(folder, "aging_1.csv", "")
    with pytest.raises(SchemaDriftError, match="no header row"):
        read(tmp_path, folder)


def test_a_header_only_file_has_no_accounts(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text())
    rows, rejected, facts = read(tmp_path, folder)
    assert rows == [] and rejected == [] and facts.source_file == "aging_1.csv"


def test_an_open_quote_fails_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text('1,"A,1,0,0,0,1,0,0', "2,B,1,0,0,0,1,0,0"))
    with pytest.raises(SourceError, match="aging_1.csv line 2: a quoted field is not closed"):
        read(tmp_path, folder)


def test_pages_of_5000_and_stats(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text(*(f"{n},N{n},1.00,0,0,0,1.00,0,0"
                                           for n in range(12001))))
    with open_client(practice(tmp_path, folder)) as client:
        rows, rejected, pages = read_all(client)
        assert [len(page.rows) for page in pages] == [5000, 5000, 2001]
        assert [page.offset for page in pages] == [0, 5000, 10000]
        assert client.stats.as_dict() == {"requests": 0, "retries": 0, "pages": 3}
        assert client.server_clock is None
    assert len(rows) == 12001 and rejected == []


def test_folder_problems_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "not_mounted"
    with pytest.raises(SourceError) as error:
        read(tmp_path, missing)
    assert str(error.value) == f"practice sunrise: folder {missing} does not exist"
    drop(tmp_path, "aging_x.csv", "x")
    with pytest.raises(SourceError, match="is not a folder"):
        read(tmp_path, tmp_path / "aging_x.csv")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"date_format": "%m/%Y"}, "source.date_format: must give a year, a month and a day"),
    ({"delimiter": '"'}, "source.delimiter: must be one printable character"),
    ({"encoding": "rot13"}, "source.encoding: 'rot13' is not a text encoding"),
    ({"encoding": "klingon"}, "source.encoding: unknown encoding 'klingon'"),
    ({"pattern": "../*.csv"}, "source.pattern: must be a file name pattern"),
    ({"as_of_column": "Guarantor"}, "as_of_column must not be a header mapped in columns"),
    ({"columns": {"account_id": "Id"}}, "columns must give a balance"),
    ({"colums": {}}, "source.colums: unknown key"),
])
def test_config_errors_name_the_key(tmp_path: Path, overrides: dict, message: str) -> None:
    entry = practice_entry("sunrise", tmp_path)
    entry["source"].update(overrides)
    with pytest.raises(PracticesFileError) as error:
        practices_file(tmp_path / "p.yaml", [entry])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_relative_folder_is_relative_to_the_practices_file(tmp_path: Path) -> None:
    entry = practice_entry("sunrise", tmp_path)
    entry["source"]["folder"] = "drops/sunrise"
    (tmp_path / "config").mkdir()
    loaded = practices_file(tmp_path / "config" / "p.yaml", [entry])
    assert loaded.practices[0].source.folder == (tmp_path / "config" / "drops" / "sunrise")


def test_source_check_reports_counts_only(tmp_path: Path) -> None:
    from balances_pipeline.sources.check import check_source

    folder = tmp_path / "drop"
    drop(folder, "aging_1.csv", csv_text('1,"Secretname, Avery",1,0,0,0,1,0,0', "2,B,x,0"))
    practices = practices_file(tmp_path / "p.yaml", [practice_entry("sunrise", folder)])
    lines = check_source(practices, "sunrise")
    assert lines[0] == f"practice sunrise: folder {folder} readable"
    assert "  file: aging_1.csv" in lines and "  rows: 1" in lines and "  rejected: 1" in lines
    assert not any("Secretname" in line for line in lines)
