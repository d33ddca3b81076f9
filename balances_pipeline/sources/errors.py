"""Errors a connector raises. Messages are one line and never contain secrets or names."""


class SourceError(RuntimeError):
    """The source could not be read; the sync fails and published data stays as it was."""


class MissingCredentialError(SourceError):
    """An environment variable named in the practices file is not set."""


class InvalidCredentialError(SourceError):
    """An environment variable holds a value that cannot be sent (e.g. inner whitespace)."""


class AuthenticationError(SourceError):
    """The source answered 401/403: never retried."""


class SchemaDriftError(SourceError):
    """A required field is missing from every row of a page."""


class DuplicateRowsError(SourceError):
    """The same key came back twice while paging (rows shifted between offset pages)."""


class TransientSourceError(SourceError):
    """Retries exhausted on throttling, server errors, timeouts or broken responses."""
