"""Published snapshots: immutable per-practice directories of Parquet files, switched atomically.

A practice's published data is the directory its `published/current/<practice>` symlink
points at. Publishing writes a complete new directory, then replaces the symlink with one
`rename(2)`: all of a practice's relations switch together. Files that did not change are
hard-linked from the previous snapshot, so republishing state (a failed sync's `sync_runs`
row) costs little. The pipeline reads and writes `<relation>.parquet` in a directory.

What analysts' views read, and why (DuckDB opens a file when a query is bound, for its
metadata, and again by path when it is scanned; a symlink switched in between used to make
it read one file's bytes with another file's metadata):

- **A path a reader can list never changes content.** Views read only names that carry a
  snapshot id, `<relation>@<snapshot_id>.parquet` (`published_name`): hard links of
  `<relation>.parquet` that `point_to` makes just before the switch (a file carried over
  unchanged keeps the name it had). No such name is ever written twice.
- **A reader bound before a switch still finds every path it listed**: the new directory
  also holds hard links of every view-visible name of the directory it replaces (its
  *aliases*); `.retired` (hidden) records when each stopped being the data.
- **Each view keeps, per practice, only the newest file of each relation it read**
  (`storage/analyst.py`): the greatest name, snapshot ids being fixed-width and increasing
  per practice (`create`). A relation with no rows, or missing from a snapshot, is a
  one-row marker `<relation>@<snapshot_id>.empty.parquet`, dropped by the views after that
  choice: an empty newest snapshot hides its predecessors' rows.
- **Temporary entries never match a view's glob**: the symlink is made in
  `published/.switch/` and renamed into `current/`; the globs also skip hidden names.

Unlinking an alias is the one moment a query can still fail (with "No such file", never with
another file's bytes): a view opens every file it listed, an alias too, again when it scans.
`sweep` unlinks aliases retired more than `ALIAS_GRACE_SECONDS` ago, for the whole
warehouse at once (from publishing and from the stale sensor), at most once per
`SWEEP_INTERVAL_SECONDS`, and at most once per `ALIAS_MAX_DEFER_SECONDS` while any process
holds `warehouse.duckdb` open (`sweep_if_due`). A switch keeps `MAX_ALIASED_SNAPSHOTS` aliases per
relation at most (a burst of publishes must not make every view read dozens of copies).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from balances_pipeline.schema import ANALYST_RELATIONS, HISTORY_RELATIONS, quoted, select_list
from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import Layout, secure_private
from balances_pipeline.storage.published_names import (
    RETIRED_FILE,
    parse_published_name,
    published_name,
    read_retired,
    remove_stale_temporaries,
    row_count,
    same_content,
    warehouse_in_use,
    write_marker,
)

SCHEMA_PLACEHOLDER = "_schema"
KEEP_OLD_SNAPSHOTS = 2
MIN_AGE_BEFORE_PRUNE_SECONDS = 300
# How long a query bound before a switch can take to scan what it listed.
ALIAS_GRACE_SECONDS = 300
# A burst of publishes (a script setting overrides one by one) must not make every view
# read dozens of retired copies: a switch keeps at most this many aliases per relation.
MAX_ALIASED_SNAPSHOTS = 64
SWEEP_INTERVAL_SECONDS = 300
# While a process holds `warehouse.duckdb` open, the sweep runs at most this often.
ALIAS_MAX_DEFER_SECONDS = 1800
# Snapshot ids: nanoseconds since the epoch (20 digits) and 8 random hex digits.
_SNAPSHOT_ID = re.compile(r"^(\d{20})-[0-9a-f]{8}$")


def copy_to_parquet(con: duckdb.DuckDBPyConnection, relation: str, query: str, path: Path,
                    params: list | None = None) -> None:
    """Write `query`'s rows as `relation` (contract columns and types) to a Parquet file."""
    con.execute(
        f"COPY (SELECT {select_list(relation, 'q')} FROM ({query}) AS q) "  # noqa: S608
        f"TO {duck.sql_literal(str(path))} (FORMAT parquet, COMPRESSION zstd)",
        params or [],
    )


def new_snapshot_id(after: str | None = None) -> str:
    """A new snapshot id, greater than `after` (the practice's newest) even if the clock
    went back: the views take the greatest id as the newest."""
    nanoseconds = time.time_ns()
    found = _SNAPSHOT_ID.match(after or "")
    if found:
        nanoseconds = max(nanoseconds, int(found.group(1)) + 1)
    return f"{nanoseconds:020d}-{uuid.uuid4().hex[:8]}"


