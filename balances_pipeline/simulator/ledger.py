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
from collections import deque
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

EMPTY_DATE = "0001-01-01"
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
CENT = Decimal("0.01")
JOURNAL_LENGTH = 10_000

# The fields each table keeps, primary key first. REST rows and the ShortQuery tables are
# derived from these (server.py, queries.py); patients carry synthetic PHI (seeded, never
# real) so tests can prove that the pipeline never stores it.
TABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "patients": (
        "PatNum",
        "LName",
        "FName",
        "PatStatus",
        "Gender",
        "Birthdate",
        "SSN",
        "Address",
        "City",
        "State",
        "Zip",
        "HmPhone",
        "WirelessPhone",
        "Email",
        "Guarantor",
        "ClinicNum",
        "DateTStamp",
    ),
    "procedurelogs": (
        "ProcNum",
        "PatNum",
        "ProcDate",
        "ProcFee",
        "UnitQty",
        "BaseUnits",
        "ProcStatus",
        "ClinicNum",
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
        "ClaimPaymentNum",
        "ClinicNum",
        "SecDateTEdit",
    ),
    "paysplits": (
        "SplitNum",
        "PatNum",
        "SplitAmt",
        "DatePay",
        "PayNum",
        "ProcNum",
        "ClinicNum",
        "SecDateTEdit",
    ),
    "adjustments": (
        "AdjNum",
        "PatNum",
        "AdjDate",
        "AdjAmt",
        "AdjType",
        "ProcNum",
        "ClinicNum",
        "SecDateTEdit",
    ),
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
        "ClaimPaymentNum",
        "SplitNum",
        "PayNum",
        "AdjNum",
        "AdjType",
        "ClinicNum",
    }
)
TABLE_NAMES: tuple[str, ...] = tuple(TABLE_FIELDS)

# Open Dental's enums: the REST API serves their names, the database (ShortQuery) their
# numbers (OpenDentBusiness PatientStatus, PatientGender, ProcStat, ClaimProcStatus).
PAT_STATUS = {
    "Patient": 0,
    "NonPatient": 1,
    "Inactive": 2,
    "Archived": 3,
    "Deleted": 4,
    "Deceased": 5,
    "Prospective": 6,
}
GENDER = {"Male": 0, "Female": 1, "Unknown": 2}
PROC_STATUS = {"TP": 1, "C": 2, "EC": 3, "EO": 4, "R": 5, "D": 6, "Cn": 7, "TPi": 8}
CLAIMPROC_STATUS = {
    "NotReceived": 0,
    "Received": 1,
    "Preauth": 2,
    "Adjustment": 3,
    "Supplemental": 4,
    "CapClaim": 5,
    "Estimate": 6,
    "CapComplete": 7,
    "CapEstimate": 8,
    "InsHist": 9,
}
ENUM_FIELDS: dict[tuple[str, str], dict[str, int]] = {
    ("patients", "PatStatus"): PAT_STATUS,
    ("patients", "Gender"): GENDER,
    ("procedurelogs", "ProcStatus"): PROC_STATUS,
    ("claimprocs", "Status"): CLAIMPROC_STATUS,
}
# Adjustment types (definition.DefNum, category 1) the generator uses.
ADJ_TYPE_DISCOUNT = 1  # a negative adjustment ("Misc Neg Adjustment")
ADJ_TYPE_FEE = 2  # a positive one ("Misc Pos Adjustment")

