"""Aging reports written as files, as a PMS without an API exports them (Dentrix, Eaglesoft).

From a simulated practice's aging report (`aging.py`, the same rows `/reports/Aging`
serves), a CSV such as an office's scheduled export drops into a folder:

- headers "Guarantor ID", "Guarantor", "0-30", "31-60", "61-90", "90+", "Total Balance",
  "Ins Est", "W/O Est", "Patient Portion" (a column the pipeline does not map), "Report
  Date";
- money as "$1,234.56", negatives in parentheses "(12.00)", a zero write-off estimate left
  blank as exports do;
- the report date as "%m/%d/%Y"; cp1252 (Windows) by default, CRLF line ends;
- written in place under its final name, as a PMS does, not renamed into place: so a
  reader can meet it half written. `write_seconds` spreads the write over that time and
  `complete=False` stops halfway (the file stays cut in the middle of a row), to test
  settling.

`AGING_FILE_COLUMNS` and `source_block()` give the practices-file `source` that reads these
files. Names come from the simulator's seeded generator: synthetic, some accented.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from balances_pipeline.simulator.server import SimPractice, _PracticeRuntime

HEADERS = ("Guarantor ID", "Guarantor", "0-30", "31-60", "61-90", "90+", "Total Balance",
           "Ins Est", "W/O Est", "Patient Portion", "Report Date")
AGING_FILE_COLUMNS = {
    "account_id": "Guarantor ID",
    "account_name": "Guarantor",
    "bucket_0_30": "0-30",
    "bucket_31_60": "31-60",
    "bucket_61_90": "61-90",
    "bucket_over_90": "90+",
    "balance_total": "Total Balance",
    "insurance_estimate": "Ins Est",
    "writeoff_estimate": "W/O Est",
}
DATE_FORMAT = "%m/%d/%Y"
ENCODING = "cp1252"
WRITE_CHUNKS = 10


class AgingFileError(ValueError):
    """Bad arguments for writing an aging file (one line)."""


def default_file_name(as_of: date) -> str:
    return f"aging_{as_of:%Y%m%d}.csv"


def source_block(folder: Path, settle_seconds: float = 60) -> dict[str, Any]:
    """The practices-file `source` of a practice whose files this module writes."""
    return {
        "type": "file_drop",
        "folder": str(folder),
        "pattern": "aging_*.csv",
        "columns": dict(AGING_FILE_COLUMNS),
        "as_of_column": "Report Date",
        "date_format": DATE_FORMAT,
        "encoding": ENCODING,
        "settle_seconds": settle_seconds,
    }


def format_money(amount: Decimal) -> str:
    """`$1,234.56`; a negative amount in parentheses, `(12.00)`."""
    if amount < 0:
        return f"({-amount:,.2f})"
    return f"${amount:,.2f}"


def practice_aging_rows(practice: SimPractice, as_of: date) -> list[dict[str, Any]]:
    """A simulated practice's aging report as of `as_of`, from a ledger generated for that
    day (the practice's `today` is the report's date)."""
    runtime = _PracticeRuntime(replace(practice, today=as_of))
    return runtime.aging(as_of)


def aging_file_bytes(rows: Iterable[Mapping[str, Any]], as_of: date,
                     encoding: str = ENCODING) -> bytes:
    """The export's bytes: one line per guarantor of Open Dental-style aging rows."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADERS)
    report_date = as_of.strftime(DATE_FORMAT)
    for row in rows:
        wo_est = row["InsWoEst"]
        writer.writerow([
            str(row["PatNum"]),
            row.get("patName") or "",
            format_money(row["Bal_0_30"]),
            format_money(row["Bal_31_60"]),
            format_money(row["Bal_61_90"]),
            format_money(row["BalOver90"]),
            format_money(row["BalTotal"]),
            format_money(row["InsPayEst"]),
            "" if wo_est == 0 else format_money(wo_est),
            format_money(row["PatientPortion"]),
            report_date,
        ])
    try:
        return out.getvalue().encode(encoding)
    except UnicodeEncodeError:
        raise AgingFileError(f"a name cannot be written in {encoding}") from None
    except LookupError:
        raise AgingFileError(f"unknown encoding {encoding!r}") from None


def write_aging_file(
    rows: Iterable[Mapping[str, Any]], folder: Path, as_of: date, *,
    name: str | None = None, encoding: str = ENCODING, write_seconds: float = 0.0,
    complete: bool = True, mtime: float | None = None,
) -> Path:
    """Write the export into `folder` under `name` (default `aging_YYYYMMDD.csv`).

    `write_seconds` > 0 writes it in chunks over that time (a slow export); `complete=False`
    writes only the first half of its bytes and leaves it so. `mtime` (POSIX seconds) sets
    the file's modification time afterwards (tests: a file written "an hour ago")."""
    folder = Path(folder)
    name = name or default_file_name(as_of)
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        raise AgingFileError(f"file name {name!r} must be a plain, visible file name")
    if not folder.is_dir():
        raise AgingFileError(f"folder {folder} does not exist or is not a folder")
    if write_seconds < 0:
        raise AgingFileError("write_seconds must not be negative")
    data = aging_file_bytes(rows, as_of, encoding)
    if not complete:
        data = data[: len(data) // 2]
    path = folder / name
    chunk = max(1, -(-len(data) // WRITE_CHUNKS))
    with open(path, "wb") as handle:
        for start in range(0, len(data), chunk):
            handle.write(data[start:start + chunk])
            handle.flush()
            if write_seconds:
                time.sleep(write_seconds / WRITE_CHUNKS)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
