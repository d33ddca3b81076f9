"""`PUT /queries/ShortQuery`: read-only SELECTs over a database mirror of the ledger.

Open Dental runs the query on its MySQL database and screens it to be read-only. The
simulator keeps an in-memory DuckDB copy of its ledger as Open Dental's own tables
(`patient`, `procedurelog`, `claimproc`, `paysplit`, `adjustment`) with the real column
names and database values: enums as integers (`procedurelog.ProcStatus` 2 for complete,
`claimproc.Status` 1 for received, `patient.PatStatus` 5 for deceased...), money as
doubles, dates and timestamps as DATE and DATETIME. The copy follows the ledger's changes
through its journal (`Ledger.changes_since`).

What is refused, and how (docs/sources.md, "ShortQuery in the simulator"):

- an empty or missing `SqlCommand`: 400;
- SQL that does not parse, names an unknown table or column, or uses a construct the
  simulator does not run (more than one statement, WITH, DuckDB-only syntax): 400 with
  the error;
- anything that is not a SELECT (INSERT, UPDATE, DELETE, CREATE, DROP, PRAGMA, ATTACH,
  SET...), and any query containing the word SCHEMA: 401, as Open Dental answers a query
  that is not read-only;
- the database never reaches a file, an extension or the network (DuckDB's external access
  is off and its configuration locked).

Results are pages of at most 100 rows (`Offset`; `Limit` is not a ShortQuery parameter),
every value as text: integers "123", money as the double's shortest text ("130", "12.5"),
dates and timestamps as "yyyy-MM-ddTHH:mm:ss" (as Open Dental's documented example shows
its data table), NULL as null. `NOW()`, `CURRENT_TIMESTAMP`, `SYSDATE()`, `CURDATE()` and
`CURRENT_DATE` are the practice's server clock.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from balances_pipeline.simulator.ledger import (
    CLAIMPROC_STATUS,
    GENDER,
    PAT_STATUS,
    PROC_STATUS,
    Ledger,
)

PAGE_SIZE = 100
QUERY_SECONDS = 30
OPEN_CURSORS = 8
NOT_READ_ONLY = (
    "Query is not read-only: only SELECT commands are run, as Open Dental screens queries "
    "so that nothing can change the database."
)


class QueryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# How a column of a database table comes from a ledger row: ("field", name),
# ("money", name), ("enum", (name, values)) or ("const", value).
Convert = tuple[str, Any]


def _field(name: str) -> Convert:
    return ("field", name)


def _money(name: str) -> Convert:
    return ("money", name)


def _enum(name: str, values: dict[str, int]) -> Convert:
    return ("enum", (name, values))


def _const(value: Any) -> Convert:
    return ("const", value)


def _value(convert: Convert, row: dict[str, Any]) -> Any:
    kind, arg = convert
    if kind == "field":
        return row[arg]
    if kind == "money":
        return float(row[arg])
    if kind == "enum":
        return arg[1][row[arg[0]]]
    return arg


def _column(convert: Convert, rows: list[tuple], positions: dict[str, int]) -> list[Any]:
    kind, arg = convert
    if kind == "field":
        i = positions[arg]
        return [row[i] for row in rows]
    if kind == "money":
        i = positions[arg]
        return [float(row[i]) for row in rows]
    if kind == "enum":
        i, values = positions[arg[0]], arg[1]
        return [values[row[i]] for row in rows]
    return [arg] * len(rows)


T = tuple[str, str, Convert]
DATABASE_TABLES: dict[str, tuple[str, tuple[T, ...]]] = {
    "patient": (
        "patients",
        (
            ("PatNum", "BIGINT", _field("PatNum")),
            ("LName", "VARCHAR", _field("LName")),
            ("FName", "VARCHAR", _field("FName")),
            ("MiddleI", "VARCHAR", _const("")),
            ("Preferred", "VARCHAR", _const("")),
            ("PatStatus", "TINYINT", _enum("PatStatus", PAT_STATUS)),
            ("Gender", "TINYINT", _enum("Gender", GENDER)),
            ("Birthdate", "DATE", _field("Birthdate")),
            ("SSN", "VARCHAR", _field("SSN")),
            ("Address", "VARCHAR", _field("Address")),
            ("Address2", "VARCHAR", _const("")),
            ("City", "VARCHAR", _field("City")),
            ("State", "VARCHAR", _field("State")),
            ("Zip", "VARCHAR", _field("Zip")),
            ("HmPhone", "VARCHAR", _field("HmPhone")),
            ("WkPhone", "VARCHAR", _const("")),
            ("WirelessPhone", "VARCHAR", _field("WirelessPhone")),
            ("Guarantor", "BIGINT", _field("Guarantor")),
            ("Email", "VARCHAR", _field("Email")),
            ("PriProv", "BIGINT", _const(1)),
            ("ClinicNum", "BIGINT", _field("ClinicNum")),
            ("DateTStamp", "TIMESTAMP", _field("DateTStamp")),
        ),
    ),
    "procedurelog": (
        "procedurelogs",
        (
            ("ProcNum", "BIGINT", _field("ProcNum")),
            ("PatNum", "BIGINT", _field("PatNum")),
            ("AptNum", "BIGINT", _const(0)),
            ("ProcDate", "DATE", _field("ProcDate")),
            ("ProcFee", "DOUBLE", _money("ProcFee")),
            ("ProcStatus", "TINYINT", _enum("ProcStatus", PROC_STATUS)),
            ("ProvNum", "BIGINT", _const(1)),
            ("ClinicNum", "BIGINT", _field("ClinicNum")),
            ("UnitQty", "INTEGER", _field("UnitQty")),
            ("BaseUnits", "INTEGER", _field("BaseUnits")),
            ("DateTStamp", "TIMESTAMP", _field("DateTStamp")),
        ),
    ),
    "claimproc": (
        "claimprocs",
        (
            ("ClaimProcNum", "BIGINT", _field("ClaimProcNum")),
            ("ProcNum", "BIGINT", _field("ProcNum")),
            ("ClaimNum", "BIGINT", _field("ClaimNum")),
            ("PatNum", "BIGINT", _field("PatNum")),
            ("ProvNum", "BIGINT", _const(1)),
            ("InsPayEst", "DOUBLE", _money("InsPayEst")),
            ("Status", "TINYINT", _enum("Status", CLAIMPROC_STATUS)),
            ("InsPayAmt", "DOUBLE", _money("InsPayAmt")),
            ("ClaimPaymentNum", "BIGINT", _field("ClaimPaymentNum")),
            ("DateCP", "DATE", _field("DateCP")),
            ("WriteOff", "DOUBLE", _money("WriteOff")),
            ("WriteOffEst", "DOUBLE", _money("WriteOffEst")),
            ("ClinicNum", "BIGINT", _field("ClinicNum")),
            ("SecDateTEdit", "TIMESTAMP", _field("SecDateTEdit")),
        ),
    ),
    "paysplit": (
        "paysplits",
        (
            ("SplitNum", "BIGINT", _field("SplitNum")),
            ("SplitAmt", "DOUBLE", _money("SplitAmt")),
            ("PatNum", "BIGINT", _field("PatNum")),
            ("PayNum", "BIGINT", _field("PayNum")),
            ("ProvNum", "BIGINT", _const(1)),
            ("DatePay", "DATE", _field("DatePay")),
            ("ProcNum", "BIGINT", _field("ProcNum")),
            ("ClinicNum", "BIGINT", _field("ClinicNum")),
            ("SecDateTEdit", "TIMESTAMP", _field("SecDateTEdit")),
        ),
    ),
    "adjustment": (
        "adjustments",
        (
            ("AdjNum", "BIGINT", _field("AdjNum")),
            ("AdjDate", "DATE", _field("AdjDate")),
            ("AdjAmt", "DOUBLE", _money("AdjAmt")),
            ("PatNum", "BIGINT", _field("PatNum")),
            ("AdjType", "BIGINT", _field("AdjType")),
            ("ProvNum", "BIGINT", _const(1)),
            ("ProcNum", "BIGINT", _field("ProcNum")),
            ("ClinicNum", "BIGINT", _field("ClinicNum")),
            ("SecDateTEdit", "TIMESTAMP", _field("SecDateTEdit")),
        ),
    ),
}
TABLE_FOR_LEDGER = {ledger_table: name for name, (ledger_table, _) in DATABASE_TABLES.items()}

# Statement types of DuckDB's parser that Open Dental would refuse as not read-only (or
# that have no MySQL equivalent a read-only user could run): everything but SELECT.
_SELECT = duckdb.StatementType.SELECT
_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_FIRST_WORD = re.compile(r"[(\s]*([A-Za-z]+)")
# The clock functions of MySQL, replaced by the server clock outside quotes.
# NOW(), SYSDATE() and CURDATE() are functions; CURRENT_TIMESTAMP, LOCALTIMESTAMP and
# CURRENT_DATE are keywords that may take parentheses.
_CLOCK = re.compile(
    r"\b(?:(NOW|SYSDATE|CURDATE)\s*\(\s*\)"
    r"|(CURRENT_TIMESTAMP|LOCALTIMESTAMP|CURRENT_DATE)\b(?:\s*\(\s*\))?)",
    re.IGNORECASE,
)
_DATE_FUNCTIONS = frozenset({"CURDATE", "CURRENT_DATE"})


def _outside_quotes(sql: str) -> Iterator[tuple[bool, str]]:
    """Split SQL into (is_code, text) pieces: quoted strings and identifiers are not code."""
    i, start, n = 0, 0, len(sql)
    while i < n:
        quote = sql[i]
        if quote in "'\"`":
            if start < i:
                yield True, sql[start:i]
            j = i + 1
            while j < n:
                if sql[j] == "\\" and quote != "`":
                    j += 2
                    continue
                if sql[j] == quote:
                    if j + 1 < n and sql[j + 1] == quote:
                        j += 2
                        continue
                    break
                j += 1
            yield False, sql[i : j + 1]
            i = start = j + 1
        else:
            i += 1
    if start < n:
        yield True, sql[start:]


def with_double_quoted_names(sql: str) -> str:
    """The SQL with MySQL's backquoted names (`p`.`PatNum`) in double quotes, the quotes
    DuckDB 1.5's parser reads as a name (it has no backquotes)."""
    pieces = [
        '"' + text[1:-1].replace("``", "`").replace('"', '""') + '"'
        if not code and len(text) > 1 and text[0] == text[-1] == "`"
        else text
        for code, text in _outside_quotes(sql)
    ]
    return "".join(pieces)


