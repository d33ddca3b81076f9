"""The names analysts' views read in a published snapshot, and the small file tools around
them (markers for "no rows", the record of retired aliases, stale temporaries).

`<stem>@<snapshot_id>.parquet` names a file whose content never changes; the stem is the
relation (snapshots) or the practice-local day (balance_history). `storage/snapshots.py`
explains why the views read only such names.
"""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RETIRED_FILE = ".retired"
TEMPORARY_MAX_AGE_SECONDS = 3600
EMPTY_SUFFIX = ".empty.parquet"
_PUBLISHED_NAME = re.compile(
    r"^(?P<stem>[^.@][^@/]*)@(?P<sid>[^@/]+?)(?P<empty>\.empty)?\.parquet$"
)
# The views' glob syntax (DuckDB): `*`, `?` and `[...]`; a bracket holds one literal.
_GLOB_SPECIAL = re.compile(r"[\[*?]")


def glob_escape(path: str) -> str:
    """`path` as a DuckDB glob pattern that matches only itself (`[` → `[[]`, ...)."""
    return _GLOB_SPECIAL.sub(lambda found: f"[{found.group(0)}]", path)


@dataclass(frozen=True)
class PublishedName:
    """A view-visible file name: `<stem>@<snapshot_id>[.empty].parquet`. The stem is the
    relation (snapshots) or the practice-local day (balance_history)."""

    stem: str
    snapshot_id: str
    empty: bool = False

    @property
    def name(self) -> str:
        return f"{self.stem}@{self.snapshot_id}{EMPTY_SUFFIX if self.empty else '.parquet'}"


def published_name(stem: str, snapshot_id: str, *, empty: bool = False) -> str:
    return PublishedName(stem, snapshot_id, empty).name


def parse_published_name(name: str) -> PublishedName | None:
    found = _PUBLISHED_NAME.match(name)
    if found is None:
        return None
    return PublishedName(found["stem"], found["sid"], found["empty"] is not None)


def write_marker(source: Path, target: Path, values: dict[str, object]) -> None:
    """A one-row file with `source`'s columns: `values` set, every other column NULL. It
    stands for "no rows" where the views must see that a newer snapshot exists."""
    schema = pa.schema([field.with_nullable(True) for field in pq.read_schema(source)])
    columns = [pa.array([values.get(field.name)], type=field.type) for field in schema]
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), temporary)
    os.replace(temporary, target)  # `target` is a new name: nobody has listed it


def row_count(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def same_content(plain: Path, published: Path) -> bool:
    """Whether the published name `published` already shows the rows of `plain`."""
    if parse_published_name(published.name).empty:
        return row_count(plain) == 0
    try:
        return os.path.samefile(plain, published) or (
            plain.stat().st_size == published.stat().st_size
            and filecmp.cmp(plain, published, shallow=False)
        )
    except FileNotFoundError:
        return False


def warehouse_in_use(path: Path) -> bool:
    """Whether a process has `path` open with DuckDB, which locks the file for the whole
    session (a shared lock when read-only). Asked with `F_OFD_GETLK`, which takes no lock,
    so an analyst opening the file meanwhile is never refused; where the OS lacks it, the
    answer is yes. (Closing the probe's descriptor drops this process's own DuckDB lock on
    the file, if it has one: harmless, nothing opens the warehouse for writing in place.)"""
    getlk = getattr(fcntl, "F_OFD_GETLK", None)
    if getlk is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, getlk, request)
    except OSError:
        return True
    finally:
        os.close(fd)
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


def read_retired(directory: Path) -> dict[str, float]:
    try:
        retired = json.loads((directory / RETIRED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in retired.items()} if isinstance(retired, dict) else {}


def remove_stale_temporaries(folder: Path, now: float) -> None:
    """Hidden `*.tmp` entries an hour old: left by a process that died while writing."""
    if not folder.is_dir():
        return
    for path in folder.glob(".*.tmp"):
        try:
            if now - path.lstat().st_mtime > TEMPORARY_MAX_AGE_SECONDS:
                path.unlink()
        except FileNotFoundError:
            continue


def parse_day(stem: str) -> date | None:
    try:
        return date.fromisoformat(stem)
    except ValueError:
        return None
