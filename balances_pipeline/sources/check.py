"""`balances source check`: reach a practice's source, authenticate, and say how it reads.

For a ledger-mode Open Dental practice: which path a sync takes (ShortQuery with the
Queries permission, or the REST fallback and the permission missing), and the requests a
full and an incremental sync will make (an estimate from counts only, never row content).
"""

from __future__ import annotations

from balances_pipeline.config import OpenDentalSource, PracticesFile
from balances_pipeline.sources.clients import open_client
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.file_drop.config import FileDropSource


def check_source(practices: PracticesFile, practice_id: str) -> list[str]:
    """Lines to print: what was reached and found (counts only). Raises SourceError."""
    try:
        practice = practices.practice(practice_id)
    except KeyError:
        raise SourceError(f"unknown practice {practice_id!r}") from None
    with open_client(practice) as client:
        found = client.check_connection()
        plan = None
        if isinstance(practice.source, OpenDentalSource) and practice.source.mode == "ledger":
            plan = client.ledger_cost_estimate()
    if isinstance(practice.source, FileDropSource):
        lines = [f"practice {practice_id}: folder {practice.source.folder} readable"]
    else:
        lines = [f"practice {practice_id}: {practice.source.base_url} reachable, authenticated"]
    lines += [f"  {key}: {value}" for key, value in found.items()]
    if plan is not None:
        lines.append(f"  ledger path: {plan['path']}")
        if plan.get("missing_permission"):
            lines.append(
                f"  missing permission: {plan['missing_permission']} (grant it to the key "
                "for the cheaper ShortQuery path)"
            )
        if plan.get("missing_endpoint"):
            lines.append(
                f"  ShortQuery not served by this server ({plan['missing_endpoint']}): an Open "
                "Dental API version without PUT /queries/ShortQuery, or a proxy refusing PUT"
            )
        if practice.source.clinic_num is not None:
            lines.append(f"  clinic: {practice.source.clinic_num} (its guarantors' families)")
        lines.append(f"  estimated requests, full sync: {plan['full_requests']}"
                     f" ({plan['full_detail']})")
        lines.append(f"  estimated requests, incremental sync: {plan['incremental_requests']}"
                     f" ({plan['incremental_detail']})")
    return lines