def with_server_clock(sql: str, now: datetime) -> tuple[str, dict[str, str]]:
    """The SQL with MySQL's clock functions replaced by `now`, and the column name DuckDB
    gives each replacement mapped to the text it replaced (`NOW()`), as MySQL names it."""
    names: dict[str, str] = {}

    def clock(match: re.Match[str]) -> str:
        if (match.group(1) or match.group(2)).upper() in _DATE_FUNCTIONS:
            text, kind = now.date().isoformat(), "DATE"
        else:
            text, kind = now.strftime("%Y-%m-%d %H:%M:%S"), "TIMESTAMP"
        names[f"CAST('{text}' AS {kind})"] = match.group(0)
        return f"{kind} '{text}'"

    pieces = [_CLOCK.sub(clock, text) if code else text for code, text in _outside_quotes(sql)]
    return "".join(pieces), names


def screen(sql: Any) -> str:
    """The one SELECT of a ShortQuery body, or a `QueryError` saying why not."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError(400, "SqlCommand is required.")
    if "SCHEMA" in sql.upper():
        raise QueryError(401, NOT_READ_ONLY)
    sql = with_double_quoted_names(sql)
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(400, f"SQL syntax error: {_first_line(error)}") from None
    if not statements:
        raise QueryError(400, "SqlCommand is required.")
    # DuckDB 1.5 parses `PRAGMA database_list` as the SELECT `SELECT * FROM
    # pragma_database_list;`: a statement whose text the command does not hold was rewritten
    # from a PRAGMA.
    if any(statement.type != _SELECT or statement.query not in sql for statement in statements):
        raise QueryError(401, NOT_READ_ONLY)
    if len(statements) > 1:
        raise QueryError(
            400, "The simulator runs one SELECT per ShortQuery; send each query on its own."
        )
    body = _LEADING.sub("", statements[0].query)
    word = _FIRST_WORD.match(body)
    keyword = word.group(1).upper() if word else ""
    if keyword == "WITH":
        raise QueryError(
            400,
            "WITH (common table expressions) is not run: Open Dental offices on MySQL 5.5 "
            "or 5.6 have no WITH; use a subquery.",
        )
    if keyword != "SELECT":
        raise QueryError(400, "Only SELECT commands are run (MySQL syntax).")
    return statements[0].query.strip().rstrip(";")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def as_text(value: Any) -> str | None:
    """A result value as the text Open Dental's query results carry."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00"
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int | Decimal | str):
        return str(value)
    return str(value)


