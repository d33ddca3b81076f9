"""Opening a practice's source client, by its source type."""

from __future__ import annotations

from balances_pipeline.config import OpenDentalSource, Practice
from balances_pipeline.sources.errors import SourceError
from balances_pipeline.sources.opendental.client import OpenDentalClient

SourceClient = OpenDentalClient


def open_client(practice: Practice) -> SourceClient:
    """A connected client for the practice's source (credentials read from its env vars)."""
    if not isinstance(practice.source, OpenDentalSource):
        raise SourceError(
            f"practice {practice.id}: source type {practice.source.type} is not supported yet"
        )
    return OpenDentalClient(practice)
