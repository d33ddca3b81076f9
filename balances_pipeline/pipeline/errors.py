"""How a sync fails: one line, naming the practice, without secrets."""

from __future__ import annotations

from balances_pipeline.config import Practice
from balances_pipeline.sources.credentials import secret_values
from balances_pipeline.sources.errors import SourceError

MAX_ERROR_LENGTH = 500


class SyncFailed(RuntimeError):
    """The sync failed; the message is one line, names the practice, holds no secret.

    `transient`: the source failed in a way a later attempt may not (retries exhausted on
    throttling, server errors, timeouts); anything else (bad data, bad credentials, bad
    configuration) will fail again.
    """

    def __init__(
        self,
        message: str,
        sync_id: str | None = None,
        error_class: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.sync_id = sync_id
        self.error_class = error_class
        self.transient = transient


class NothingToPublish(SyncFailed):
    """No extract of the practice is waiting to be published."""


def one_line_error(error: BaseException, practice: Practice) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = text if isinstance(error, SourceError) else f"{type(error).__name__}: {text}"
    for secret in secret_values(practice):
        message = message.replace(secret, "***")
    return message[:MAX_ERROR_LENGTH]
