"""Collection targets: evaluate the practice's rules on its effective balances, and hand off.

Reads the published `outstanding_balances`, the staff blocks and earlier days' targets;
writes `collection_targets` and `collection_exclusions` (published with the practice),
replaces the day's rows of `collection_target_history`, and writes the day's CSV for the
messaging side. Runs under the practice's publish lock, so it always sees one consistent
set of balances, overrides and blocks.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from balances_pipeline.config import CollectionRule, Practice, PracticesFile, RulesError
from balances_pipeline.schema import COLLECTION_RELATIONS, COLLECTION_RULES, arrow_schema
from balances_pipeline.storage import duck, sync_runs
from balances_pipeline.storage.duck import sql_literal
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.publish import CollectionDay, StateChanges, practice_lock, publish
from balances_pipeline.storage.snapshots import SnapshotStore, copy_to_parquet
from balances_pipeline.storage.sql_files import load_sql
from balances_pipeline.storage.working_db import WorkingDatabase

log = logging.getLogger(__name__)

EXPORT_COLUMNS = "practice_id, account_id, as_of_date, rule_id, action, amount, days_outstanding"


class NoBalancesYet(RuntimeError):
    """The practice has no published balances to evaluate."""


@dataclass
class CollectionOutcome:
    practice_id: str
    as_of_date: date
    evaluated_at: datetime
    rules: int
    targets_by_action: dict[str, int] = field(default_factory=dict)
    exclusions_by_cause: dict[str, int] = field(default_factory=dict)
    amount_targeted: Decimal = Decimal("0.00")
    export_path: Path | None = None


def rules_table(rules: list[CollectionRule]) -> pa.Table:
    """The rules as `sql/collection_decisions.sql` reads them (`schema.COLLECTION_RULES`):
    in order, each with the rule's field of the column's name."""
    values = {"rule_order": list(range(len(rules))), "rule_id": [rule.id for rule in rules]}
    for name in COLLECTION_RULES.names:
        if name not in values:
            values[name] = [getattr(rule, name) for rule in rules]
    return pa.Table.from_pydict(values, schema=arrow_schema(COLLECTION_RULES))


def _inputs(
    working_db: WorkingDatabase, practice_id: str, longest_cooldown: int
) -> tuple[str, date, pa.Table, pa.Table]:
    with working_db.connect() as con:
        latest = sync_runs.latest_published(con, practice_id)
        if latest is None:
            raise NoBalancesYet(f"practice {practice_id}: no synced balances yet")
        sync_id, as_of = latest.sync_id, latest.as_of_date
        blocks = con.sql(
            "SELECT account_id, blocked, reason FROM account_blocks WHERE practice_id = $p"
            " QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY sequence DESC) = 1",
            params={"p": practice_id},
        ).to_arrow_table()
        history = con.sql(
            "SELECT account_id, rule_id, as_of_date FROM collection_target_history"
            " WHERE practice_id = $p AND as_of_date < $as_of"
            " AND as_of_date > $as_of - CAST($days AS INTEGER)",
            params={"p": practice_id, "as_of": as_of, "days": longest_cooldown},
        ).to_arrow_table()
    return sync_id, as_of, blocks, history


def _write_export(
    work: duckdb.DuckDBPyConnection, layout: Layout, practice_id: str, as_of: date
) -> Path:
    folder = layout.exports_dir(practice_id)
    folder.mkdir(parents=True, exist_ok=True)
    layout.secure_published(folder.parent)
    layout.secure_published(folder)
    target = folder / f"collection_targets_{as_of.isoformat()}.csv"
    temporary = folder / f".{target.name}.{uuid.uuid4().hex}.tmp"
    work.execute(
        f"COPY (SELECT {EXPORT_COLUMNS} FROM targets ORDER BY account_id)"  # noqa: S608
        f" TO {sql_literal(str(temporary))} (HEADER, DELIMITER ',')"
    )
    layout.secure_published(temporary)
    os.replace(temporary, target)
    return target


def evaluate_collection_targets(
    practice: Practice, practices: PracticesFile, layout: Layout
) -> CollectionOutcome:
    """Evaluate the practice's rules and publish the decisions. Raises `RulesError`."""
    rules = practices.rules_for(practice)
    working_db = WorkingDatabase(layout)
    store = SnapshotStore(layout)
    evaluated_at = datetime.now(UTC)
    with practice_lock(layout, practice.id):
        current = store.current_dir(practice.id)
        if current is None or not (current / "outstanding_balances.parquet").exists():
            raise NoBalancesYet(f"practice {practice.id}: no synced balances yet")
        longest = max((rule.cooldown_days for rule in rules), default=0)
        sync_id, as_of, blocks, history = _inputs(working_db, practice.id, longest)
        work = duck.connect(layout.duckdb)
        try:
            work.execute(
                "CREATE TABLE outstanding_balances AS SELECT * FROM read_parquet(?)",
                [str(current / "outstanding_balances.parquet")],
            )
            for name, table in (("rules_in", rules_table(rules)), ("blocks_in", blocks),
                                ("history_in", history)):
                work.register(name, table)
            work.execute(
                f"CREATE TABLE decisions AS {load_sql('collection_decisions')}",  # noqa: S608
                {"as_of_date": as_of, "evaluated_at": evaluated_at},
            )
            work.execute("CREATE TABLE targets AS SELECT * FROM decisions WHERE exclusion IS NULL")
            work.execute(
                "CREATE TABLE exclusions AS SELECT * FROM decisions WHERE exclusion IS NOT NULL"
            )
            outcome = _summarize(work, practice.id, as_of, evaluated_at, len(rules))
            snapshot_dir = store.create(practice.id)
            for relation, table in zip(COLLECTION_RELATIONS, ("targets", "exclusions"),
                                       strict=True):
                copy_to_parquet(work, relation, f"SELECT * FROM {table}",  # noqa: S608
                                snapshot_dir / f"{relation}.parquet")
            targets = work.sql("SELECT * FROM targets").to_arrow_table()
            publish(layout, working_db, practice.id, snapshot_dir,
                    StateChanges(collection_day=CollectionDay(as_of, sync_id, targets)),
                    sync_id=sync_id)
            outcome.export_path = _write_export(work, layout, practice.id, as_of)
        finally:
            work.close()
    log.info(
        "practice %s: %d targets, %d exclusions (as of %s)", practice.id,
        sum(outcome.targets_by_action.values()), sum(outcome.exclusions_by_cause.values()),
        as_of,
    )
    return outcome


def _summarize(
    work: duckdb.DuckDBPyConnection, practice_id: str, as_of: date, evaluated_at: datetime,
    rules: int,
) -> CollectionOutcome:
    targets = Counter(dict(work.execute(
        "SELECT action, count(*) FROM targets GROUP BY action").fetchall()))
    exclusions = Counter(dict(work.execute(
        "SELECT exclusion, count(*) FROM exclusions GROUP BY exclusion").fetchall()))
    amount = work.execute("SELECT coalesce(sum(amount), 0) FROM targets").fetchall()[0][0]
    return CollectionOutcome(
        practice_id=practice_id, as_of_date=as_of, evaluated_at=evaluated_at, rules=rules,
        targets_by_action=dict(targets), exclusions_by_cause=dict(exclusions),
        amount_targeted=Decimal(amount).quantize(Decimal("0.01")),
    )


def refresh_collection_targets(
    practice: Practice, practices: PracticesFile, layout: Layout
) -> str | None:
    """Re-evaluate after a staff change; returns a one-line warning instead of failing."""
    try:
        evaluate_collection_targets(practice, practices, layout)
    except (RulesError, NoBalancesYet) as error:
        return f"collection targets not updated: {error}"
    return None
