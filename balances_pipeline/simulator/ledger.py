"""The simulator's ledger: Open Dental tables, a seeded generator and a dataset loader.

Rows are stored as tuples (in the field order of `TABLE_FIELDS`, sorted by primary key) to
keep 100k-account practices in memory; `Table` hands them out as dicts with the exact Open
Dental field names. Money is `Decimal`, dates are "yyyy-MM-dd" strings and change stamps
"yyyy-MM-dd HH:mm:ss" strings, as the API serves them.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

EMPTY_DATE = "0001-01-01"
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
CENT = Decimal("0.01")

TABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "patients": ("PatNum", "Guarantor", "LName", "FName", "PatStatus", "DateTStamp"),
    "procedurelogs": (
        "ProcNum",
        "PatNum",
        "ProcDate",
        "ProcFee",
        "UnitQty",
        "BaseUnits",
        "ProcStatus",
        "DateTStamp",
    ),
    "claimprocs": (
        "ClaimProcNum",
        "ProcNum",
        "ClaimNum",
        "PatNum",
        "Status",
        "InsPayEst",
        "InsPayAmt",
        "WriteOff",
        "WriteOffEst",
        "DateCP",
        "SecDateTEdit",
    ),
    "paysplits": ("SplitNum", "PatNum", "SplitAmt", "DatePay", "SecDateTEdit"),
    "adjustments": ("AdjNum", "PatNum", "AdjDate", "AdjAmt", "SecDateTEdit"),
}
STAMP_FIELDS: dict[str, str] = {
    "patients": "DateTStamp",
    "procedurelogs": "DateTStamp",
    "claimprocs": "SecDateTEdit",
    "paysplits": "SecDateTEdit",
    "adjustments": "SecDateTEdit",
}
MONEY_FIELDS: dict[str, frozenset[str]] = {
    "patients": frozenset(),
    "procedurelogs": frozenset({"ProcFee"}),
    "claimprocs": frozenset({"InsPayEst", "InsPayAmt", "WriteOff", "WriteOffEst"}),
    "paysplits": frozenset({"SplitAmt"}),
    "adjustments": frozenset({"AdjAmt"}),
}
INT_FIELDS: frozenset[str] = frozenset(
    {
        "PatNum",
        "Guarantor",
        "ProcNum",
        "UnitQty",
        "BaseUnits",
        "ClaimProcNum",
        "ClaimNum",
        "SplitNum",
        "AdjNum",
    }
)
TABLE_NAMES: tuple[str, ...] = tuple(TABLE_FIELDS)


def to_money(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, int | float | str):
        return Decimal(str(value))
    raise ValueError(f"not an amount: {value!r}")


def format_stamp(moment: datetime) -> str:
    return moment.strftime(STAMP_FORMAT)


class Table:
    """One Open Dental table: tuples sorted by primary key (the first field)."""

    def __init__(self, name: str, rows: list[tuple] | None = None) -> None:
        self.name = name
        self.fields = TABLE_FIELDS[name]
        self.key_field = self.fields[0]
        self.stamp_field = STAMP_FIELDS[name]
        self.money_fields = MONEY_FIELDS[name]
        self.positions = {field: i for i, field in enumerate(self.fields)}
        self.rows: list[tuple] = rows if rows is not None else []

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            yield self.as_dict(row)

    def as_dict(self, row: tuple) -> dict[str, Any]:
        return dict(zip(self.fields, row, strict=True))

    def pos(self, field: str) -> int:
        return self.positions[field]

    def next_key(self) -> int:
        return self.rows[-1][0] + 1 if self.rows else 1

    def _locate(self, key: int) -> int:
        i = bisect_left(self.rows, key, key=itemgetter(0))
        if i == len(self.rows) or self.rows[i][0] != key:
            raise KeyError(f"{self.name}: no row with {self.key_field}={key}")
        return i

    def get(self, key: int) -> dict[str, Any]:
        return self.as_dict(self.rows[self._locate(key)])

    def coerce(self, row: dict[str, Any]) -> tuple:
        unknown = set(row) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.name}: unknown fields {sorted(unknown)}")
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise ValueError(f"{self.name}: missing fields {missing}")
        return tuple(self._coerce_value(f, row[f]) for f in self.fields)

    def _coerce_value(self, field: str, value: Any) -> Any:
        if field in self.money_fields:
            return to_money(value)
        if field in INT_FIELDS:
            return int(value)
        return str(value)

    def insert(self, row: dict[str, Any]) -> dict[str, Any]:
        values = self.coerce(row)
        key = values[0]
        if self.rows and key <= self.rows[-1][0]:
            i = bisect_left(self.rows, key, key=itemgetter(0))
            if i < len(self.rows) and self.rows[i][0] == key:
                raise ValueError(f"{self.name}: duplicate {self.key_field}={key}")
            insort(self.rows, values, key=itemgetter(0))
        else:
            self.rows.append(values)
        return self.as_dict(values)

    def update(self, key: int, fields: dict[str, Any]) -> dict[str, Any]:
        i = self._locate(key)
        if self.key_field in fields and int(fields[self.key_field]) != key:
            raise ValueError(f"{self.name}: the key {self.key_field} cannot change")
        merged = self.as_dict(self.rows[i]) | fields
        self.rows[i] = self.coerce(merged)
        return self.as_dict(self.rows[i])

    def delete(self, key: int) -> dict[str, Any]:
        i = self._locate(key)
        return self.as_dict(self.rows.pop(i))


class Ledger:
    """The five tables of one practice, plus a change counter and the simulator clock."""

    def __init__(
        self,
        tables: dict[str, Table] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.tables: dict[str, Table] = tables or {}
        for name in TABLE_NAMES:
            self.tables.setdefault(name, Table(name))
        self.clock: Callable[[], datetime] = clock or datetime.now
        self.version = 0
        self.lock = threading.RLock()

    @property
    def patients(self) -> Table:
        return self.tables["patients"]

    @property
    def procedurelogs(self) -> Table:
        return self.tables["procedurelogs"]

    @property
    def claimprocs(self) -> Table:
        return self.tables["claimprocs"]

    @property
    def paysplits(self) -> Table:
        return self.tables["paysplits"]

    @property
    def adjustments(self) -> Table:
        return self.tables["adjustments"]

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise KeyError(f"unknown table {name!r} (one of {', '.join(TABLE_NAMES)})")
        return self.tables[name]

    def counts(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}

    def now_stamp(self) -> str:
        return format_stamp(self.clock())

    def add_row(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """Insert a row (key assigned when absent), stamped with the simulator clock."""
        with self.lock:
            t = self.table(table)
            values = dict(row)
            values.setdefault(t.key_field, t.next_key())
            values[t.stamp_field] = self.now_stamp()
            inserted = t.insert(values)
            self.version += 1
            return inserted

    def edit_row(self, table: str, key: int, **fields: Any) -> dict[str, Any]:
        with self.lock:
            t = self.table(table)
            changes = dict(fields)
            changes[t.stamp_field] = self.now_stamp()
            updated = t.update(int(key), changes)
            self.version += 1
            return updated

    def delete_row(self, table: str, key: int) -> dict[str, Any]:
        with self.lock:
            deleted = self.table(table).delete(int(key))
            self.version += 1
            return deleted


def load_dataset(path: str | Path, clock: Callable[[], datetime] | None = None) -> Ledger:
    """Load a JSON dataset `{"tables": {"patients": [...], ...}}` (optionally gzipped)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        document = json.load(handle, parse_float=Decimal)
    raw_tables = document.get("tables", document) if isinstance(document, dict) else None
    if not isinstance(raw_tables, dict):
        raise ValueError(f"{path}: expected an object with 'tables'")
    tables: dict[str, Table] = {}
    for name in TABLE_NAMES:
        table = Table(name)
        rows = [table.coerce(row) for row in raw_tables.get(name, [])]
        rows.sort(key=itemgetter(0))
        table.rows = rows
        tables[name] = table
    return Ledger(tables, clock=clock)


