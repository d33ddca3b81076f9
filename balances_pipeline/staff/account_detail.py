"""Read-only views for staff: the account detail and the override list.

They read the analyst warehouse (`warehouse.duckdb`), so they work while syncs run and
show exactly what analysts and collection rules see.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal

from balances_pipeline.config import PracticesFile
from balances_pipeline.staff.overrides import FORBIDDEN_CATEGORIES
from balances_pipeline.storage.layout import Layout
from balances_pipeline.storage.reader import read_published

BUCKET_LABELS = [
    ("bucket_0_30", "0-30"), ("bucket_31_60", "31-60"), ("bucket_61_90", "61-90"),
    ("bucket_91_120", "91-120"), ("bucket_over_120", "over 120"), ("bucket_over_90", "over 90"),
]


class DetailError(ValueError):
    pass


def known_practice(practices: PracticesFile | None, practice_id: str | None) -> None:
    """A practice the practices file names (None: every practice)."""
    if practices is not None and practice_id is not None and practice_id not in practices.ids:
        raise DetailError(f"unknown practice {practice_id!r}")


def _query(layout: Layout, sql: str, params: list) -> list[dict]:
    if layout.lake is None and not layout.warehouse_path.exists():
        raise DetailError("no warehouse yet: sync a practice first")
    return read_published(layout, sql, params)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _shown(text: str | None) -> str:
    """Staff text as printed: a control or format character recorded before they were
    refused (U+202E, U+009B, ...) is shown escaped, never sent to the terminal."""
    return "".join(
        f"\\u{ord(ch):04x}" if unicodedata.category(ch) in FORBIDDEN_CATEGORIES
        else ch
        for ch in text or ""
    )


def account_detail(
    layout: Layout, practice_id: str, account_id: str, practices: PracticesFile | None = None
) -> list[str]:
    known_practice(practices, practice_id)
    rows = _query(
        layout,
        "SELECT * FROM outstanding_balances WHERE practice_id = ? AND account_id = ?",
        [practice_id, account_id],
    )
    if not rows:
        raise DetailError(
            f"unknown account {account_id!r} in practice {practice_id} (not in its latest sync)"
        )
    row = rows[0]
    lines = [
        f"account {account_id} of practice {practice_id}: {row['account_name']}",
        f"  as of {row['as_of_date']} (sync {row['sync_id']}, {row['source_mode']})",
        f"  balance           effective {_money(row['balance_total'])}"
        f"   synced {_money(row['synced_balance_total'])}",
        f"  patient portion   effective {_money(row['patient_portion'])}"
        f"   synced {_money(row['synced_patient_portion'])}",
        f"  insurance portion effective {_money(row['insurance_portion'])}"
        f"   synced {_money(row['synced_insurance_portion'])}",
        f"  insurance estimate {_money(row['insurance_estimate'])}"
        f"   write-off estimate {_money(row['writeoff_estimate'])}",
        "  buckets " + "  ".join(
            f"{label} {_money(row[name])}" for name, label in BUCKET_LABELS
            if row[name] is not None
        ),
        f"  days outstanding {_or_dash(row['days_outstanding'])}"
        + ("   (rows of this account were rejected in the latest sync)"
           if row["has_rejected_rows"] else ""),
    ]
    active = _query(
        layout, "SELECT * FROM active_overrides WHERE practice_id = ? AND account_id = ?",
        [practice_id, account_id],
    )
    if active:
        o = active[0]
        lines.append(
            f"  active override {o['override_id']}: patient {_money(o['patient_portion'])}, "
            f"insurance {_money(o['insurance_portion'])} by {_shown(o['actor'])} at "
            f"{o['created_at']:%Y-%m-%d %H:%M} ({_shown(o['reason'])})"
        )
    else:
        lines.append("  no active override")
    history = _query(
        layout,
        "SELECT * FROM override_events WHERE practice_id = ? AND account_id = ? ORDER BY sequence",
        [practice_id, account_id],
    )
    if history:
        lines.append("  override history:")
        lines += [
            f"    {e['created_at']:%Y-%m-%d %H:%M} {e['event']:<10} {e['override_id']}"
            f" patient {_money(e['patient_portion'])} insurance {_money(e['insurance_portion'])}"
            f" by {_shown(e['actor'])}" + (f" (sync {e['sync_id']})" if e["sync_id"] else "")
            for e in history
        ]
    blocks = _query(
        layout,
        "SELECT * FROM account_blocks WHERE practice_id = ? AND account_id = ? ORDER BY sequence",
        [practice_id, account_id],
    )
    if blocks:
        latest = blocks[-1]
        state = "BLOCKED from collection rules" if latest["blocked"] else "not blocked"
        lines.append(f"  {state} (by {_shown(latest['actor'])} at "
                     f"{latest['created_at']:%Y-%m-%d %H:%M}: {_shown(latest['reason'])})")
    decisions = _query(
        layout,
        "SELECT 'targeted' AS kind, rule_id, action AS what, reason AS why, as_of_date"
        " FROM collection_targets WHERE practice_id = ? AND account_id = ?"
        " UNION ALL SELECT 'excluded', rule_id, exclusion, detail, as_of_date"
        " FROM collection_exclusions WHERE practice_id = ? AND account_id = ?",
        [practice_id, account_id, practice_id, account_id],
    )
    if decisions:
        d = decisions[0]
        lines.append(f"  collection decision ({d['as_of_date']}): {d['kind']} by rule "
                     f"{d['rule_id']}: {d['what']} ({d['why']})")
    else:
        lines.append("  collection decision: no rule matched")
    return lines


def override_list(
    layout: Layout, practice_id: str | None, include_history: bool,
    practices: PracticesFile | None = None,
) -> list[str]:
    known_practice(practices, practice_id)
    relation = "override_events" if include_history else "active_overrides"
    where = "WHERE practice_id = ?" if practice_id else ""
    rows = _query(
        layout,
        f"SELECT * FROM {relation} {where} ORDER BY practice_id, account_id, sequence",  # noqa: S608
        [practice_id] if practice_id else [],
    )
    header = "practice\taccount\tevent\toverride\tpatient\tinsurance\tactor\tcreated_at\treason"
    return [header] + [
        "\t".join([
            r["practice_id"], r["account_id"], r["event"], r["override_id"],
            _money(r["patient_portion"]), _money(r["insurance_portion"]), _shown(r["actor"]),
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}", _shown(r["reason"]),
        ])
        for r in rows
    ]