def _schema_hash(relation: str) -> str:
    columns = [(c.name, c.type) for c in ANALYST_RELATIONS[relation].analyst_columns]
    return hashlib.sha256(json.dumps(columns).encode()).hexdigest()[:12]


class SnapshotStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def link_path(self, practice_id: str) -> Path:
        return self.layout.current_dir / practice_id

    @property
    def switch_dir(self) -> Path:
        """Where a practice's new symlink is made before it is renamed into `current/`."""
        return self.layout.published_dir / ".switch"

    def current_dir(self, practice_id: str) -> Path | None:
        """The directory of the practice's published relations (None: never published).
        In the DuckLake layout, a private copy of its rows in the lake."""
        if self.layout.lake is not None:
            from balances_pipeline.storage import lake_published  # it imports this module
            from balances_pipeline.storage.working_db import WorkingDatabase

            with WorkingDatabase(self.layout).connect() as con:
                return lake_published.checkout(self.layout, con, practice_id)
        link = self.link_path(practice_id)
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    def current_id(self, practice_id: str) -> str | None:
        if self.layout.lake is not None:
            return None  # no local directory is the published one
        current = self.current_dir(practice_id)
        return current.name if current else None

    def snapshot_dir(self, practice_id: str, snapshot_id: str) -> Path:
        return self.layout.snapshots_dir / practice_id / snapshot_id

    def newest_id(self, practice_id: str) -> str | None:
        """The greatest snapshot id of the practice (published or not)."""
        folder = self.layout.snapshots_dir / practice_id
        if not folder.is_dir():
            return None
        ids = [p.name for p in folder.iterdir() if _SNAPSHOT_ID.match(p.name)]
        return max(ids, default=None)

    def create(self, practice_id: str) -> Path:
        snapshot_id = new_snapshot_id(self.newest_id(practice_id))
        directory = self.snapshot_dir(practice_id, snapshot_id)
        directory.mkdir(parents=True, mode=self.layout.publish_dir_mode())
        self.layout.secure_published(directory.parent)
        self.layout.secure_published(directory)
        return directory

    def carry_over(self, practice_id: str, new_dir: Path, names: list[str]) -> list[str]:
        """Hard-link files of the current snapshot that `new_dir` does not have yet. (In the
        DuckLake layout a publish leaves the relations it lacks as they are instead.)"""
        linked: list[str] = []
        if self.layout.lake is not None:
            return linked
        current = self.current_dir(practice_id)
        if current is None:
            return linked
        for name in names:
            source, target = current / name, new_dir / name
            if source.exists() and not target.exists():
                os.link(source, target)
                linked.append(name)
        return linked

    # --- the names views read -----------------------------------------------------------

    def _names(self, directory: Path) -> dict[str, list[str]]:
        """The view-visible names of a snapshot directory's relations, oldest first: the
        last is the relation's data, the others are aliases."""
        found: dict[str, list[str]] = {}
        for path in directory.iterdir():
            parsed = parse_published_name(path.name)
            if parsed and parsed.stem in ANALYST_RELATIONS:
                found.setdefault(parsed.stem, []).append(path.name)
        return {stem: sorted(names) for stem, names in found.items()}

    def name_for_views(self, practice_id: str, directory: Path) -> None:
        """Make each relation's newest view-visible name in `directory` its data in this
        snapshot: the newest name already there if it has the same content (a file carried
        over keeps its name, so it is never read twice), else a new name with this
        snapshot's id (a hard link, or a marker when the relation has no rows or is not in
        this snapshot). Idempotent; never rewrites a name that exists."""
        snapshot_id = directory.name
        names = self._names(directory)
        for relation in ANALYST_RELATIONS:
            if relation in HISTORY_RELATIONS:
                continue
            plain = directory / f"{relation}.parquet"
            newest = directory / names[relation][-1] if relation in names else None
            if plain.exists():
                if newest is not None and same_content(plain, newest):
                    continue
                if row_count(plain):
                    os.link(plain, directory / published_name(relation, snapshot_id))
                else:
                    write_marker(plain, directory / published_name(relation, snapshot_id,
                                                                   empty=True),
                                 {"practice_id": practice_id})
            elif newest is not None and not parse_published_name(newest.name).empty:
                # Not in this snapshot, but carried aliases would show an older snapshot's
                # rows: a marker says this one has none.
                write_marker(newest, directory / published_name(relation, snapshot_id,
                                                                empty=True),
                             {"practice_id": practice_id})

    def _carry_aliases(self, old_dir: Path, new_dir: Path) -> None:
        """Link into `new_dir` every view-visible name of `old_dir`: readers bound to the
        old snapshot open them again, through the switched symlink, when they scan."""
        for path in old_dir.iterdir():
            if parse_published_name(path.name) is None:
                continue
            target = new_dir / path.name
            if target.exists():
                continue
            try:
                os.link(path, target)
            except FileNotFoundError:  # swept meanwhile: its grace is over
                continue

    def _record_retired(self, directory: Path, previous: Path | None, now: float) -> None:
        """Write `directory`'s `.retired`: when each alias (every name but the newest of its
        relation) stopped being the data; keep `MAX_ALIASED_SNAPSHOTS` per relation."""
        known = read_retired(previous) if previous is not None else {}
        known |= read_retired(directory)
        retired = {}
        for aliases in (names[:-1] for names in self._names(directory).values()):
            for dropped in aliases[:-MAX_ALIASED_SNAPSHOTS]:
                (directory / dropped).unlink(missing_ok=True)
            for name in aliases[-MAX_ALIASED_SNAPSHOTS:]:
                retired[name] = known.get(name, now)
        self._write_retired(directory, retired)

    def _write_retired(self, directory: Path, retired: dict[str, float]) -> None:
        temporary = directory / f"{RETIRED_FILE}.{uuid.uuid4().hex}.tmp"
        temporary.write_text(json.dumps(retired, sort_keys=True), encoding="utf-8")
        self.layout.secure_published(temporary)
        os.replace(temporary, directory / RETIRED_FILE)

    def point_to(self, practice_id: str, snapshot_dir: Path) -> None:
        """The atomic step: replace the practice's symlink with one rename (after giving
        the new snapshot its view-visible names and the replaced one's as aliases)."""
        current = self.current_dir(practice_id)
        previous = current if current is not None and current != snapshot_dir.resolve() else None
        if previous is not None:
            self._carry_aliases(previous, snapshot_dir)
        self.name_for_views(practice_id, snapshot_dir)
        self._record_retired(snapshot_dir, previous, time.time())
        for path in snapshot_dir.iterdir():
            self.layout.secure_published(path)
        link = self.link_path(practice_id)
        self.switch_dir.mkdir(exist_ok=True)
        self.layout.secure_published(self.switch_dir)
        temporary = self.switch_dir / f"{practice_id}.{uuid.uuid4().hex}.tmp"
        target = os.path.relpath(snapshot_dir, link.parent)  # valid from both directories
        os.symlink(target, temporary)
        os.replace(temporary, link)

    # --- clean-up -----------------------------------------------------------------------

    def prune(self, practice_id: str) -> None:
        """Drop old snapshots, keeping a few recent ones; then sweep aliases if it is due."""
        folder = self.layout.snapshots_dir / practice_id
        if folder.is_dir():
            current = self.current_id(practice_id)
            candidates = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != current)
            now = time.time()
            for old in candidates[:-KEEP_OLD_SNAPSHOTS] if KEEP_OLD_SNAPSHOTS else candidates:
                if now - old.stat().st_mtime > MIN_AGE_BEFORE_PRUNE_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
        self.sweep_if_due()

    def sweep_if_due(self, *, now: float | None = None) -> bool:
        """Run `sweep` if the last one (of any process) is `SWEEP_INTERVAL_SECONDS` old, or
        `ALIAS_MAX_DEFER_SECONDS` old while a process holds `warehouse.duckdb` open.

        Unlinking a file a query listed just before fails that query when it opens the file
        again (a view opens every file it listed, aliases too). With no session open no
        query can be running; with one, sweeps are rare: a client querying all day meets
        at most one every `ALIAS_MAX_DEFER_SECONDS`, whatever the publish rate."""
        now = time.time() if now is None else now
        if self.layout.lake is not None or not self.layout.locks_dir.is_dir():
            return False
        stamp = self.layout.pipeline_dir / "sweep.stamp"
        interval = (ALIAS_MAX_DEFER_SECONDS if warehouse_in_use(self.layout.warehouse_path)
                    else SWEEP_INTERVAL_SECONDS)
        try:
            if now - stamp.stat().st_mtime < interval:
                return False
        except FileNotFoundError:
            pass
        lock = FileLock(self.layout.locks_dir / "sweep.lock", timeout=0)
        try:
            with lock:
                stamp.touch()
                secure_private(stamp)
                os.utime(stamp, (now, now))
                self.sweep(now=now)
        except Timeout:
            return False
        return True

    def sweep(self, *, now: float | None = None, older_than: float | None = None) -> None:
        """Unlink what no reader bound within `older_than` seconds (default
        `ALIAS_GRACE_SECONDS`) can still need: aliases retired longer ago, balance_history
        files superseded (or out of retention) that long ago, placeholders of an earlier
        schema."""
        now = time.time() if now is None else now
        older_than = ALIAS_GRACE_SECONDS if older_than is None else older_than
        current = self.layout.current_dir
        for link in sorted(current.iterdir()) if current.is_dir() else []:
            if link.name.startswith(".") or not link.is_symlink() or not link.is_dir():
                continue
            self._sweep_aliases(link.resolve(), now, older_than)
            remove_stale_temporaries(link.resolve(), now)
        self._sweep_placeholders(now, older_than)
        remove_stale_temporaries(self.switch_dir, now)
        from balances_pipeline.storage.history import sweep_history  # history imports us

        sweep_history(self.layout, now=now, older_than=older_than)

    def _sweep_aliases(self, directory: Path, now: float, older_than: float) -> None:
        retired = read_retired(directory)
        kept = {}
        for aliases in (names[:-1] for names in self._names(directory).values()):
            for name in aliases:
                since = retired.get(name, now)
                if now - since > older_than:
                    (directory / name).unlink(missing_ok=True)
                else:
                    kept[name] = since
        if kept != retired:
            self._write_retired(directory, kept)

    def _sweep_placeholders(self, now: float, older_than: float) -> None:
        for folder in (self.layout.current_dir, self.layout.history_dir):
            folder = folder / SCHEMA_PLACEHOLDER
            if not folder.is_dir():
                continue
            by_stem: dict[str, list[Path]] = {}
            for path in folder.iterdir():
                parsed = parse_published_name(path.name)
                if parsed and parsed.stem in ANALYST_RELATIONS:
                    by_stem.setdefault(parsed.stem, []).append(path)
            for stem, paths in by_stem.items():
                newest = folder / published_name(stem, f"schema-{_schema_hash(stem)}")
                if newest not in paths or now - newest.stat().st_mtime <= older_than:
                    continue
                for path in paths:
                    if path != newest:
                        path.unlink(missing_ok=True)

    # --- placeholders and earlier releases' files -------------------------------------

    def ensure_schema_placeholder(self) -> None:
        """Zero-row files of every relation, so analyst views work before the first sync.

        Two per relation: `<relation>.parquet`, rewritten when its columns are not the
        relation's (written by an earlier release, before a column was added), and the one
        the views read, `<relation>@schema-<hash of the columns>.parquet`, which is never
        rewritten: a new column set is a new name (the old one is swept).
        """
        targets = {
            name: (self.layout.history_dir if name in HISTORY_RELATIONS
                   else self.layout.current_dir) / SCHEMA_PLACEHOLDER / f"{name}.parquet"
            for name in ANALYST_RELATIONS
        }
        missing = [
            name for name, target in targets.items()
            if _parquet_columns(target)
            != [column.name for column in ANALYST_RELATIONS[name].analyst_columns]
        ]
        if missing:
            con = duck.connect(self.layout.duckdb)
            try:
                for name in missing:
                    folder = targets[name].parent
                    folder.mkdir(parents=True, exist_ok=True)
                    self.layout.secure_published(folder)
                    columns = ", ".join(
                        f"NULL AS {quoted(column.name)}"
                        for column in ANALYST_RELATIONS[name].analyst_columns
                    )
                    target = targets[name]
                    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
                    copy_to_parquet(con, name, f"SELECT {columns} WHERE false", temporary)  # noqa: S608
                    os.replace(temporary, target)
                    self.layout.secure_published(target)
            finally:
                con.close()
        for name, plain in targets.items():
            named = plain.with_name(published_name(name, f"schema-{_schema_hash(name)}"))
            if not named.exists():
                # A copy, not a link: `plain` may be rewritten, `named` never is.
                temporary = named.with_name(f".{named.name}.{uuid.uuid4().hex}.tmp")
                shutil.copyfile(plain, temporary)
                self.layout.secure_published(temporary)
                os.replace(temporary, named)

    def upgrade_published(self) -> None:
        """Give the snapshots an earlier release published their view-visible names."""
        current = self.layout.current_dir
        for link in sorted(current.iterdir()) if current.is_dir() else []:
            if link.name.startswith((".", SCHEMA_PLACEHOLDER)) or not link.is_symlink():
                continue
            if link.is_dir():
                self.name_for_views(link.name, link.resolve())
                for path in link.resolve().iterdir():
                    self.layout.secure_published(path)


def _parquet_columns(path: Path) -> list[str] | None:
    """The column names of a Parquet file; None if it is missing or unreadable."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return None
