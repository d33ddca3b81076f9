"""Per-sync staging database: extraction streams validated pages here, holding no shared lock.

One DuckDB file per sync under `staging/<practice>/`; only the sync's own process opens
it. Pages arrive as lists of row dataclasses, appended as Arrow batches, or as JSON bodies
validated set-based (`append_json_pages`, a batch of pages at a time), so memory stays
bounded by a batch of pages whatever the practice's size.
"""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

from balances_pipeline import schema
from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import secure_private

# The Arrow schema of each staging table's pages, keyed by table (a row type's `RELATION`).
STAGING_TABLES: dict[str, pa.Schema] = {
    name: schema.arrow_schema(relation) for name, relation in schema.STAGING_TABLES.items()
}
# The source key of each staged table that has one (unique per extract).
STAGED_KEYS: dict[str, str] = {
    name: relation.source_key
    for name, relation in schema.STAGING_TABLES.items()
    if relation.source_key
}


class JsonBodiesSql(Protocol):
    """How to read pages' JSON bodies set-based (`sources/rows.py` JsonPageSql)."""

    relation: str
    key: str
    structure: str
    values: tuple[tuple[str, str], ...]
    plain: str


class StagingDatabase:
    def __init__(self, settings: duck.DuckSettings, folder: Path, sync_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.settings = settings
        self.path = folder / f"{sync_id}.duckdb"
        self.con = duck.connect(settings, self.path)
        secure_private(self.path)
        self._create_tables()

    @classmethod
    def open(cls, settings: duck.DuckSettings, path: Path) -> StagingDatabase:
        """Reopen a staging file an earlier step wrote (the extract waiting to be published)."""
        if not path.is_file():
            raise FileNotFoundError(f"staging file {path.name} is gone")
        return cls(settings, path.parent, path.stem)

    def set_meta(self, key: str, value: object) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO stg_meta (key, value) VALUES (?, ?)",
            [key, None if value is None else str(value)],
        )

    def get_meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM stg_meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def _create_tables(self) -> None:
        for relation in (*schema.STAGING_TABLES.values(), schema.STG_META):
            self.con.execute(relation.create_sql(if_not_exists=True))
        self.counts: dict[str, int] = {table: 0 for table in STAGING_TABLES}

    def append(self, rows: list) -> None:
        """Append rows of one row type (its `RELATION` names the staging table)."""
        if not rows:
            return
        table = rows[0].RELATION
        page_schema = STAGING_TABLES[table]
        # The row type's fields are the table's columns, in order (sources/rows.py).
        values = attrgetter(*page_schema.names)
        columns = list(zip(*map(values, rows), strict=True)) if len(page_schema) > 1 else [
            [values(row) for row in rows]
        ]
        self.con.register("page_batch", pa.table(
            {name: list(column) for name, column in zip(page_schema.names, columns,
                                                         strict=True)},
            schema=page_schema,
        ))
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM page_batch")  # noqa: S608
        self.con.unregister("page_batch")
        self.counts[table] += len(rows)

    def append_json_bodies(self, sql: JsonBodiesSql, bodies: list[bytes]) -> set[int]:
        """Validate pages' JSON bodies set-based and append the pages whose every row is
        plainly valid; return the indexes of the others (for the row-by-row reader)."""
        if not bodies:
            return set()
        try:
            self.con.execute(_json_batch_sql(sql), [[body.decode("utf-8") for body in bodies]])
            doubtful = {row[0] for row in self.con.execute(
                "SELECT page FROM json_batch GROUP BY page"  # noqa: S608
                f" HAVING NOT (bool_and(plain) AND count(DISTINCT {sql.key}) = count(*))"
            ).fetchall()}
            columns = ", ".join(STAGING_TABLES[sql.relation].names)
            inserted = self.con.execute(
                f"INSERT INTO {sql.relation} BY NAME SELECT {columns} FROM json_batch"  # noqa: S608
                " WHERE NOT list_contains(?, page)", [sorted(doubtful)],
            ).fetchall()[0][0]
        except (duckdb.Error, UnicodeDecodeError):  # every page the row-by-row way
            return set(range(len(bodies)))
        finally:
            self.con.execute("DROP TABLE IF EXISTS json_batch")
        self.counts[sql.relation] += inserted
        return {number - 1 for number in doubtful}

    def first_duplicate_key(self) -> tuple[str, int] | None:
        """(table, key) of a source key staged twice, if any: rows that shifted between
        offset pages while the source changed."""
        for table, key in STAGED_KEYS.items():
            rows = self.con.execute(
                f"SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1 LIMIT 1"  # noqa: S608
            ).fetchall()
            if rows:
                return table, rows[0][0]
        return None

    def truncate(self) -> None:
        for table in STAGING_TABLES:
            self.con.execute(f"DELETE FROM {table}")  # noqa: S608
            self.counts[table] = 0

    def close(self) -> None:
        self.con.close()

    def reopen(self) -> None:
        self.con = duck.connect(self.settings, self.path)

    def remove(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass
        for path in (self.path, self.path.with_suffix(".duckdb.wal")):
            path.unlink(missing_ok=True)


def _json_batch_sql(sql: JsonBodiesSql) -> str:
    """`json_batch`: each row of the bodies (a VARCHAR[] parameter) with its page number
    (from 1), typed values and whether it is plainly valid. Our own SQL (page_sql.py): no
    value from a source is part of it."""
    values = ", ".join(f"{value} AS {column}" for column, value in sql.values)
    return f"""
        CREATE OR REPLACE TEMP TABLE json_batch AS
        WITH raw AS (
            SELECT page, unnest(from_json(body, {duck.sql_literal("[" + sql.structure + "]")}),
                                recursive := true)
            FROM unnest(?::VARCHAR[]) WITH ORDINALITY AS bodies(body, page)
        )
        SELECT page, {values}, coalesce({sql.plain}, false) AS plain FROM raw
    """  # noqa: S608


def remove_staging_files(paths: list[str]) -> None:
    """Delete the staging files (and their WALs) of syncs known to be dead."""
    for path in map(Path, paths):
        for file in (path, path.with_name(path.name + ".wal")):
            file.unlink(missing_ok=True)


def remove_stale_staging(folder: Path, keep: set[str]) -> int:
    """Delete staging files of dead syncs: every file of the folder not in `keep`."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if str(path) not in keep and str(path).removesuffix(".wal") not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
