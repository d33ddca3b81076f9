"""`Account` searches of a simulated FHIR practice: parameters, result sets, pages.

`GET [base]/Account?_count=N[&status=active][&_lastUpdated=ge<instant>]
[&_include=Account:guarantor]` takes the matching Account ids (by guarantor PatNum) when the
search runs and keeps them; its pages render those accounts as they are when the page is
read, `total` is the size of that result set and stays the same on every page. `_count`
defaults to 50 and is capped at 1000 (a larger value gives pages of 1000, as HAPI does);
`_count=0` gives the total alone. `next` links are `[base]/Account?_page=<opaque token>`;
a token of a search no longer kept (the newest 64 searches, 30 minutes) is `410 Gone`.
Any other search parameter is refused (400), as a strict server refuses what it does not
support; an unencoded `+` in an offset (a space after decoding) is refused too.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_SEARCHES = 64
SEARCH_SECONDS = 1800
SEARCH_PARAMS = frozenset({"_count", "status", "_lastUpdated", "_include"})
ACCOUNT_STATUSES = frozenset({"active", "inactive", "entered-in-error", "on-hold", "unknown"})
INCLUDES = frozenset({"Account:guarantor"})
PREFIXES = ("ge", "gt", "le", "lt", "eq")
INSTANT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"
)

Localize = Callable[[datetime], datetime]
TimeTest = Callable[[datetime], bool]


class SearchError(Exception):
    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def bad_request(diagnostics: str) -> SearchError:
    return SearchError(400, "invalid", diagnostics)


def time_filter(name: str, raw: str, localize: Localize) -> TimeTest:
    """A `_lastUpdated` / `_since` value (`ge2026-11-29T10:00:00Z`, ...) as a test."""
    prefix = raw[:2] if raw[:2] in PREFIXES else ""
    value = raw[len(prefix) :]
    op = prefix or "eq"
    if " " in value:
        raise bad_request(f"{name}: {raw!r} is not an instant (a '+' in a UTC offset must be "
                          "sent as %2B)")
    if not INSTANT_RE.match(value):
        raise bad_request(f"{name}: {raw!r} is not a FHIR date or instant")
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value)
            start, end = localize(day), localize(day + timedelta(days=1))
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            start = moment if moment.tzinfo else localize(moment)
            end = start + timedelta(seconds=1)
            if op == "gt":
                return lambda t: t > start
            if op == "le":
                return lambda t: t <= start
    except ValueError:
        raise bad_request(f"{name}: {raw!r} is not a valid date or instant") from None
    return {
        "ge": lambda t: t >= start,
        "gt": lambda t: t >= end,
        "le": lambda t: t < end,
        "lt": lambda t: t < start,
        "eq": lambda t: start <= t < end,
    }[op]


def count_param(values: list[str] | None) -> int:
    if not values:
        return DEFAULT_COUNT
    raw = values[-1].strip()
    if not raw.isdigit():
        raise bad_request(f"_count must be a non-negative integer, not {raw!r}")
    return min(int(raw), MAX_COUNT)


@dataclass(frozen=True)
class AccountQuery:
    count: int
    statuses: frozenset[str] | None
    updated: tuple[TimeTest, ...]
    include: bool

    def matches(self, account: Any) -> bool:
        if self.statuses is not None and account.status not in self.statuses:
            return False
        return all(test(account.last_updated) for test in self.updated)


def account_query(params: dict[str, list[str]], localize: Localize) -> AccountQuery:
    unknown = sorted(set(params) - SEARCH_PARAMS)
    if unknown:
        raise bad_request(f"unknown or unsupported search parameter(s) for Account: "
                          f"{', '.join(unknown)}")
    statuses = None
    if "status" in params:
        statuses = frozenset(s.strip() for v in params["status"] for s in v.split(","))
        bad = sorted(statuses - ACCOUNT_STATUSES)
        if bad:
            raise bad_request(f"status: unknown Account status {', '.join(bad)}")
    includes = {v.strip() for v in params.get("_include", [])}
    if includes - INCLUDES:
        raise bad_request(f"_include {', '.join(sorted(includes - INCLUDES))} is not "
                          "supported (Account:guarantor)")
    updated = tuple(
        time_filter("_lastUpdated", v, localize) for v in params.get("_lastUpdated", [])
    )
    return AccountQuery(count_param(params.get("_count")), statuses, updated, bool(includes))


@dataclass(frozen=True)
class ResultSet:
    id: str
    version: str
    ids: tuple[int, ...]
    include: bool
    created: float


class Searches:
    """A practice's kept result sets and their page tokens."""

    def __init__(self) -> None:
        self._sets: OrderedDict[str, ResultSet] = OrderedDict()
        self._pages: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Lock()

    def add(self, version: str, ids: list[int], include: bool) -> ResultSet:
        result = ResultSet(secrets.token_hex(8), version, tuple(ids), include, time.monotonic())
        with self._lock:
            self._sets[result.id] = result
            while len(self._sets) > MAX_SEARCHES:
                self._sets.popitem(last=False)
            kept = set(self._sets)
            self._pages = {k: v for k, v in self._pages.items() if v[0] in kept}
        return result

    def page_token(self, result: ResultSet, offset: int, count: int) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._pages[token] = (result.id, offset, count)
        return token

    def page(self, token: str) -> tuple[ResultSet, int, int]:
        with self._lock:
            found = self._pages.get(token)
            result = self._sets.get(found[0]) if found else None
        if found is None or result is None:
            raise SearchError(410, "not-found", "this page's search results are no longer "
                              "kept (expired): run the search again")
        if time.monotonic() - result.created > SEARCH_SECONDS:
            raise SearchError(410, "not-found", "this page's search results have expired: "
                              "run the search again")
        return result, found[1], found[2]
