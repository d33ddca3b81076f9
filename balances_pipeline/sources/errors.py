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


class MalformedResponseError(SourceError):
    """A complete answer whose body is not what the API defines (e.g. not a JSON list).

    The server's own answer, not a fault on the way: asking again gets the same, so it is
    retried neither by the session nor by the orchestrator.
    """


class ResponseTooLargeError(SourceError):
    """A body larger than `max_response_bytes` (on the wire or decompressed).

    Not transient: asking again gets the same body. The limit bounds a sync's memory."""


class TransientSourceError(SourceError):
    """Retries exhausted on throttling, server errors, timeouts, bodies cut short or
    attempts past `request_deadline_seconds`: a later attempt of the whole extraction may
    succeed."""


class PermissionMissingError(AuthenticationError):
    """The key is valid but lacks one permission (e.g. Queries): that endpoint answers 401
    with a message naming it. `permission` is the name (e.g. "Queries")."""

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


class EndpointMissingError(SourceError):
    """The server does not serve this endpoint (HTTP 404, 405 or 501): an API version
    without it. `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