# Fields a row may omit (when added through the control paths or loaded from a dataset):
# their default. `None` means "the row's own key" (a payment of one split).
OPTIONAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "patients": {
        "Gender": "Unknown",
        "Birthdate": EMPTY_DATE,
        "SSN": "",
        "Address": "",
        "City": "",
        "State": "",
        "Zip": "",
        "HmPhone": "",
        "WirelessPhone": "",
        "Email": "",
        "ClinicNum": 0,
    },
    "procedurelogs": {"ClinicNum": 0},
    "claimprocs": {"ClaimPaymentNum": 0, "ClinicNum": 0},
    "paysplits": {"PayNum": None, "ProcNum": 0, "ClinicNum": 0},
    "adjustments": {"AdjType": None, "ProcNum": 0, "ClinicNum": 0},
}


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
        defaults = OPTIONAL_DEFAULTS[self.name]
        missing = [f for f in self.fields if f not in row and f not in defaults]
        if missing:
            raise ValueError(f"{self.name}: missing fields {missing}")
        values = [
            self._coerce_value(f, row[f]) if f in row else defaults[f] for f in self.fields
        ]
        for i, field in enumerate(self.fields):
            if values[i] is None:  # a default that depends on the row
                values[i] = self._derived_default(field, values)
        return tuple(values)

    def _derived_default(self, field: str, values: list[Any]) -> Any:
        if field == "PayNum":
            return values[0]
        if field == "AdjType":
            amount = values[self.positions["AdjAmt"]]
            return ADJ_TYPE_DISCOUNT if amount < 0 else ADJ_TYPE_FEE
        raise ValueError(f"{self.name}: {field} is required")

    def _coerce_value(self, field: str, value: Any) -> Any:
        if field in self.money_fields:
            return to_money(value)
        if field in INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError(f"{self.name}: {field} must be an integer")
            return int(value)
        text = str(value)
        names = ENUM_FIELDS.get((self.name, field))
        if names is not None and text not in names:
            raise ValueError(f"{self.name}: {field} must be one of {', '.join(names)}")
        return text

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
        # (version, table, key) of the latest changes, for mirrors kept in step with the
        # ledger (the ShortQuery database); bounded, a mirror further behind rebuilds.
        self.journal: deque[tuple[int, str, int]] = deque(maxlen=JOURNAL_LENGTH)
        # (PatNum, stamp) of every deleted row: a family's FHIR Account changes when one of
        # its rows goes, though no remaining row carries a newer stamp.
        self.deletions: list[tuple[int, str]] = []

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
            self._changed(table, inserted[t.key_field])
            return inserted

    def edit_row(self, table: str, key: int, **fields: Any) -> dict[str, Any]:
        with self.lock:
            t = self.table(table)
            changes = dict(fields)
            changes[t.stamp_field] = self.now_stamp()
            updated = t.update(int(key), changes)
            self._changed(table, int(key))
            return updated

    def convert(self, stamp: datetime) -> None:
        """Give every row of every table one change stamp, as a PMS conversion leaves a
        database (an office's history imported at once)."""
        with self.lock:
            text = format_stamp(stamp)
            for name, t in self.tables.items():
                for row in list(t):
                    key = int(row[t.key_field])
                    t.update(key, {t.stamp_field: text})
                    self._changed(name, key)

    def delete_row(self, table: str, key: int) -> dict[str, Any]:
        with self.lock:
            deleted = self.table(table).delete(int(key))
            self.deletions.append((int(deleted.get("PatNum") or 0), self.now_stamp()))
            self._changed(table, int(key))
            return deleted

    def _changed(self, table: str, key: int) -> None:
        self.version += 1
        self.journal.append((self.version, table, key))

    def changes_since(self, version: int) -> list[tuple[str, int]] | None:
        """(table, key) of every change after `version`, or None if the journal no longer
        reaches back that far."""
        with self.lock:
            if version == self.version:
                return []
            if not self.journal or self.journal[0][0] > version + 1:
                return None
            return [(table, key) for v, table, key in self.journal if v > version]


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

# Synthetic names; a few accented (é, ñ), as real registers have: aging files written in
# cp1252 (simulator/aging_files.py) and every display of a name must carry them intact.
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
    "Noé",
    "Oakley",
    "Perrin",
    "Rémy",
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
    "Ibáñez",
    "Kingsley",
    "Lowmoor",
    "Marshwood",
    "Nettlefield",
    "Orchardson",
    "Peñafort",
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


