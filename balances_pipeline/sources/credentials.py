"""Secrets come from environment variables named in the practices file, and nowhere else."""

from __future__ import annotations

import os
import re

from balances_pipeline.config import OpenDentalSource, Practice
from balances_pipeline.sources.errors import (
    InvalidCredentialError,
    MissingCredentialError,
    SourceError,
)

# Printable ASCII without spaces: anything else would break (or leak via) the header.
_SENDABLE = re.compile(r"[\x21-\x7e]+")


def read_secret(practice: Practice, variable: str) -> str:
    """The value of `variable`, without surrounding whitespace (a pasted trailing newline).

    Unset or empty is a `MissingCredentialError`, a value with inner whitespace or control
    characters an `InvalidCredentialError`; both name the variable, never the value.
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        raise MissingCredentialError(
            f"practice {practice.id}: environment variable {variable} is not set"
        )
    if not _SENDABLE.fullmatch(value):
        raise InvalidCredentialError(
            f"practice {practice.id}: environment variable {variable} contains whitespace "
            "or control characters"
        )
    return value


def read_pem_secret(practice: Practice, variable: str) -> str:
    """A PEM block from `variable`: real newlines, or literal `\\n` escapes as env files
    carry them. Unset or empty is a `MissingCredentialError` naming the variable."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise MissingCredentialError(
            f"practice {practice.id}: environment variable {variable} is not set"
        )
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\r\\n", "\n").replace("\\n", "\n")
    return value


def opendental_authorization(practice: Practice) -> str:
    """The `Authorization` header value for an Open Dental practice: `ODFHIR dev/cust`."""
    source = practice.source
    if not isinstance(source, OpenDentalSource):
        raise SourceError(f"practice {practice.id}: source is not opendental")
    developer_key = read_secret(practice, source.developer_key_env)
    customer_key = read_secret(practice, source.customer_key_env)
    return f"ODFHIR {developer_key}/{customer_key}"


def secret_values(practice: Practice) -> list[str]:
    """The practice's secret values that are set, to scrub them from any message."""
    names = practice.source.secret_env_names
    return [os.environ[name] for name in names if name and os.environ.get(name)]