# --- seeded generator -------------------------------------------------------------------

FIRST_NAMES = (
    "Avery",
    "Blake",
    "Cameron",
    "Dakota",
    "Emerson",
    "Finley",
    "Harper",
    "Jordan",
    "Kendall",
    "Logan",
    "Morgan",
    "Parker",
    "Quinn",
    "Reese",
    "Riley",
    "Rowan",
    "Sawyer",
    "Skyler",
    "Taylor",
    "Peyton",
    "Ainsley",
    "Brynn",
    "Callum",
    "Delaney",
    "Ellis",
    "Greer",
    "Hollis",
    "Indigo",
    "Jules",
    "Kit",
    "Linden",
    "Marlow",
    "Noa",
    "Oakley",
    "Perrin",
    "Remy",
    "Sutton",
    "Tamsin",
    "Vesper",
    "Wren",
)
LAST_NAMES = (
    "Ashgrove",
    "Birchwell",
    "Copperfield",
    "Dunmore",
    "Elmstead",
    "Fairbrook",
    "Glenhaven",
    "Hollowell",
    "Ironwood",
    "Juniper",
    "Kestrel",
    "Larkspur",
    "Millbrook",
    "Northcott",
    "Oakhurst",
    "Pinecrest",
    "Quarry",
    "Redfern",
    "Stonebridge",
    "Thistlewood",
    "Underhill",
    "Valewood",
    "Westbrook",
    "Yarrow",
    "Amberley",
    "Brackenridge",
    "Cloverdale",
    "Driftwood",
    "Everhart",
    "Foxglove",
    "Greywater",
    "Hazelton",
    "Ivesdale",
    "Kingsley",
    "Lowmoor",
    "Marshwood",
    "Nettlefield",
    "Orchardson",
    "Penhallow",
    "Ravensworth",
)