STREETS = (
    "Alder",
    "Birch",
    "Cedar",
    "Dogwood",
    "Elm",
    "Fir",
    "Hawthorn",
    "Juniper",
    "Laurel",
    "Maple",
    "Oak",
    "Pine",
    "Spruce",
    "Willow",
)
STREET_KINDS = ("St", "Ave", "Ln", "Ct", "Way", "Dr")
CITIES = (("Springfield", "OR"), ("Fairview", "ID"), ("Riverton", "UT"), ("Lakewood", "CO"))
AREA_CODES = ("208", "303", "385", "503")


class _Phi:
    """Synthetic, seeded personal data: nothing here can be a real person's.

    SSNs start with 9 (never issued as an SSN), phone numbers are in 555-0100..0199 (kept
    for fiction), e-mail addresses are at example.com. Drawn from its own generator so that
    the ledger's amounts do not depend on it.
    """

    def __init__(self, seed: int, today: date) -> None:
        self.rng = random.Random(f"phi:{seed}")
        self.today = today

    def person(self, first: str, last: str, patnum: int, child: bool) -> tuple[str, ...]:
        rng = self.rng
        age = rng.randint(3, 17) if child else rng.randint(19, 86)
        born = self.today.toordinal() - age * 365 - rng.randrange(365)
        city, state = rng.choice(CITIES)
        area = rng.choice(AREA_CODES)
        return (
            rng.choice(("Male", "Female", "Female", "Male", "Unknown")),
            date.fromordinal(born).isoformat(),
            f"9{rng.randrange(10**8):08d}",
            f"{rng.randint(10, 9899)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}",
            city,
            state,
            f"{rng.randrange(10**5):05d}",
            f"({area})555-01{rng.randrange(100):02d}",
            f"({area})555-01{rng.randrange(100):02d}",
            f"{first.lower()}.{last.lower()}{patnum}@example.com",
        )

    def household(self, guarantor_phi: tuple[str, ...]) -> tuple[str, ...]:
        """A family member at the guarantor's address and home phone."""
        return guarantor_phi[3:8]


class _Clinics:
    """Which clinic families, patients and transactions belong to (ClinicNum).

    With `count` 0 the database has no clinics and every ClinicNum is 0. Otherwise each
    family's guarantor is assigned one of clinics 1..count; a few members are assigned
    another clinic, and a few procedures are done at another clinic than the patient's.
    Drawn from its own generator so that the ledger's amounts do not depend on it.
    """

    def __init__(self, seed: int, count: int) -> None:
        self.count = count
        self.rng = random.Random(f"clinics:{seed}")
        self.of_patient: dict[int, int] = {}

    def other(self, clinic: int) -> int:
        return clinic % self.count + 1

    def family(self) -> int:
        return self.rng.randint(1, self.count) if self.count else 0

    def member(self, patnum: int, family_clinic: int, is_guarantor: bool) -> int:
        clinic = family_clinic
        if self.count > 1 and not is_guarantor and self.rng.random() < 0.1:
            clinic = self.other(clinic)
        self.of_patient[patnum] = clinic
        return clinic

    def visit(self, patnum: int) -> int:
        clinic = self.of_patient.get(patnum, 0)
        if self.count > 1 and self.rng.random() < 0.05:
            clinic = self.other(clinic)
        return clinic


