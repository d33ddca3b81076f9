"""Staff corrections: set, clear and import manual overrides, validated, then propagated.

Every entry point (the `balances override` commands, the Dagster launchpad job) goes
through here. Input is validated completely before anything is written; the events and
the recomputed outstanding_balances / aging_summary are published in one step, under the
practice's publish lock, so an override entered while a sync runs is neither lost nor
applied twice. Each result says what was republished (`Republished`): the CLI and the
launchpad job report that to Dagster; nothing here knows Dagster.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from balances_pipeline.config import Practice, PracticesFile
from balances_pipeline.pipeline.collections import refresh_collection_targets
from balances_pipeline.pipeline.recompute import recompute_practice
from balances_pipeline.storage import duck, override_store
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.override_store import OverrideEvent
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.working_db import WorkingDatabase

MONEY_PATTERN = re.compile(r"-?\d{1,9}(\.\d{1,2})?")
MAX_REASON = 500
MAX_ACTOR = 200
log = logging.getLogger(__name__)
IMPORT_COLUMNS = ["practice_id", "account_id", "patient_portion", "insurance_portion", "reason"]
# What an override change republishes (the sync assets of the same names), and what it
# republishes too when the practice's collection rules could be re-evaluated.
OVERRIDE_REPUBLISHES = ("manual_overrides", "outstanding_balances", "aging_summary")
COLLECTION_TARGETS = "collection_targets"


class OverrideError(ValueError):
    """Bad override input; one line naming what is wrong. Nothing was changed."""


@dataclass(frozen=True)
class OverrideRequest:
    practice_id: str
    account_id: str
    patient_portion: Decimal | None
    insurance_portion: Decimal | None
    reason: str
    actor: str


@dataclass(frozen=True)
class Republished:
    """What a staff change republished for one practice: the relations (named like the
    sync assets) and, when its collection targets could not be re-evaluated, why not."""

    practice_id: str
    assets: tuple[str, ...]
    warning: str | None = None


def republished(practice_id: str, assets: tuple[str, ...], targets_warning: str | None
                ) -> Republished:
    """`assets`, plus collection_targets when they were re-evaluated (no warning)."""
    return Republished(
        practice_id, assets + (() if targets_warning else (COLLECTION_TARGETS,)),
        targets_warning,
    )


@dataclass(frozen=True)
class OverrideResult:
    practice_id: str
    account_id: str
    override_id: str | None  # the new override (set); None when cleared
    events: list[str]
    # The overrides this change ended: replaced by the new one, or cleared.
    ended_ids: tuple[str, ...] = ()
    republished: Republished | None = None


def parse_amount(text: str | None, field: str) -> Decimal | None:
    """A decimal with at most two places, |x| < 10^9 (negative: a credit); blank is None."""
    if text is None or str(text).strip() == "":
        return None
    value = str(text).strip()
    if not MONEY_PATTERN.fullmatch(value):
        raise OverrideError(
            f"{field}: {value!r} is not an amount (digits, optional minus, at most two decimals,"
            " below 1,000,000,000)"
        )
    return Decimal(value)


def required_text(value: str | None, field: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise OverrideError(f"{field} is required")
    if len(text) > limit:
        raise OverrideError(f"{field} is longer than {limit} characters")
    if any(ord(ch) < 32 for ch in text):
        raise OverrideError(f"{field} contains control characters")
    return text


def build_request(
    practices: PracticesFile, practice_id: str, account_id: str, patient_portion: str | None,
    insurance_portion: str | None, reason: str | None, actor: str | None,
) -> OverrideRequest:
    patient = parse_amount(patient_portion, "patient portion")
    insurance = parse_amount(insurance_portion, "insurance portion")
    account, reason_text, actor_text = staff_change(
        practices, practice_id, account_id, reason, actor
    )
    if patient is None and insurance is None:
        raise OverrideError("give a patient portion, an insurance portion, or both")
    return OverrideRequest(practice_id, account, patient, insurance, reason_text, actor_text)


def synced_portions(layout: Layout, practice_id: str) -> dict[str, tuple[Decimal, Decimal]]:
    """The practice's latest synced patient and insurance portions, per account."""
    current = SnapshotStore(layout).current_dir(practice_id)
    if current is None or not (current / "account_balances.parquet").exists():
        raise OverrideError(f"practice {practice_id} has no synced balances yet")
    con = duck.connect(layout.duckdb)
    try:
        rows = con.execute(
            "SELECT account_id, patient_portion, insurance_portion FROM read_parquet(?)",
            [str(current / "account_balances.parquet")],
        ).fetchall()
    finally:
        con.close()
    return {row[0]: (row[1], row[2]) for row in rows}


def _events_for(
    request: OverrideRequest, base: tuple[Decimal, Decimal], open_ids: list[tuple[str, str]]
) -> tuple[str, list[OverrideEvent]]:
    at = override_store.now()
    override_id = override_store.new_override_id()
    events = [
        OverrideEvent(
            event_id=override_store.new_event_id(), override_id=old_id,
            practice_id=request.practice_id, account_id=request.account_id, event="replaced",
            patient_portion=None, insurance_portion=None, base_patient_portion=None,
            base_insurance_portion=None, reason=f"replaced by {override_id}",
            actor=request.actor, created_at=at,
        )
        for old_id, _ in open_ids
    ]
    events.append(
        OverrideEvent(
            event_id=override_store.new_event_id(), override_id=override_id,
            practice_id=request.practice_id, account_id=request.account_id, event="set",
            patient_portion=request.patient_portion, insurance_portion=request.insurance_portion,
            base_patient_portion=base[0], base_insurance_portion=base[1],
            reason=request.reason, actor=request.actor, created_at=at,
        )
    )
    return override_id, events


