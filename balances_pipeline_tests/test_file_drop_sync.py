"""A file-drop practice synced through the pipeline: the simulator writes an aging export
(cp1252, `$1,234.56`, `(12.00)`) into a folder, the sync publishes it like any practice's
balances, with its own report date, the file recorded in `sync_runs`, a bad money cell
rejected with the rest published, overrides applied, and a second sync of the same file
recorded as unchanged."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from balances_pipeline.config import load_practices
from balances_pipeline.settings import layout_from_env
from balances_pipeline.simulator import SimPractice
from balances_pipeline.simulator.aging_files import (
    practice_aging_rows,
    source_block,
    write_aging_file,
)
from balances_pipeline.staff.overrides import build_request, set_overrides
from balances_pipeline_tests.conftest import sync_practice, write_practices_file
from balances_pipeline_tests.conftest import warehouse_query as query

REPORT_DAY = date(2026, 11, 27)  # the export's own date, not today
PRACTICE = "sunrise_dental"


@pytest.fixture
def drop(tmp_path: Path, balances_home: Path):
    folder = tmp_path / "drops" / PRACTICE
    folder.mkdir(parents=True)
    rows = practice_aging_rows(SimPractice(PRACTICE, "unused", accounts=90, seed=21),
                               REPORT_DAY)
    path = write_practices_file(tmp_path / "practices.yaml", [{
        "id": PRACTICE, "name": "Sunrise Dental", "timezone": "America/Chicago",
        "max_rejected_fraction": 0.05, "source": source_block(folder),
    }])
    practices = load_practices(path)
    return practices, folder, rows


def settled(path: Path) -> Path:
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    return path


def published() -> dict[str, tuple]:
    return {row[0]: row[1:] for row in query(
        "SELECT account_id, bucket_0_30, bucket_31_60, bucket_61_90, bucket_over_90,"
        " balance_total, insurance_estimate, writeoff_estimate, patient_portion,"
        " bucket_91_120, source_mode, as_of_date FROM account_balances"
        " WHERE practice_id = ?", [PRACTICE])}


def expected(rows: list[dict]) -> dict[str, tuple]:
    """The simulator's own aging rows, mapped as sources.md says (independently)."""
    return {
        str(row["PatNum"]): (
            row["Bal_0_30"], row["Bal_31_60"], row["Bal_61_90"], row["BalOver90"],
            row["BalTotal"], row["InsPayEst"], row["InsWoEst"],
            row["BalTotal"] - row["InsPayEst"] - row["InsWoEst"], None, "file_drop",
            REPORT_DAY,
        )
        for row in rows
    }


def test_a_dropped_file_is_published_exactly_and_recorded(drop) -> None:
    practices, folder, rows = drop
    practice = practices.practice(PRACTICE)
    assert any(row["Bal_0_30"] < 0 for row in rows)  # a credit: "(12.00)" in the file
    path = settled(write_aging_file(rows, folder, REPORT_DAY))
    outcome = sync_practice(practice)
    assert outcome.as_of_date == REPORT_DAY
    assert published() == expected(rows)
    recorded = query("SELECT status, mode, source_mode, source_file, source_checksum,"
                     " as_of_date, requests FROM sync_runs WHERE practice_id = ?", [PRACTICE])
    assert recorded == [("success", "full", "file_drop", path.name,
                         hashlib.sha256(path.read_bytes()).hexdigest(), REPORT_DAY, 0)]
    summary = query("SELECT account_count, balance_total FROM aging_summary")
    assert summary == [(len(rows), sum(row["BalTotal"] for row in rows))]


def test_the_same_file_again_is_unchanged(drop) -> None:
    practices, folder, rows = drop
    practice = practices.practice(PRACTICE)
    settled(write_aging_file(rows, folder, REPORT_DAY))
    sync_practice(practice)
    before = published()
    sync_practice(practice)
    runs = query("SELECT status, mode, accounts, fresh_until FROM sync_runs"
                 " WHERE practice_id = ? ORDER BY started_at", [PRACTICE])
    assert [(status, mode) for status, mode, _, _ in runs] == [("success", "full"),
                                                              ("success", "unchanged")]
    assert runs[1][2] == runs[0][2] == len(rows)
    assert runs[1][3] == runs[0][3]  # the data is as old as the file: freshness not renewed
    assert published() == before
    assert list(layout_from_env().staging_dir(PRACTICE).iterdir()) == []


def test_a_bad_money_cell_is_rejected_and_the_rest_published(drop) -> None:
    practices, folder, rows = drop
    practice = practices.practice(PRACTICE)
    path = write_aging_file(rows, folder, REPORT_DAY)
    table = list(csv.reader(io.StringIO(path.read_bytes().decode("cp1252"), newline="")))
    account = table[5][0]
    table[5][2] = "12,34"  # the 0-30 cell: not money (a decimal comma, or a thousands one?)
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(table)
    path.write_bytes(out.getvalue().encode("cp1252"))
    settled(path)
    sync_practice(practice)
    assert set(published()) == set(expected(rows)) - {account}
    rejected = query("SELECT account_id, reason, raw FROM rejected_rows")
    assert len(rejected) == 1 and rejected[0][0] == account
    assert "0-30" in rejected[0][1]


def test_an_override_on_a_file_drop_account_holds_across_files(drop) -> None:
    practices, folder, rows = drop
    practice = practices.practice(PRACTICE)
    settled(write_aging_file(rows, folder, REPORT_DAY))
    sync_practice(practice)
    account = next(str(r["PatNum"]) for r in rows if r["BalTotal"] > Decimal("50"))
    request = build_request(practices, PRACTICE, account, "10.00", None,
                            "payment plan agreed", "alice")
    set_overrides(layout_from_env(), practices, [request])
    later = date(2026, 11, 28)
    next_rows = practice_aging_rows(SimPractice(PRACTICE, "unused", accounts=90, seed=21),
                                    later)
    settled(write_aging_file(next_rows, folder, later))
    sync_practice(practice)
    effective = query("SELECT patient_portion, is_overridden FROM outstanding_balances"
                      " WHERE practice_id = ? AND account_id = ?", [PRACTICE, account])
    assert effective == [(Decimal("10.00"), True)]