class _Generator:
    def __init__(self, seed: int, today: date, clinics: int = 0) -> None:
        self.rng = random.Random(seed)
        self.phi = _Phi(seed, today)
        self.clinics = _Clinics(seed, clinics)
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
        family_clinic = self.clinics.family()
        guarantor_phi: tuple[str, ...] = ()
        for member in range(size):
            patnum = self.key("patients")
            member_status = status if member == 0 else "Patient"
            if member > 0 and rng.random() < 0.05:
                member_status = "Inactive"
            first_seen = self.today_ord - HISTORY_DAYS - rng.randrange(1500)
            first = rng.choice(FIRST_NAMES)
            stamp = self.stamp(first_seen)
            phi = self.phi.person(first, last, patnum, child=member >= 2)
            if member == 0:
                guarantor_phi = phi
            elif self.phi.rng.random() < 0.8:
                phi = (*phi[:3], *self.phi.household(guarantor_phi), *phi[8:])
            clinic = self.clinics.member(patnum, family_clinic, member == 0)
            self.rows["patients"].append(
                (patnum, last, first, member_status, *phi, guarantor, clinic, stamp)
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
                self.clinics.of_patient.get(patnum, 0),
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
        clinic = self.clinics.visit(patnum)
        portion = Decimal(0)
        for fee, cover in items:
            procnum = self.key("procedurelogs")
            self.rows["procedurelogs"].append(
                (procnum, patnum, day, fee, 1, 0, "C", clinic, stamp)
            )
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
                    claim,  # one insurance check per claim (ClaimPaymentNum)
                    clinic,
                    self.stamp(ordinal + lag),
                )
            else:
                wo_est = writeoff if writeoff_rate else NO_ESTIMATE
                cp_row = (
                    "NotReceived", estimate, ZERO_MONEY, ZERO_MONEY, wo_est, day, 0, clinic, stamp
                )
            self.rows["claimprocs"].append(
                (self.key("claimprocs"), procnum, claim, patnum, *cp_row)
            )
        portion -= self.discount(patnum, ordinal, portion, clinic)
        self.payment(patnum, ordinal, portion, payer, clinic)

    def insurance(self, fee: Decimal, cover: int, writeoff_rate: int) -> tuple[Decimal, Decimal]:
        key = (fee, cover, writeoff_rate)
        cached = self._insurance.get(key)
        if cached is None:
            writeoff = self.money(fee * writeoff_rate / 100)
            cached = self._insurance[key] = (writeoff, self.money((fee - writeoff) * cover / 100))
        return cached

    def discount(self, patnum: int, ordinal: int, portion: Decimal, clinic: int) -> Decimal:
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
                ADJ_TYPE_DISCOUNT,
                0,
                clinic,
                self.stamp(ordinal),
            )
        )
        return amount

    def payment(
        self, patnum: int, ordinal: int, portion: Decimal, payer: str, clinic: int
    ) -> None:
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
        splitnum = self.key("paysplits")
        self.rows["paysplits"].append(
            (
                splitnum,
                patnum,
                self.money(amount),
                self.day(paid_on),
                splitnum,  # a payment of one split (PayNum)
                0,
                clinic,
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
                ADJ_TYPE_FEE,
                0,
                self.clinics.of_patient.get(patnum, 0),
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
                self.clinics.of_patient.get(patnum, 0),
                self.stamp(ordinal),
            )
        )

    def deleted_procedures(self, seed: int) -> None:
        """A few procedures entered by mistake and deleted (ProcStatus D): they stay in the
        table and carry no money. Added last, from their own generator, so that no other
        row's key or amount depends on them."""
        rng = random.Random(f"deleted:{seed}")
        t = self.rows["procedurelogs"]
        for row in list(t):
            if row[6] == "C" and rng.random() < 0.004:
                t.append((self.key("procedurelogs"), *row[1:6], "D", *row[7:]))


def generate_ledger(
    seed: int,
    accounts: int,
    today: date,
    clock: Callable[[], datetime] | None = None,
    clinics: int = 0,
) -> Ledger:
    """A deterministic practice of `accounts` families, with ~2 years of history before `today`.

    `clinics`: 0 for a database without clinics (every ClinicNum 0), else the number of
    clinics (1..clinics) its families and transactions are spread over.
    """
    generator = _Generator(seed, today, clinics)
    for _ in range(accounts):
        generator.family()
    generator.deleted_procedures(seed)
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
