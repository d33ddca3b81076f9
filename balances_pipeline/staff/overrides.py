"""Staff corrections: set, clear and import manual overrides, validated, then propagated.

Every entry point (the `balances override` commands, the Dagster launchpad job) goes
through here. Input is validated completely before anything is written. Then, under the
publish lock of every practice touched, the events of all of them are committed in ONE
working-database transaction, together with a `pending_republishes` row per practice, and
each practice is republished (outstanding_balances, aging_summary, collection targets),
which deletes its row. So a change is all or nothing across practices even when the
process is killed: a kill before the commit leaves nothing, a kill after it leaves rows
that the next command of those practices completes first (`complete_pending_republishes`).
An override entered while a sync runs is neither lost nor applied twice. Each result says
what was republished (`Republished`): the CLI and the launchpad job report that to
Dagster; nothing here knows Dagster.

Input rules: amounts are ASCII digits with an optional minus and at most two decimals;
reasons, actors and accounts are plain text (no control, format, bidirectional or
line/paragraph-separator characters); an import file is UTF-8 (a BOM is accepted) CSV
whose every quoted field is closed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from balances_pipeline.config import PracticesFile
from balances_pipeline.pipeline.recompute import complete_pending_republishes, republish_practice
from balances_pipeline.plain_text import FORBIDDEN_CATEGORIES  # what text may not contain
from balances_pipeline.storage import duck, override_store
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.override_store import OverrideEvent
from balances_pipeline.storage.publish import practice_lock
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.working_db import WorkingDatabase

# ASCII digits only: `\d` (and Decimal) would take '١٢٣' or '１２３' as 123.
MONEY_PATTERN = re.compile(r"-?[0-9]{1,9}(\.[0-9]{1,2})?")
MAX_REASON = 500
MAX_ACTOR = 200
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
    raw = value or ""
    for ch in raw:
        if unicodedata.category(ch) in FORBIDDEN_CATEGORIES:
            raise OverrideError(
                f"{field} contains a control or formatting character (U+{ord(ch):04X})"
            )
    text = raw.strip()
    if not text:
        raise OverrideError(f"{field} is required")
    if len(text) > limit:
        raise OverrideError(f"{field} is longer than {limit} characters")
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
    """Record the overrides (all or nothing, across practices) and republish each practice
    they touch.

    `where` names each request for error messages (e.g. "row 3"); validation of every
    request happens before anything is written. The events of every practice are
    committed in one transaction, then each practice is republished.
    """
    where = where or [""] * len(requests)
    by_practice: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        by_practice.setdefault(request.practice_id, []).append(index)
    touched = sorted(by_practice)
    locks = [practice_lock(layout, practice_id) for practice_id in touched]
    for lock in locks:
        lock.acquire()
    try:
        # An earlier command killed before its republish: publish that first, so the
        # accounts' open overrides below are the published ones.
        complete_pending_republishes(layout, practices, touched)
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
                with WorkingDatabase(layout).connect() as con:
                    open_ids = override_store.open_override_ids(
                        con, practice_id, request.account_id
                    )
                override_id, events = _events_for(request, synced[request.account_id], open_ids)
                planned[practice_id] += events
                results.append(OverrideResult(
                    practice_id, request.account_id, override_id, [e.event for e in events],
                    ended_ids=tuple(old_id for old_id, _ in open_ids),
                ))
        done = _commit_and_republish(layout, practices, planned)
        return [replace(result, republished=done[result.practice_id]) for result in results]
    finally:
        for lock in reversed(locks):
            lock.release()


def _commit_and_republish(
    layout: Layout, practices: PracticesFile, planned: dict[str, list[OverrideEvent]]
) -> dict[str, Republished]:
    """Commit every practice's events in one transaction, with the practices marked as
    pending republishing; then republish each (which clears its mark). Call holding the
    practices' publish locks."""
    with WorkingDatabase(layout).transaction() as con:
        for events in planned.values():
            override_store.append_events(con, events)
        override_store.mark_pending(con, sorted(planned), override_store.now())
    return {
        practice_id: republished(
            practice_id, OVERRIDE_REPUBLISHES,
            republish_practice(practices.practice(practice_id), practices, layout),
        )
        for practice_id in sorted(planned)
    }


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
    with practice_lock(layout, practice_id):
        complete_pending_republishes(layout, practices, [practice_id])
        with WorkingDatabase(layout).connect() as con:
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
        done = _commit_and_republish(layout, practices, {practice_id: events})
    return OverrideResult(
        practice_id, account, None, ["cleared"] * len(events),
        ended_ids=tuple(override_id for override_id, _ in open_ids),
        republished=done[practice_id],
    )


def read_import_file(path: Path, practices: PracticesFile, actor: str | None) -> tuple[
    list[OverrideRequest], list[str]
]:
    """Parse and validate a CSV of overrides; the first bad row rejects the whole file.

    UTF-8, with or without the BOM Excel's "CSV UTF-8" writes; RFC 4180 quoting, strictly
    (a quoted field left open is an error, not a field running to the end of the file).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OverrideError(f"{path}: cannot read ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise OverrideError(
            f"{path}: line {line} is not UTF-8 (byte 0x{data[error.start]:02x}); save the file"
            " as CSV UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    requests: list[OverrideRequest] = []
    where: list[str] = []
    header: list[str] | None = None
    while True:
        line = f"{path.name} row {reader.line_num + 1}"  # where the record starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problem = ("a quoted field is not closed (a '\"' without its closing quote)"
                       if str(error) == "unexpected end of data" else f"not valid CSV ({error})")
            raise OverrideError(f"{line}: {problem}") from None
        if header is None:
            header = [name.strip() for name in row]
            if header != IMPORT_COLUMNS:
                raise OverrideError(f"{path}: the header must be {','.join(IMPORT_COLUMNS)}")
            continue
        if not row:
            continue  # a blank line
        if len(row) != len(IMPORT_COLUMNS):
            raise OverrideError(f"{line}: expected {len(IMPORT_COLUMNS)} columns")
        values = dict(zip(IMPORT_COLUMNS, row, strict=True))
        try:
            requests.append(build_request(
                practices, values["practice_id"].strip(), values["account_id"],
                values["patient_portion"], values["insurance_portion"], values["reason"], actor,
            ))
        except OverrideError as error:
            raise OverrideError(f"{line}: {error}") from None
        where.append(line)
    if header is None:
        raise OverrideError(f"{path}: the header must be {','.join(IMPORT_COLUMNS)}")
    if not requests:
        raise OverrideError(f"{path}: no rows")
    return requests, where