def set_overrides(
    layout: Layout,
    practices: PracticesFile,
    requests: list[OverrideRequest],
    *,
    where: list[str] | None = None,
) -> list[OverrideResult]:
    """Record the overrides (all or nothing) and republish each practice they touch.

    `where` names each request for error messages (e.g. "row 3"); validation of every
    request happens before any practice is written.
    """
    where = where or [""] * len(requests)
    working_db = WorkingDatabase(layout)
    by_practice: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        by_practice.setdefault(request.practice_id, []).append(index)
    locks = [practice_lock(layout, practice_id) for practice_id in sorted(by_practice)]
    for lock in locks:
        lock.acquire()
    try:
        planned: dict[str, list[OverrideEvent]] = {}
        results: list[OverrideResult] = []
        seen: set[tuple[str, str]] = set()
        for practice_id, indexes in by_practice.items():
            synced = synced_portions(layout, practice_id)
            planned[practice_id] = []
            for index in indexes:
                request = requests[index]
                prefix = f"{where[index]}: " if where[index] else ""
                key = (practice_id, request.account_id)
                if key in seen:
                    raise OverrideError(f"{prefix}account {request.account_id} appears twice")
                seen.add(key)
                if request.account_id not in synced:
                    raise OverrideError(
                        f"{prefix}unknown account {request.account_id!r} in practice "
                        f"{practice_id} (not in its latest sync)"
                    )
                with working_db.connect() as con:
                    open_ids = override_store.open_override_ids(
                        con, practice_id, request.account_id
                    )
                override_id, events = _events_for(request, synced[request.account_id], open_ids)
                planned[practice_id] += events
                results.append(OverrideResult(
                    practice_id, request.account_id, override_id, [e.event for e in events],
                    ended_ids=tuple(old_id for old_id, _ in open_ids),
                ))
        done: dict[str, Republished] = {}
        for practice_id, events in planned.items():
            practice = practices.practice(practice_id)
            recompute_practice(practice, layout, events=events)
            done[practice_id] = republished(
                practice_id, OVERRIDE_REPUBLISHES, _refresh_targets(practice, practices, layout)
            )
        return [replace(result, republished=done[result.practice_id]) for result in results]
    finally:
        for lock in reversed(locks):
            lock.release()


def staff_change(
    practices: PracticesFile, practice_id: str, account_id: str, reason: str | None,
    actor: str | None,
) -> tuple[str, str, str]:
    """Validate the parts every staff change has: (account, reason, actor)."""
    if practice_id not in practices.ids:
        raise OverrideError(f"unknown practice {practice_id!r}")
    return (
        required_text(account_id, "account", 64),
        required_text(reason, "reason", MAX_REASON),
        required_text(actor, "actor", MAX_ACTOR),
    )


def clear_override(
    layout: Layout, practices: PracticesFile, practice_id: str, account_id: str,
    reason: str | None, actor: str | None,
) -> OverrideResult:
    account, reason_text, actor_text = staff_change(
        practices, practice_id, account_id, reason, actor
    )
    working_db = WorkingDatabase(layout)
    with practice_lock(layout, practice_id):
        with working_db.connect() as con:
            open_ids = override_store.open_override_ids(con, practice_id, account)
        if not open_ids:
            raise OverrideError(f"account {account} of practice {practice_id} has no override")
        at = override_store.now()
        events = [
            OverrideEvent(
                event_id=override_store.new_event_id(), override_id=override_id,
                practice_id=practice_id, account_id=account, event="cleared",
                patient_portion=None, insurance_portion=None, base_patient_portion=None,
                base_insurance_portion=None, reason=reason_text, actor=actor_text, created_at=at,
            )
            for override_id, _ in open_ids
        ]
        practice = practices.practice(practice_id)
        recompute_practice(practice, layout, events=events)
        warning = _refresh_targets(practice, practices, layout)
    return OverrideResult(
        practice_id, account, None, ["cleared"] * len(events),
        ended_ids=tuple(override_id for override_id, _ in open_ids),
        republished=republished(practice_id, OVERRIDE_REPUBLISHES, warning),
    )


def _refresh_targets(practice: Practice, practices: PracticesFile, layout: Layout) -> str | None:
    """Re-evaluate the practice's collection targets; the warning when they could not be."""
    warning = refresh_collection_targets(practice, practices, layout)
    if warning:
        log.warning("practice %s: %s", practice.id, warning)
    return warning


def read_import_file(path: Path, practices: PracticesFile, actor: str | None) -> tuple[
    list[OverrideRequest], list[str]
]:
    """Parse and validate a CSV of overrides; the first bad row rejects the whole file."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise OverrideError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != IMPORT_COLUMNS:
            raise OverrideError(f"{path}: the header must be {','.join(IMPORT_COLUMNS)}")
        requests, where = [], []
        for row in reader:
            line = f"{path.name} row {reader.line_num}"
            if None in row or any(value is None for value in row.values()):
                raise OverrideError(f"{line}: expected {len(IMPORT_COLUMNS)} columns")
            try:
                requests.append(build_request(
                    practices, row["practice_id"].strip(), row["account_id"],
                    row["patient_portion"], row["insurance_portion"], row["reason"], actor,
                ))
            except OverrideError as error:
                raise OverrideError(f"{line}: {error}") from None
            where.append(line)
    if not requests:
        raise OverrideError(f"{path}: no rows")
    return requests, where
