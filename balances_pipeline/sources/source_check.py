"""`balances source check`: reach a practice's source, authenticate, read one page."""

from __future__ import annotations

from balances_pipeline.config import OpenDentalSource, load_practices
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.opendental import OpenDentalClient


def check_source(practice_id: str) -> list[str]:
    """Lines to print: what was reached and found (counts only). Raises SourceError."""
    practices = load_practices()
    try:
        practice = practices.practice(practice_id)
    except KeyError:
        raise SourceError(f"unknown practice {practice_id!r}") from None
    if not isinstance(practice.source, OpenDentalSource):
        raise SourceError(f"practice {practice_id}: source type fhir is not supported yet")
    with OpenDentalClient(practice) as client:
        found = client.check_connection()
    lines = [f"practice {practice_id}: {practice.source.base_url} reachable, authenticated"]
    lines += [f"  {key}: {value}" for key, value in found.items()]
    return lines
