"""An aging export's bytes → pages of `SourceBalanceRow`s and `RejectedRow`s.

File-level problems fail the read with one line naming the file (and the line, or the
header), never a cell's value: bytes the encoding cannot decode, a quoted field left open,
no header row, a mapped header missing or repeated (`SchemaDriftError`), report dates that
are not dates, disagree between rows, or lie in the future.

Row-level problems reject that row (the rest are kept), with a reason naming the line, the
column and the problem: a row whose cell count is not the header's (an unquoted delimiter
inside a name shifts every column after it: never guessed at), an empty account id or one
with control or formatting characters or longer than 64 characters, an account id seen on
an earlier line ("duplicate account_id"), a name with control or formatting characters or
longer than 200 characters, a money cell that is not an amount (`money.py`). Rows whose
every cell is empty are skipped (blank lines, trailing delimiters). A row's `raw` is the
JSON of its mapped cells only; unmapped columns are never read further, nor stored.

Values: an empty bucket or estimate cell is 0. An empty `balance_total` cell, or no
`balance_total` column, is None (the sum of the buckets) when every bucket is mapped;
otherwise the row is rejected. Buckets the file does not have are 0. `bucket_over_90` is
None when the file splits it (`bucket_91_120` and `bucket_over_120`, summed downstream);
the split columns are None when it does not. `patient_portion` is None (total minus both
estimates, downstream); `has_split` says whether the file maps an insurance estimate
column (without one, nothing tells the patient's part from insurance's).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from balances_pipeline.plain_text import forbidden_character
from balances_pipeline.sources.errors import SchemaDriftError, SourceError
from balances_pipeline.sources.file_drop.config import MONEY_FIELDS, FileDropSource
from balances_pipeline.sources.file_drop.money import parse_money_cell
from balances_pipeline.sources.rows import Page, RejectedRow, SourceBalanceRow

PAGE_ROWS = 5000
MAX_ACCOUNT_ID = 64
MAX_ACCOUNT_NAME = 200
# A report date may be a day ahead of the practice's own date (an export run just after
# midnight somewhere else, or dated for the next business day), not more.
FUTURE_DAYS_ALLOWED = 1
ZERO = Decimal("0.00")
_BOMS = {
    codecs.BOM_UTF8: "UTF-8",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def decode(practice_id: str, file_name: str, data: bytes, encoding: str) -> str:
    """The file's text. A UTF-8 byte order mark is dropped under utf-8 and utf-8-sig; a
    byte order mark the encoding does not have is an error (a UTF-8 export read as cp1252
    would mangle every accented name)."""
    codec = codecs.lookup(encoding).name
    where = f"practice {practice_id}: {file_name}"
    for bom, family in _BOMS.items():
        if not data.startswith(bom):
            continue
        if family == "UTF-8" and codec in ("utf-8", "utf-8-sig"):
            codec = "utf-8-sig"
        elif not codec.startswith(family.lower()):
            raise SourceError(
                f"{where}: starts with a {family} byte order mark, but the practice's "
                f"encoding is {encoding} (set source.encoding to "
                f"{'utf-8-sig' if family == 'UTF-8' else 'utf-16'})"
            )
        break
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise SourceError(
            f"{where}: line {line} is not valid {encoding} (byte 0x{data[error.start]:02x});"
            " check source.encoding"
        ) from None


@dataclass
class _Layout:
    """Where each mapped field is in the header."""

    index: dict[str, int]  # our field -> column index
    date_index: int | None
    width: int
    headers: dict[str, str]  # our field -> header text


def _layout(practice_id: str, file_name: str, header: list[str],
            source: FileDropSource) -> _Layout:
    names = [cell.strip(" \t") for cell in header]
    wanted = {f: h for f, h in source.columns.model_dump().items() if h is not None}
    if source.as_of_column:
        wanted["as_of_column"] = source.as_of_column
    index: dict[str, int] = {}
    for our_field, header_text in wanted.items():
        positions = [i for i, name in enumerate(names) if name == header_text]
        label = our_field if our_field == "as_of_column" else f"columns.{our_field}"
        if not positions:
            raise SchemaDriftError(
                f"practice {practice_id}: {file_name}: header '{header_text}' ({label}) "
                "not found in the file's header row"
            )
        if len(positions) > 1:
            raise SchemaDriftError(
                f"practice {practice_id}: {file_name}: header '{header_text}' ({label}) "
                f"appears {len(positions)} times in the header row"
            )
        index[our_field] = positions[0]
    date_index = index.pop("as_of_column", None)
    headers = {f: h for f, h in wanted.items() if f != "as_of_column"}
    return _Layout(index, date_index, len(names), headers)


@dataclass
class ParseState:
    """What the pages taught about the file: its report date, counts."""

    as_of_date: date | None = None
    rows: int = 0
    rejected: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # account id -> first line


def pages(practice_id: str, file_name: str, text: str, source: FileDropSource,
          today: date, state: ParseState) -> Iterator[Page[SourceBalanceRow]]:
    """The file's rows, `PAGE_ROWS` a page; `state` filled as they go."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=source.delimiter,
                        strict=True)
    layout: _Layout | None = None
    page: Page[SourceBalanceRow] = Page(endpoint=file_name, offset=0)
    record = 0
    while True:
        line = reader.line_num + 1  # where the next record starts
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problem = ("a quoted field is not closed" if "end of data" in str(error)
                       else "not valid CSV")
            raise SourceError(
                f"practice {practice_id}: {file_name} line {line}: {problem}"
            ) from None
        if layout is None:
            if not any(cell.strip(" \t") for cell in cells):
                continue  # blank lines before the header
            layout = _layout(practice_id, file_name, cells, source)
            continue
        if not any(cell.strip(" \t") for cell in cells):
            continue
        _row(practice_id, file_name, line, cells, layout, source, today, state, page)
        record += 1
        if len(page.rows) + len(page.rejected) >= PAGE_ROWS:
            yield page
            page = Page(endpoint=file_name, offset=record)
    if layout is None:
        raise SchemaDriftError(f"practice {practice_id}: {file_name}: no header row")
    if page.rows or page.rejected:
        yield page


