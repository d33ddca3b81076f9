"""Per-sync staging database: extraction streams validated pages here, holding no shared lock.

One DuckDB file per sync under `staging/<practice>/`; only the sync's own process opens
it. Pages arrive as lists of row dataclasses and are appended as Arrow batches, so memory
stays bounded by one page whatever the practice's size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pyarrow as pa

from balances_pipeline.storage import duck
from balances_pipeline.storage.layout import secure_private

MONEY = pa.decimal128(14, 2)

STAGING_TABLES: dict[str, tuple[str, pa.Schema]] = {
    "stg_aging_report": (
        "stg_aging_report",
        pa.schema(
            [("guarantor_id", pa.int64()), ("display_name", pa.string())]
            + [
                (name, MONEY)
                for name in (
                    "bal_0_30", "bal_31_60", "bal_61_90", "bal_over_90", "bal_total",
                    "ins_wo_est", "ins_pay_est", "patient_portion",
                )
            ]
        ),
    ),
    "stg_patients": (
        "stg_patients",
        pa.schema(
            [
                ("pat_num", pa.int64()),
                ("guarantor_id", pa.int64()),
                ("display_name", pa.string()),
                ("status", pa.string()),
                ("changed_at", pa.timestamp("us")),
            ]
        ),
    ),
    "stg_ledger_procedures": (
        "stg_ledger_procedures",
        pa.schema([
            ("proc_num", pa.int64()), ("pat_num", pa.int64()), ("proc_date", pa.date32()),
            ("proc_fee", MONEY), ("unit_qty", pa.int64()), ("base_units", pa.int64()),
            ("proc_status", pa.string()), ("changed_at", pa.timestamp("us")),
        ]),
    ),
    "stg_ledger_claimprocs": (
        "stg_ledger_claimprocs",
        pa.schema([
            ("claim_proc_num", pa.int64()), ("proc_num", pa.int64()), ("claim_num", pa.int64()),
            ("pat_num", pa.int64()), ("status", pa.string()), ("ins_pay_est", MONEY),
            ("ins_pay_amt", MONEY), ("write_off", MONEY), ("write_off_est", MONEY),
            ("date_cp", pa.date32()), ("changed_at", pa.timestamp("us")),
        ]),
    ),
    "stg_ledger_paysplits": (
        "stg_ledger_paysplits",
        pa.schema([
            ("split_num", pa.int64()), ("pat_num", pa.int64()), ("split_amt", MONEY),
            ("date_pay", pa.date32()), ("changed_at", pa.timestamp("us")),
        ]),
    ),
    "stg_ledger_adjustments": (
        "stg_ledger_adjustments",
        pa.schema([
            ("adj_num", pa.int64()), ("pat_num", pa.int64()), ("adj_date", pa.date32()),
            ("adj_amt", MONEY), ("changed_at", pa.timestamp("us")),
        ]),
    ),
    "stg_rejected_rows": (
        "stg_rejected_rows",
        pa.schema(
            [
                ("endpoint", pa.string()),
                ("row_key", pa.string()),
                ("reason", pa.string()),
                ("raw", pa.string()),
                ("account_id", pa.string()),
            ]
        ),
    ),
}


STAGED_KEYS = {
    "stg_aging_report": "guarantor_id",
    "stg_patients": "pat_num",
    "stg_ledger_procedures": "proc_num",
    "stg_ledger_claimprocs": "claim_proc_num",
    "stg_ledger_paysplits": "split_num",
    "stg_ledger_adjustments": "adj_num",
}


def _arrow_type_sql(arrow_type: pa.DataType) -> str:
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    return {
        pa.int64(): "BIGINT",
        pa.string(): "VARCHAR",
        pa.timestamp("us"): "TIMESTAMP",
        pa.date32(): "DATE",
    }[arrow_type]


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
            "INSERT OR REPLACE INTO stg_meta VALUES (?, ?)",
            [key, None if value is None else str(value)],
        )

    def get_meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM stg_meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def _create_tables(self) -> None:
        for table, schema in STAGING_TABLES.values():
            columns = ", ".join(f"{f.name} {_arrow_type_sql(f.type)}" for f in schema)
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS stg_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
        )
        self.counts: dict[str, int] = {table: 0 for table, _ in STAGING_TABLES.values()}

    def append(self, rows: list) -> None:
        """Append rows of one row type (its `RELATION` names the staging table)."""
        if not rows:
            return
        table, schema = STAGING_TABLES[rows[0].RELATION]
        columns = {field.name: [] for field in schema}
        for row in rows:
            for name, value in zip(columns, dataclasses.astuple(row), strict=True):
                columns[name].append(value)
        self.con.register("page_batch", pa.table(columns, schema=schema))
        self.con.execute(f"INSERT INTO {table} SELECT * FROM page_batch")  # noqa: S608
        self.con.unregister("page_batch")
        self.counts[table] += len(rows)

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
        for table, _ in STAGING_TABLES.values():
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