# (fee in dollars, coverage percent) by category; fees are scaled per practice.
PREVENTIVE = {
    "exam": (58, 100),
    "prophy": (112, 100),
    "child_prophy": (78, 100),
    "bitewings": (72, 100),
    "fmx": (145, 100),
    "pano": (128, 100),
    "fluoride": (42, 100),
    "sealant": (56, 100),
}
BASIC = ((165, 80), (215, 80), (265, 80), (135, 80), (185, 80), (245, 80), (140, 80), (190, 80))
MAJOR = ((1285, 50), (295, 50), (1150, 50), (850, 50), (2150, 50), (335, 50), (1750, 50))

HISTORY_DAYS = 730
ZERO_MONEY = Decimal("0.00")
NO_ESTIMATE = Decimal("-1.00")


class _Generator:
    def __init__(self, seed: int, today: date) -> None:
        self.rng = random.Random(seed)
        self.today = today
        self.today_ord = today.toordinal()
        factor = Decimal(self.rng.randint(85, 125)) / 100
        self.fees = {k: self._fee(v[0], factor) for k, v in PREVENTIVE.items()}
        self.cover = {k: v[1] for k, v in PREVENTIVE.items()}
        self.basic = [(self._fee(f, factor), c) for f, c in BASIC]
        self.major = [(self._fee(f, factor), c) for f, c in MAJOR]
        self.rows: dict[str, list[tuple]] = {name: [] for name in TABLE_NAMES}
        self.next_key = dict.fromkeys(TABLE_NAMES, 1)
        self.next_key["patients"] = 1000
        self.next_claim = 1
        self._dates: dict[int, str] = {}
        self._stamps: dict[tuple[int, int], str] = {}
        self._money: dict[Decimal, Decimal] = {}
        self._insurance: dict[tuple[Decimal, int, int], tuple[Decimal, Decimal]] = {}

    @staticmethod
    def _fee(dollars: int, factor: Decimal) -> Decimal:
        return (dollars * factor).quantize(Decimal("1"), ROUND_HALF_UP).quantize(CENT)

    def money(self, value: Decimal) -> Decimal:
        value = value.quantize(CENT, ROUND_HALF_UP)
        return self._money.setdefault(value, value)

    def day(self, ordinal: int) -> str:
        text = self._dates.get(ordinal)
        if text is None:
            text = self._dates[ordinal] = date.fromordinal(ordinal).isoformat()
        return text

    def stamp(self, ordinal: int) -> str:
        """A change stamp during business hours of that day, never after the day before today."""
        ordinal = min(ordinal, self.today_ord - 1)
        slot = int(self.rng.random() * 60)
        text = self._stamps.get((ordinal, slot))
        if text is None:
            hour, minute = divmod(slot * 10, 60)
            text = f"{self.day(ordinal)} {8 + hour:02d}:{minute:02d}:00"
            self._stamps[(ordinal, slot)] = text
        return text

    def key(self, table: str) -> int:
        key = self.next_key[table]
        self.next_key[table] = key + 1
        return key

    def family(self) -> None:
        rng = self.rng
        guarantor = self.next_key["patients"]
        last = rng.choice(LAST_NAMES)
        size = 1 + rng.choices(range(5), weights=(45, 20, 18, 12, 5))[0]
        status = "Deceased" if rng.random() < 0.012 else "Patient"
        insured = rng.random() < 0.6
        writeoff_rate = rng.choice((0, 0, 15, 20, 25)) if insured else 0
        payer = rng.choices(("prompt", "slow", "never", "over"), weights=(66, 22, 8, 4))[0]
        active = rng.random() < 0.9
        for member in range(size):
            patnum = self.key("patients")
            member_status = status if member == 0 else "Patient"
            if member > 0 and rng.random() < 0.05:
                member_status = "Inactive"
            first_seen = self.today_ord - HISTORY_DAYS - rng.randrange(1500)
            self.rows["patients"].append(
                (
                    patnum,
                    guarantor,
                    last,
                    rng.choice(FIRST_NAMES),
                    member_status,
                    self.stamp(first_seen),
                )
            )
            if active:
                self.patient_history(patnum, member >= 2, insured, writeoff_rate, payer)
        if active and payer in ("slow", "never") and rng.random() < 0.3:
            self.late_fee(guarantor)
        if rng.random() < 0.005:
            self.post_dated(guarantor)

    def patient_history(
        self, patnum: int, child: bool, insured: bool, writeoff_rate: int, payer: str
    ) -> None:
        rng = self.rng
        ordinal = self.today_ord - HISTORY_DAYS + rng.randrange(180)
        visit = 0
        while ordinal <= self.today_ord + 90:
            if ordinal > self.today_ord:
                self.planned(patnum, ordinal, self.fees["exam"])
                break
            if rng.random() < 0.8:
                codes = ["exam", "child_prophy" if child else "prophy"]
                if visit % 2 == 0:
                    codes.append("bitewings")
                if child:
                    codes.append(rng.choice(("fluoride", "sealant")))
                items = [(self.fees[c], self.cover[c]) for c in codes]
                self.visit(patnum, ordinal, items, insured, writeoff_rate, payer)
                self.treatment(patnum, ordinal, insured, writeoff_rate, payer)
                visit += 1
            ordinal += rng.randint(150, 220)

    def treatment(
        self, patnum: int, exam_ord: int, insured: bool, writeoff_rate: int, payer: str
    ) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.22:
            items = [rng.choice(self.basic) for _ in range(rng.randint(1, 2))]
        elif roll < 0.27:
            items = [rng.choice(self.major)]
        else:
            return
        ordinal = exam_ord + rng.randint(7, 45)
        if ordinal > self.today_ord or rng.random() < 0.25:
            for fee, _ in items:
                self.planned(patnum, max(ordinal, exam_ord), fee)
            return
        self.visit(patnum, ordinal, items, insured, writeoff_rate, payer)

    def planned(self, patnum: int, ordinal: int, fee: Decimal) -> None:
        self.rows["procedurelogs"].append(
            (
                self.key("procedurelogs"),
                patnum,
                self.day(ordinal),
                fee,
                1,
                0,
                "TP",
                self.stamp(min(ordinal, self.today_ord) - self.rng.randrange(30)),
            )
        )

    def visit(
        self,
        patnum: int,
        ordinal: int,
        items: list[tuple[Decimal, int]],
        insured: bool,
        writeoff_rate: int,
        payer: str,
    ) -> None:
        rng = self.rng
        claim = self.next_claim if insured else 0
        self.next_claim += 1 if insured else 0
        lag = 10 + int(rng.random() * 36)
        received = insured and rng.random() >= 0.04 and ordinal + lag <= self.today_ord
        denied = received and rng.random() < 0.03
        stamp = self.stamp(ordinal)
        day = self.day(ordinal)
        portion = Decimal(0)
        for fee, cover in items:
            procnum = self.key("procedurelogs")
            self.rows["procedurelogs"].append((procnum, patnum, day, fee, 1, 0, "C", stamp))
            if not insured:
                portion += fee
                continue
            writeoff, estimate = self.insurance(fee, cover, writeoff_rate)
            portion += fee - writeoff - estimate
            if received:
                paid = ZERO_MONEY if denied else estimate
                portion += estimate - paid
                cp_row = (
                    "Received",
                    estimate,
                    paid,
                    writeoff,
                    NO_ESTIMATE,
                    self.day(ordinal + lag),
                    self.stamp(ordinal + lag),
                )
            else:
                wo_est = writeoff if writeoff_rate else NO_ESTIMATE
                cp_row = ("NotReceived", estimate, ZERO_MONEY, ZERO_MONEY, wo_est, day, stamp)
            self.rows["claimprocs"].append(
                (self.key("claimprocs"), procnum, claim, patnum, *cp_row)
            )
        portion -= self.discount(patnum, ordinal, portion)
        self.payment(patnum, ordinal, portion, payer)

    def insurance(self, fee: Decimal, cover: int, writeoff_rate: int) -> tuple[Decimal, Decimal]:
        key = (fee, cover, writeoff_rate)
        cached = self._insurance.get(key)
        if cached is None:
            writeoff = self.money(fee * writeoff_rate / 100)
            cached = self._insurance[key] = (writeoff, self.money((fee - writeoff) * cover / 100))
        return cached

    def discount(self, patnum: int, ordinal: int, portion: Decimal) -> Decimal:
        """A courtesy discount on a few visits: a negative adjustment the patient won't pay."""
        if portion <= 0 or self.rng.random() >= 0.03:
            return ZERO_MONEY
        amount = min(portion, Decimal(self.rng.choice((10, 20, 25, 40, 50, 75))))
        self.rows["adjustments"].append(
            (
                self.key("adjustments"),
                patnum,
                self.day(ordinal),
                self.money(-amount),
                self.stamp(ordinal),
            )
        )
        return amount

    def payment(self, patnum: int, ordinal: int, portion: Decimal, payer: str) -> None:
        rng = self.rng
        if portion <= 0 or payer == "never" and rng.random() < 0.85:
            return
        amount, paid_on = portion, ordinal
        if payer == "slow":
            paid_on = ordinal + rng.randint(20, 150)
            if rng.random() < 0.35:
                amount = portion / 2
        elif payer == "over" and rng.random() < 0.5:
            amount = portion + rng.choice((10, 20, 25, 50, 100))
        if paid_on > self.today_ord:
            return
        self.rows["paysplits"].append(
            (
                self.key("paysplits"),
                patnum,
                self.money(amount),
                self.day(paid_on),
                self.stamp(paid_on),
            )
        )

    def late_fee(self, patnum: int) -> None:
        ordinal = self.today_ord - int(self.rng.random() * 300)
        amount = Decimal(self.rng.choice((5, 10, 15, 25, 35)))
        self.rows["adjustments"].append(
            (
                self.key("adjustments"),
                patnum,
                self.day(ordinal),
                self.money(amount),
                self.stamp(ordinal),
            )
        )

    def post_dated(self, patnum: int) -> None:
        ordinal = self.today_ord + self.rng.randint(1, 3)
        self.rows["procedurelogs"].append(
            (
                self.key("procedurelogs"),
                patnum,
                self.day(ordinal),
                self.fees["exam"],
                1,
                0,
                "C",
                self.stamp(ordinal),
            )
        )


def generate_ledger(
    seed: int,
    accounts: int,
    today: date,
    clock: Callable[[], datetime] | None = None,
) -> Ledger:
    """A deterministic practice of `accounts` families, with ~2 years of history before `today`."""
    generator = _Generator(seed, today)
    for _ in range(accounts):
        generator.family()
    tables = {}
    for name in TABLE_NAMES:
        rows = generator.rows[name]
        rows.sort(key=itemgetter(0))
        tables[name] = Table(name, rows)
    return Ledger(tables, clock=clock or _default_clock(today))


def _default_clock(today: date) -> Callable[[], datetime]:
    offset = timedelta(days=today.toordinal() - date.today().toordinal())

    def clock() -> datetime:
        return (datetime.now() + offset).replace(microsecond=0)

    return clock
