"""What every source's block of the practices file shares: strict models, env-var names
for secrets, http(s) URLs, and the request options of API sources.

Each source type declares its own model in its package (`sources/<type>/config.py`),
based on `SourceConfig`; `sources/registry.py` lists them and `config.py` validates a
practice's `source` block against the one its `type` names. This module imports only
pydantic: `config.py` imports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_VAR_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"

# What a source's rows are, which decides how the pipeline builds `account_balances`:
# `aging_report` (Open Dental's report rows), `ledger` (raw ledger rows, aged here), or
# `account_balances` (accounts with their buckets, as FHIR EHRs and aging files give them).
Produces = Literal["aging_report", "ledger", "account_balances"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EnvVarName = Annotated[
    str,
    Field(
        pattern=ENV_VAR_NAME_PATTERN,
        description="name of an environment variable (the secret itself never goes in the file)",
    ),
]



class SourceConfig(Strict):
    """The base of every source model: `type` names it in the practices file."""

    type: str

    @property
    def produces(self) -> Produces:
        raise NotImplementedError

    @property
    def source_mode(self) -> str:
        """`sync_runs.source_mode` and `account_balances.source_mode` of its syncs."""
        raise NotImplementedError

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        """The env vars holding this source's secrets (scrubbed from every message)."""
        return ()

    @property
    def incremental_endpoints(self) -> tuple[str, ...]:
        """The reads that can be incremental (one cursor each); none: every sync is full."""
        return ()

    @property
    def days_outstanding_from_nonzero_terms(self) -> bool:
        """`account_balances` sources: days_outstanding from the oldest non-zero bucket
        (FHIR) rather than the oldest positive one of a positive balance (aging reports)."""
        return False


def http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
        raise ValueError("must be an http(s) URL without credentials or query")
    return value.rstrip("/")


class ApiSourceConfig(SourceConfig):
    """Options of a source read over HTTP."""

    base_url: str
    incremental_overlap_minutes: int = Field(default=10, ge=0, le=1440)
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    max_retries: int = Field(default=5, ge=0, le=20)
    # Each attempt of a request, from connecting to the body's last byte (timeout_seconds
    # bounds one socket read only); an attempt past it is retried like a read timeout.
    request_deadline_seconds: float = Field(default=120, gt=0, le=3600)
    # Largest body accepted, on the wire and decompressed; a larger one fails the page.
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=1024**3)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _deadline_not_below_read_timeout(self) -> ApiSourceConfig:
        if self.request_deadline_seconds < self.timeout_seconds:
            raise ValueError(
                f"request_deadline_seconds ({self.request_deadline_seconds:g}) is shorter "
                f"than timeout_seconds ({self.timeout_seconds:g}); set "
                "request_deadline_seconds to at least timeout_seconds"
            )
        return self
