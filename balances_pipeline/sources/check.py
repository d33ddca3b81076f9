"""`balances source check`: reach a practice's source, authenticate, read one page."""

from __future__ import annotations

from balances_pipeline.config import PracticesFile
from balances_pipeline.sources.clients import open_client
from balances_pipeline.sources.errors import SourceError


def check_source(practices: PracticesFile, practice_id: str) -> list[str]:
    """Lines to print: what was reached and found (counts only). Raises SourceError."""
    try:
        practice = practices.practice(practice_id)
    except KeyError:
        raise SourceError(f"unknown practice {practice_id!r}") from None
    with open_client(practice) as client:
        found = client.check_connection()
    lines = [f"practice {practice_id}: {practice.source.base_url} reachable, authenticated"]
    lines += [f"  {key}: {value}" for key, value in found.items()]
    return lines
