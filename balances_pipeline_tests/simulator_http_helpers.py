"""Shared by the simulator's HTTP tests: the module-scoped simulator, its practices' keys,
and small callers of its endpoints."""


from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest

from balances_pipeline.simulator import SimPractice, SimulatorServer

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_opendental_400.json.gz"
AS_OF = date(2026, 11, 30)
DEV = "dev-key-123"
KEYS = {
    "alpha": "cust-alpha",
    "bravo": "cust-bravo",
    "synthetic": "cust-synthetic",
    "delta": "cust-delta",
}
STAMP = "%Y-%m-%d %H:%M:%S"
PHI_FIELDS = ("Birthdate", "SSN", "Address", "City", "Zip", "HmPhone", "WirelessPhone", "Email")
D = Decimal


# -- helpers ------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    sim: SimulatorServer,
    path: str,
    practice: str | None = "alpha",
    method: str = "GET",
    body: Any = None,
    authorization: str | None = None,
    **params: Any,
) -> Reply:
    """One request on a fresh connection; `path` is relative to the API root or absolute."""
    url = urlsplit(sim.url)
    target = path if path.startswith("/") else f"{url.path}/{path}"
    if params:
        target += "?" + urlencode(params)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    elif practice is not None:
        headers["Authorization"] = f"ODFHIR {DEV}/{KEYS[practice]}"
    data = json.dumps(body).encode() if body is not None else None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def pages(sim: SimulatorServer, endpoint: str, practice: str = "alpha", **params: Any) -> list:
    result: list[list[dict[str, Any]]] = []
    offset = 0
    while True:
        reply = call(sim, endpoint, practice, Offset=offset, **params)
        assert reply.status == 200, reply.body
        page = reply.json()
        result.append(page)
        if len(page) < 100:
            return result
        offset += len(page)


def flat(page_list: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for page in page_list for row in page]


def query(sim: SimulatorServer, sql: Any, practice: str = "alpha", **params: Any) -> Reply:
    """`PUT /queries/ShortQuery` with `{"SqlCommand": sql}`."""
    return call(sim, "queries/ShortQuery", practice, method="PUT", body={"SqlCommand": sql},
                **params)


def query_all(sim: SimulatorServer, sql: str, practice: str = "alpha") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        reply = query(sim, sql, practice, Offset=len(rows))
        assert reply.status == 200, reply.body
        page = reply.json()
        rows.extend(page)
        if len(page) < 100:
            return rows


def server_clock(reply: Reply, zone: str) -> datetime:
    """The `Date` header (GMT) as the office's local wall-clock time."""
    moment = parsedate_to_datetime(reply.headers["Date"])
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    practices = [
        SimPractice("alpha", KEYS["alpha"], accounts=300, seed=5, today=AS_OF,
                    timezone="America/Denver", queries_permission=True),
        SimPractice("bravo", KEYS["bravo"], accounts=40, seed=9, today=AS_OF),
        SimPractice("synthetic", KEYS["synthetic"], today=date(2026, 11, 29), dataset=FIXTURE),
        # Far from GMT and with a half-hour offset, so that a local time labelled GMT shows.
        SimPractice("delta", KEYS["delta"], accounts=250, seed=17, today=AS_OF,
                    timezone="Asia/Kolkata", queries_permission=True, clinics=3),
    ]
    with SimulatorServer(practices, developer_key=DEV) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").clear_faults()


