"""Reporting failed and stale practice syncs: one log line each, and a webhook if configured.

Alerts carry ids and an error class only: never an error message (it could quote a
source), a secret or a name. The webhook URL is itself treated as a secret.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import requests

WEBHOOK_TIMEOUT = (5, 10)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    kind: str  # sync_failed | stale
    practice_id: str
    run_id: str | None
    error_class: str
    at: str = ""

    def line(self) -> str:
        return (
            f"{self.kind}: practice={self.practice_id} run={self.run_id or '-'}"
            f" error_class={self.error_class}"
        )


def new_alert(kind: str, practice_id: str, run_id: str | None, error_class: str) -> Alert:
    return Alert(kind, practice_id, run_id, error_class, datetime.now(UTC).isoformat())


def post_alert(alert: Alert, url: str | None) -> bool | None:
    """POST the alert as JSON to `url` (`BALANCES_ALERT_WEBHOOK_URL`). None without a URL."""
    if not url:
        return None
    try:
        response = requests.post(url, json=asdict(alert), timeout=WEBHOOK_TIMEOUT)
    except requests.RequestException as error:
        log.warning("alert webhook unreachable (%s)", type(error).__name__)
        return False
    if response.status_code >= 300:
        log.warning("alert webhook answered HTTP %d", response.status_code)
        return False
    return True
