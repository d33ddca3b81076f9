"""Every relation's columns come from `schema.py`: staging, raw ledger, working database
(new and migrated alike), published Parquet files and the analyst views — and the analyst
warehouse holds every relation and column of `docs/warehouse.md`."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from balances_pipeline import schema
from balances_pipeline.config import CollectionRule
from balances_pipeline.pipeline.collections import rules_table
from balances_pipeline.settings import layout_from_env
from balances_pipeline.simulator import Faults
from balances_pipeline.sources import rows
from balances_pipeline.storage import analyst, staging, working_db
from balances_pipeline.storage.analyst import ensure_analyst_warehouse
from balances_pipeline.storage.ledger_store import LEDGER_TABLES, LedgerStore
from balances_pipeline.storage.snapshots import SCHEMA_PLACEHOLDER
from balances_pipeline.storage.staging import StagingDatabase
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import sync_practice, warehouse_dicts, warehouse_query

DOCS = Path(__file__).resolve().parents[1] / "docs" / "warehouse.md"
# How DuckDB's catalog spells the type strings of the declarations.
CATALOG_TYPES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


def catalog_type(declared: str) -> str:
    return CATALOG_TYPES.get(declared, declared)


def declared(relation: schema.Relation, *, analyst_only: bool = False) -> list[tuple[str, str]]:
    columns = relation.analyst_columns if analyst_only else relation.columns
    return [(column.name, catalog_type(column.type)) for column in columns]


def described(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE {relation}").fetchall()]


@dataclass(frozen=True)
class Catalog:
    """What a working database holds, independent of column order."""

    columns: dict[str, dict[str, tuple[str, bool, str | None]]]
    constraints: set[tuple[str, str, tuple[str, ...]]]
    sequences: set[tuple[str, int, int]]


def catalog(path: Path) -> Catalog:
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns: dict[str, dict[str, tuple[str, bool, str | None]]] = {}
        for table, column, type_, nullable, default in con.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM duckdb_columns() WHERE database_name = current_database()"
        ).fetchall():
            columns.setdefault(table, {})[column] = (type_, nullable, default)
        constraints = {
            (table, kind, tuple(names))
            for table, kind, names in con.execute(
                "SELECT table_name, constraint_type, constraint_column_names"
                " FROM duckdb_constraints() WHERE database_name = current_database()"
            ).fetchall()
        }
        sequences = set(con.execute(
            "SELECT sequence_name, start_value, increment_by FROM duckdb_sequences()"
            " WHERE database_name = current_database()"
        ).fetchall())
        return Catalog(columns, constraints, sequences)
    finally:
        con.close()


# --- Staging and raw ledger ---


def test_staging_tables_and_arrow_schemas_are_the_declaration(balances_home) -> None:
    layout = layout_from_env().ensure()
    database = StagingDatabase(layout.duckdb, layout.staging_dir("p"), "sync-1")
    try:
        assert set(staging.STAGING_TABLES) == set(schema.STAGING_TABLES)
        for name, relation in schema.STAGING_TABLES.items():
            assert described(database.con, name) == declared(relation)
            arrow = staging.STAGING_TABLES[name]
            assert arrow.names == list(relation.names)
            assert arrow == schema.arrow_schema(relation)
        assert described(database.con, "stg_meta") == declared(schema.STG_META)
        assert staging.STAGED_KEYS == {
            "stg_aging_report": "guarantor_id", "stg_patients": "pat_num",
            "stg_ledger_procedures": "proc_num", "stg_ledger_claimprocs": "claim_proc_num",
            "stg_ledger_paysplits": "split_num", "stg_ledger_adjustments": "adj_num",
            "stg_source_balances": "account_id",
        }
    finally:
        database.remove()


def test_ledger_tables_have_the_staging_tables_columns(balances_home) -> None:
    layout = layout_from_env().ensure()
    con = LedgerStore(layout, "p")._connect()
    try:
        assert {table.table for table in LEDGER_TABLES} == {
            "ledger_patients", "ledger_procedures", "ledger_claimprocs", "ledger_paysplits",
            "ledger_adjustments",
        }
        for table in LEDGER_TABLES:
            staged = schema.STAGING_TABLES[table.staging_table]
            assert described(con, table.table) == declared(staged)
            assert table.key == staged.source_key
    finally:
        con.close()


def test_row_types_are_checked_against_the_declaration() -> None:
    for row_type in rows.ROW_TYPES:
        rows._check_declared(row_type)  # what the import does

    @dataclass(frozen=True, slots=True)
    class SwappedRow:
        RELATION: ClassVar[str] = "stg_ledger_paysplits"
        pat_num: int
        split_num: int
        split_amt: object
        date_pay: object
        changed_at: object

    with pytest.raises(TypeError, match="stg_ledger_paysplits"):
        rows._check_declared(SwappedRow)


def test_collection_rules_table_is_the_declaration() -> None:
    rules = [CollectionRule(id="r1", action="reminder", min_days_outstanding=30)]
    table = rules_table(rules)
    assert table.schema == schema.arrow_schema(schema.COLLECTION_RULES)
    assert table.to_pylist()[0]["rule_id"] == "r1"
    assert table.to_pylist()[0]["min_days_outstanding"] == 30


def test_unknown_types_and_keys_fail_at_declaration() -> None:
    with pytest.raises(ValueError, match="unsupported column type"):
        schema.Column("x", "DECIMAL(14.2)")
    with pytest.raises(ValueError, match="key column"):
        schema.Relation("t", (schema.Column("a", schema.VARCHAR),), primary_key=("b",))
    with pytest.raises(ValueError, match="NOT NULL"):
        schema.Relation("t", (schema.Column("a", schema.VARCHAR),), primary_key=("a",))


# --- Working database ---


def test_a_new_working_database_is_created_from_the_declaration(balances_home) -> None:
    layout = layout_from_env().ensure()
    with WorkingDatabase(layout).connect() as con:
        for table in schema.WORKING_TABLES:
            assert described(con, table.name) == declared(table)
        stamped = con.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    assert stamped == [(version, name) for version, name, _ in working_db._migrations()]
    found = catalog(layout.working_db_path)
    assert set(found.columns) == {t.name for t in schema.WORKING_TABLES} | {"schema_migrations"}
    assert {name for name, _, _ in found.sequences} == set(schema.WORKING_SEQUENCES)
    for table in schema.WORKING_TABLES:
        if table.primary_key:
            assert (table.name, "PRIMARY KEY", table.primary_key) in found.constraints
        for column in table.columns:
            assert found.columns[table.name][column.name][1] == column.nullable


def test_migrated_and_new_working_databases_are_the_same(balances_home, tmp_path) -> None:
    """0001 → 0005 (databases of earlier releases) and `schema.py` (new databases) build the
    same tables, columns, types, NOT NULLs, keys and sequences; only column order differs."""
    migrated = tmp_path / "migrated.duckdb"
    con = duckdb.connect(str(migrated))
    try:
        applied = working_db.apply_migrations(con)
    finally:
        con.close()
    assert applied == [version for version, _, _ in working_db._migrations()]
    assert applied[:5] == [1, 2, 3, 4, 5]

    layout = layout_from_env().ensure()
    with WorkingDatabase(layout).connect():
        pass
    assert catalog(migrated) == catalog(layout.working_db_path)


def test_an_old_working_database_applies_only_its_pending_migrations(balances_home) -> None:
    layout = layout_from_env().ensure()
    con = duckdb.connect(str(layout.working_db_path))
    try:
        assert working_db.apply_migrations(con, upto=3) == [1, 2, 3]
        con.execute(
            "INSERT INTO rejected_rows VALUES ('s1', 'p', '/x', 'k', 'bad', '{}', 'a1')"
        )
    finally:
        con.close()
    with WorkingDatabase(layout).connect() as con:
        versions = [row[0] for row in con.execute(
            "SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
        kept = con.execute("SELECT account_id, row_key FROM rejected_rows").fetchall()
    assert versions == [version for version, _, _ in working_db._migrations()]
    assert kept == [("a1", "k")]
    fresh = Path(str(layout.working_db_path) + ".new")
    con = duckdb.connect(str(fresh))
    try:
        working_db.prepare(con)
    finally:
        con.close()
    assert catalog(layout.working_db_path) == catalog(fresh)


# --- Analyst warehouse ---


def test_analyst_views_and_placeholders_are_the_declaration(balances_home) -> None:
    layout = layout_from_env().ensure()
    assert ensure_analyst_warehouse(layout)
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        for name, relation in schema.ANALYST_RELATIONS.items():
            assert described(con, name) == declared(relation, analyst_only=True), name
            assert [(n, catalog_type(t)) for n, t in schema.RELATIONS[name]] == declared(
                relation, analyst_only=True
            )
        [(version,)] = con.execute("SELECT schema_version FROM warehouse_info").fetchall()
    finally:
        con.close()
    assert version == analyst.ANALYST_SCHEMA_VERSION
    for name, relation in schema.ANALYST_RELATIONS.items():
        folder = layout.history_dir if name in schema.HISTORY_RELATIONS else layout.current_dir
        placeholder = pq.read_table(folder / SCHEMA_PLACEHOLDER / f"{name}.parquet")
        assert placeholder.num_rows == 0
        assert placeholder.schema.names == [c.name for c in relation.analyst_columns]
    assert "account_id" in [c.name for c in schema.REJECTED_ROWS.analyst_columns]
    assert "phase" not in [c.name for c in schema.SYNC_RUNS.analyst_columns]


def test_the_schema_version_is_a_hash_of_the_view_definitions(balances_home, monkeypatch) -> None:
    definitions = analyst._definitions("$current", "$history")
    digest = hashlib.sha256("\n;\n".join(definitions).encode()).hexdigest()[:16]
    assert analyst.ANALYST_SCHEMA_VERSION == digest
    relation = schema.ANALYST_RELATIONS["account_blocks"]
    monkeypatch.setitem(schema.ANALYST_RELATIONS, "account_blocks", schema.Relation(
        relation.name, relation.columns + (schema.Column("note", schema.VARCHAR),)
    ))
    assert analyst._definitions("$current", "$history") != definitions

    # A warehouse built by an earlier release (a hand-bumped version) is rebuilt.
    layout = layout_from_env().ensure()
    monkeypatch.undo()
    assert ensure_analyst_warehouse(layout)
    assert not ensure_analyst_warehouse(layout)
    con = duckdb.connect(str(layout.warehouse_path))
    con.execute("UPDATE warehouse_info SET fingerprint = ?", [f"v4:{layout.current_dir}"])
    con.close()
    assert ensure_analyst_warehouse(layout)


def test_an_outdated_placeholder_is_rewritten(balances_home) -> None:
    """An earlier release's zero-row `rejected_rows` file had no `account_id`: if it were
    kept, the view would name a column no file has."""
    layout = layout_from_env().ensure()
    ensure_analyst_warehouse(layout)
    placeholder = layout.current_dir / SCHEMA_PLACEHOLDER / "rejected_rows.parquet"
    old = [name for name in schema.REJECTED_ROWS.names if name != "account_id"]
    pq.write_table(pa.table({name: pa.array([], pa.string()) for name in old}), placeholder)
    layout.warehouse_path.unlink()
    ensure_analyst_warehouse(layout)
    assert pq.read_schema(placeholder).names == [
        c.name for c in schema.REJECTED_ROWS.analyst_columns
    ]
    assert warehouse_query("SELECT account_id FROM rejected_rows") == []


@pytest.mark.parametrize("working", ["new", "migrated"])
def test_a_rejected_row_shows_its_account_id(simulated, working) -> None:
    """After a real sync with a malformed row, in a new working database and in one an
    earlier release created (whose `rejected_rows` has `account_id` last)."""
    layout = layout_from_env().ensure()
    if working == "migrated":
        con = duckdb.connect(str(layout.working_db_path))
        try:
            working_db.apply_migrations(con)
        finally:
            con.close()
    simulated.server.set_faults("alpha_dental", Faults(malformed_rows=1))
    sync_practice(simulated.practice("alpha_dental"))
    [rejected] = warehouse_dicts("SELECT * FROM rejected_rows")
    assert list(rejected) == [name for name, _ in schema.RELATIONS["rejected_rows"]]
    assert rejected["endpoint"].endswith("reports/Aging")
    assert rejected["account_id"] is not None
    assert rejected["account_id"] == rejected["row_key"]
    assert rejected["account_id"] == str(json.loads(rejected["raw"])["PatNum"])
    with WorkingDatabase(layout).connect() as con:
        kept = con.execute("SELECT account_id FROM rejected_rows").fetchall()
    assert kept == [(rejected["account_id"],)]


# --- The contract: docs/warehouse.md ---


def contract() -> tuple[list[str], dict[str, dict[str, str | None]]]:
    """(relations of the index table, {relation: {column: type or None}}) of warehouse.md."""
    text = DOCS.read_text(encoding="utf-8")
    index = re.search(r"^## Relations\n(.*?)^###", text, re.M | re.S)
    assert index, "warehouse.md has no `## Relations` index"
    relations = re.findall(r"^\| `(\w+)` \|", index.group(1), re.M)
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    columns: dict[str, dict[str, str | None]] = {}
    for section in sections:
        heading = section.splitlines()[0]  # "`name` — ..." or "`a` and `b`"
        names = re.findall(r"`(\w+)`", heading.split(" — ")[0])
        body = section.split("\n", 1)[1]
        found: dict[str, str | None] = {}
        for inherited in re.findall(r"[Cc]olumns\s+of\s+`(\w+)`", body):
            found.update(columns[inherited])
        for cells in re.findall(r"^\| ([^|]+) \| ([^|]+) \|", body, re.M):
            if cells[0] in ("column", "---", "relation") or cells[0].startswith("`"):
                continue
            for name in cells[0].split(","):
                found[name.strip()] = cells[1].strip()
        for name, type_ in re.findall(r"plus\s+`(\w+)`\s+\((\w+)\)", body):
            found[name] = type_
        for name in names:
            columns[name] = dict(found)
    return relations, columns


def test_the_warehouse_has_every_relation_and_column_of_the_contract(balances_home) -> None:
    relations, columns = contract()
    assert len(relations) == 14 and "rejected_rows" in relations
    assert columns["rejected_rows"].keys() >= {"sync_id", "account_id", "raw"}
    assert columns["balance_history"]["snapshot_date"] == "DATE"
    assert columns["collection_target_history"] == columns["collection_targets"] | {
        "sync_id": "VARCHAR"
    }
    # The derived views: the columns of their `set` event, plus the named ones.
    events = {name: None for name in columns["override_events"]}
    columns["active_overrides"] = events
    columns["override_conflicts"] = events | {
        "new_patient_portion": "DECIMAL(14,2)", "new_insurance_portion": "DECIMAL(14,2)",
        "superseded_at": "TIMESTAMPTZ", "superseded_by_sync_id": "VARCHAR",
    }

    layout = layout_from_env().ensure()
    ensure_analyst_warehouse(layout)
    con = duckdb.connect(str(layout.warehouse_path), read_only=True)
    try:
        for relation in relations:
            assert columns[relation], f"warehouse.md lists no columns for {relation}"
            present = dict(described(con, relation))
            for column, type_ in columns[relation].items():
                assert column in present, f"{relation}.{column} is missing"
                if type_ is not None:
                    assert present[column] == catalog_type(type_), f"{relation}.{column}"
    finally:
        con.close()