def _raw(cells: list[str], layout: _Layout) -> str:
    mapped = {layout.headers[f]: cells[i] for f, i in layout.index.items() if i < len(cells)}
    return json.dumps(mapped, ensure_ascii=False)


def _row(practice_id: str, file_name: str, line: int, cells: list[str], layout: _Layout,
         source: FileDropSource, today: date, state: ParseState,
         page: Page[SourceBalanceRow]) -> None:
    def reject(reason: str, account_id: str | None) -> None:
        state.rejected += 1
        page.rejected.append(RejectedRow(
            endpoint=file_name, row_key=account_id, reason=f"line {line}: {reason}",
            raw=_raw(cells, layout), account_id=account_id,
        ))

    if len(cells) != layout.width:
        reject(f"row has {len(cells)} cells, the header {layout.width}", None)
        return
    if layout.date_index is not None:
        _report_date(practice_id, file_name, line, cells[layout.date_index], source, today,
                     state)
    account_id, problem = _account_id(cells[layout.index["account_id"]])
    if problem or account_id is None:
        reject(problem or "account_id is empty", None)
        return
    problems = []
    name = ""
    if "account_name" in layout.index:
        name = cells[layout.index["account_name"]].strip(" \t")
        bad = forbidden_character(name)
        if bad:
            problems.append(f"account_name contains a control or formatting character ({bad})")
        elif len(name) > MAX_ACCOUNT_NAME:
            problems.append(f"account_name is longer than {MAX_ACCOUNT_NAME} characters")
    money: dict[str, Decimal | None] = {}
    for our_field in MONEY_FIELDS:
        position = layout.index.get(our_field)
        if position is None:
            continue
        amount, problem = parse_money_cell(cells[position])
        if problem:
            problems.append(f"'{layout.headers[our_field]}' ({our_field}): {problem}")
        money[our_field] = amount
    first = state.seen.get(account_id)
    if first is not None:
        reject(f"duplicate account_id (first on line {first})", account_id)
        return
    state.seen[account_id] = line
    if problems:
        reject("; ".join(problems), account_id)
        return
    row, problem = _balance_row(account_id, name, money, layout, source)
    if row is None:
        reject(problem or "no balance", account_id)
        return
    state.rows += 1
    page.rows.append(row)


def _account_id(cell: str) -> tuple[str | None, str | None]:
    value = cell.strip(" \t")
    if not value:
        return None, "account_id is empty"
    bad = forbidden_character(value)
    if bad:
        return None, f"account_id contains a control or formatting character ({bad})"
    if len(value) > MAX_ACCOUNT_ID:
        return None, f"account_id is longer than {MAX_ACCOUNT_ID} characters"
    return value, None


def _balance_row(account_id: str, name: str, money: dict[str, Decimal | None],
                 layout: _Layout, source: FileDropSource
                 ) -> tuple[SourceBalanceRow | None, str | None]:
    def amount(our_field: str) -> Decimal:
        value = money.get(our_field)
        return ZERO if value is None else value

    split = "bucket_91_120" in layout.index
    every_bucket = all(f in layout.index for f in ("bucket_0_30", "bucket_31_60",
                                                  "bucket_61_90")) and (
        split or "bucket_over_90" in layout.index)
    total = money.get("balance_total")
    if total is None and not every_bucket:
        header = layout.headers.get("balance_total", "balance_total")
        return None, (f"'{header}' (balance_total) is empty and the file's buckets do not"
                      " give it")
    return SourceBalanceRow(
        account_id=account_id,
        account_name=name,
        bucket_0_30=amount("bucket_0_30"),
        bucket_31_60=amount("bucket_31_60"),
        bucket_61_90=amount("bucket_61_90"),
        bucket_91_120=amount("bucket_91_120") if split else None,
        bucket_over_120=amount("bucket_over_120") if split else None,
        bucket_over_90=None if split else amount("bucket_over_90"),
        balance_total=total,
        insurance_estimate=amount("insurance_estimate"),
        writeoff_estimate=amount("writeoff_estimate"),
        patient_portion=None,
        has_split=source.columns.insurance_estimate is not None,
        active=True,
    ), None


def _report_date(practice_id: str, file_name: str, line: int, cell: str,
                 source: FileDropSource, today: date, state: ParseState) -> None:
    where = f"practice {practice_id}: {file_name} line {line}"
    text = cell.strip(" \t")
    column = f"'{source.as_of_column}' (as_of_column)"
    parsed: date | None = None
    if text and text.isascii():
        try:
            parsed = datetime.strptime(text, source.date_format).date()
        except ValueError:
            parsed = None
    if parsed is None:
        raise SourceError(f"{where}: {column} is not a date in the format "
                          f"'{source.date_format}'")
    if state.as_of_date is None:
        if parsed > today + timedelta(days=FUTURE_DAYS_ALLOWED):
            raise SourceError(f"{where}: {column} is {parsed.isoformat()}, in the future "
                              f"(the practice's date is {today.isoformat()})")
        state.as_of_date = parsed
    elif parsed != state.as_of_date:
        raise SourceError(f"{where}: {column} is {parsed.isoformat()}, earlier rows say "
                          f"{state.as_of_date.isoformat()}: one file must have one report date")