def _column_names(description: list[tuple[Any, ...]]) -> list[str]:
    """Result column names, a repeated one numbered as a .NET DataTable does (PatNum1)."""
    names: list[str] = []
    seen: set[str] = set()
    for entry in description:
        name = str(entry[0])
        candidate, n = name, 0
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}{n}"
        seen.add(candidate.lower())
        names.append(candidate)
    return names


class QueryDatabase:
    """One practice's database for ShortQuery, kept in step with its ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._con: duckdb.DuckDBPyConnection | None = None
        self._version = -1
        self._lock = threading.Lock()
        # (sql, version) -> (cursor, the offset of its next row, column names)
        self._cursors: OrderedDict[
            tuple[str, int], tuple[duckdb.DuckDBPyConnection, int, list[str]]
        ] = OrderedDict()

    # -- the mirror ------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "threads": 1,
                "memory_limit": "1GB",
            },
        )
        for name, (_, columns) in DATABASE_TABLES.items():
            ddl = ", ".join(f"{column} {kind}" for column, kind, _ in columns)
            con.execute(f"CREATE TABLE {name} ({ddl}, PRIMARY KEY ({columns[0][0]}))")
        return con

    def _rebuild(self) -> None:
        self._close_cursors()
        if self._con is not None:
            self._con.close()
        con = self._connect()
        for name, (ledger_table, columns) in DATABASE_TABLES.items():
            table = self.ledger.table(ledger_table)
            if not table.rows:
                continue
            data = {
                column: _column(convert, table.rows, table.positions)
                for column, _, convert in columns
            }
            con.register("ledger_rows", pa.table(data))
            con.execute(f"INSERT INTO {name} SELECT * FROM ledger_rows")  # noqa: S608 - our table
            con.unregister("ledger_rows")
        # From here on queries reach no file, extension or network, and cannot undo that.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        self._con = con

    def _apply(self, changes: list[tuple[str, int]]) -> None:
        assert self._con is not None
        self._close_cursors()
        for ledger_table, key in changes:
            name = TABLE_FOR_LEDGER[ledger_table]
            columns = DATABASE_TABLES[name][1]
            key_column = columns[0][0]
            self._con.execute(f"DELETE FROM {name} WHERE {key_column} = ?", [key])  # noqa: S608
            try:
                row = self.ledger.table(ledger_table).get(key)
            except KeyError:
                continue  # deleted
            marks = ", ".join("?" for _ in columns)
            values = [_value(convert, row) for _, _, convert in columns]
            self._con.execute(f"INSERT INTO {name} VALUES ({marks})", values)  # noqa: S608

    def _sync(self) -> duckdb.DuckDBPyConnection:
        with self.ledger.lock:
            version = self.ledger.version
            if self._con is None:
                self._rebuild()
            elif version != self._version:
                changes = self.ledger.changes_since(self._version)
                if changes is None:
                    self._rebuild()
                else:
                    self._apply(changes)
            self._version = version
        assert self._con is not None
        return self._con

    def _close_cursors(self) -> None:
        for cursor, _, _ in self._cursors.values():
            cursor.close()
        self._cursors.clear()

    # -- a page ----------------------------------------------------------------------

    def page(self, sql: Any, offset: int, now: datetime) -> list[dict[str, str | None]]:
        """Rows `offset` to `offset + 99` of the query's result."""
        query = screen(sql)
        query, clock_names = with_server_clock(query, now)
        uses_clock = bool(clock_names)
        with self._lock:
            con = self._sync()
            key = (query, self._version)
            cached = None if uses_clock else self._cursors.pop(key, None)
            if cached is not None and cached[1] != offset:
                cached[0].close()
                cached = None
            if cached is None:
                cursor = con.cursor()
                names = self._execute(cursor, query)
                self._fetch(cursor, offset, skip=True)
                position = offset
            else:
                cursor, position, names = cached
            rows = self._fetch(cursor, PAGE_SIZE, skip=False)
            if len(rows) == PAGE_SIZE and not uses_clock:
                self._cursors[key] = (cursor, position + len(rows), names)
                while len(self._cursors) > OPEN_CURSORS:
                    self._cursors.popitem(last=False)[1][0].close()
            else:
                cursor.close()
        names = [clock_names.get(name, name) for name in names]
        return [dict(zip(names, map(as_text, row), strict=True)) for row in rows]

    def _execute(self, cursor: duckdb.DuckDBPyConnection, query: str) -> list[str]:
        timer = threading.Timer(QUERY_SECONDS, cursor.interrupt)
        timer.start()
        try:
            cursor.execute(query)
        except duckdb.PermissionException:
            cursor.close()
            raise QueryError(400, "That function is not available to queries.") from None
        except duckdb.Error as error:
            cursor.close()
            raise QueryError(400, f"SQL error: {_first_line(error)}") from None
        finally:
            timer.cancel()
        return _column_names(cursor.description or [])

    def _fetch(
        self, cursor: duckdb.DuckDBPyConnection, count: int, skip: bool
    ) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        remaining = count
        try:
            while remaining > 0:
                chunk = cursor.fetchmany(min(remaining, 10_000))
                if not chunk:
                    break
                remaining -= len(chunk)
                if not skip:
                    rows.extend(chunk)
        except duckdb.Error as error:
            cursor.close()
            raise QueryError(400, f"SQL error: {_first_line(error)}") from None
        return rows
