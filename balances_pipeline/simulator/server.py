"""The bundled EHR simulator: the Open Dental API subset of docs/sources.md over real HTTP,
and a FHIR R4/R5 endpoint (fhir.py) over the same simulated ledgers."""

from __future__ import annotations

import hmac
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from balances_pipeline.simulator.aging import AgingCache
from balances_pipeline.simulator.control import Control, is_loopback
from balances_pipeline.simulator.faults import Faults, FaultState, corrupt_page
from balances_pipeline.simulator.fhir import FHIR_PREFIX, FhirService
from balances_pipeline.simulator.fhir_data import FhirAccount
from balances_pipeline.simulator.ledger import STAMP_FORMAT, Ledger, generate_ledger, load_dataset
from balances_pipeline.simulator.queries import QueryDatabase, QueryError
from balances_pipeline.simulator.rest import (
    LIST_ENDPOINTS,
    ApiError,
    as_of_param,
    int_param,
    list_filters,
    require_method,
    sql_command,
)

API_PREFIX = "/api/v1/"
CONTROL_PREFIX = "/_sim/"
AGING_ENDPOINT = "reports/Aging"
SHORT_QUERY_ENDPOINT = "queries/ShortQuery"
PAGE_SIZE = 100
ENDPOINT_NAMES = {
    name.lower(): name
    for name in (AGING_ENDPOINT, SHORT_QUERY_ENDPOINT, *(e.name for e in LIST_ENDPOINTS.values()))
}
NO_QUERIES_PERMISSION = "This customer key does not have permission for Queries."


@dataclass(frozen=True)
class SimPractice:
    id: str
    # The Open Dental customer key (None: the practice has no Open Dental API, FHIR only).
    customer_key: str | None
    accounts: int = 200
    seed: int = 1
    today: date | None = None
    dataset: Path | None = None
    # The office's time zone: the server's clock, change stamps, serverDateTime and NOW()
    # are in it, as a real Open Dental server's are (None: this machine's local time); the
    # HTTP Date header is that same instant in GMT.
    timezone: str | None = None
    # Whether the customer key has the Queries permission (PUT /queries/ShortQuery).
    # Not granted unless said: offices grant it on purpose, and a connector must work
    # without it.
    queries_permission: bool = False
    # 0: a database without clinics (every ClinicNum 0); N: families and transactions
    # spread over clinics 1..N of one database (generated practices only).
    clinics: int = 0
    # FHIR (fhir.py): served when a client id or a static bearer token is set. The client's
    # registered public key(s): PEM, one or more RSA (RS384) or P-384 (ES384) blocks.
    fhir_client_id: str | None = None
    fhir_public_key_pem: str | None = None
    fhir_bearer_token: str | None = None
    fhir_token_lifetime_seconds: int = 300
    # Bulk Data: the one Group id of all the practice's accounts; status polls answered 202
    # before the manifest, their Retry-After; accounts per NDJSON file (at least 2 files).
    fhir_group_id: str = "all"
    fhir_bulk_polls: int = 2
    fhir_bulk_retry_after_seconds: int = 1
    fhir_bulk_file_accounts: int = 1000


@dataclass(frozen=True)
class RequestRecord:
    practice_id: str | None
    method: str
    endpoint: str
    params: dict[str, str]
    status: int | None
    at: float = field(default_factory=time.monotonic)


class _PracticeRuntime:
    """A practice's lazily built ledger, clock, faults and result caches."""

    def __init__(self, practice: SimPractice) -> None:
        self.practice = practice
        if practice.clinics < 0:
            raise ValueError(f"practice {practice.id}: clinics must not be negative")
        try:
            self._zone = ZoneInfo(practice.timezone) if practice.timezone else None
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"practice {practice.id}: unknown time zone {practice.timezone!r}"
            ) from error
        self.start_day = practice.today or self._wall_clock().date()
        self._offset = timedelta(
            days=self.start_day.toordinal() - self._wall_clock().date().toordinal()
        )
        self.faults = FaultState()
        self._ledger: Ledger | None = None
        self._aging: AgingCache | None = None
        self._queries: QueryDatabase | None = None
        self._lists: dict[tuple[Any, ...], list[tuple]] = {}
        self._lock = threading.Lock()

    def _wall_clock(self) -> datetime:
        """The office's wall-clock time now, naive, as Open Dental writes it."""
        return datetime.now(self._zone).replace(tzinfo=None)

    def now(self) -> datetime:
        return (self._wall_clock() + self._offset).replace(microsecond=0)

    def timestamp(self, moment: datetime) -> float:
        """The POSIX time of a naive office-local moment (for the HTTP Date header)."""
        if self._zone is None:
            return moment.astimezone().timestamp()
        return moment.replace(tzinfo=self._zone).timestamp()

    def advance(self, days: float) -> datetime:
        self._offset += timedelta(days=days)
        return self.now()

    def _ensure(self) -> tuple[Ledger, AgingCache]:
        with self._lock:
            if self._ledger is None or self._aging is None:
                self._ledger = self._build_ledger()
                self._aging = AgingCache(self._ledger)
            return self._ledger, self._aging

    @property
    def ledger(self) -> Ledger:
        return self._ensure()[0]

    @property
    def queries(self) -> QueryDatabase:
        ledger = self.ledger
        with self._lock:
            if self._queries is None:
                self._queries = QueryDatabase(ledger)
            return self._queries

    def _build_ledger(self) -> Ledger:
        p = self.practice
        if p.dataset is not None:
            return load_dataset(p.dataset, clock=self.now)
        return generate_ledger(
            p.seed, p.accounts, self.start_day, clock=self.now, clinics=p.clinics
        )

    def aging(self, as_of: date, clinic: int | None = None) -> list[dict[str, Any]]:
        return self._ensure()[1].report(as_of, clinic)

    def list_rows(self, table: str, filters: tuple[tuple[str, str, Any], ...]) -> list[tuple]:
        """The rows of `table` matching every (field, op, value) filter, in key order."""
        ledger = self.ledger
        key = (table, filters, ledger.version)
        with self._lock:
            cached = self._lists.get(key)
        if cached is not None:
            return cached
        with ledger.lock:
            t = ledger.table(table)
            rows = t.rows
            for name, op, value in filters:
                i = t.pos(name)
                if op == "since":
                    rows = [row for row in rows if row[i] >= value]
                else:
                    rows = [row for row in rows if row[i] == value]
            if rows is t.rows:
                rows = list(rows)
        with self._lock:
            if len(self._lists) >= 32:
                self._lists.clear()
            self._lists[key] = rows
        return rows


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    simulator: SimulatorServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class SimulatorServer:
    """Serves simulated practices; `start()` runs it on a background thread.

    Open Dental at `url` (`http://host:port/api/v1`); FHIR at `fhir_url(practice_id,
    "r4"|"r5")` (`http://host:port/fhir/<practice_id>/r4`), its token endpoint at
    `fhir_token_url(practice_id)` (`.../fhir/<practice_id>/auth/token`).
    """

    def __init__(
        self,
        practices: list[SimPractice],
        developer_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        ids = [p.id for p in practices]
        keys = [p.customer_key for p in practices if p.customer_key is not None]
        if len(set(ids)) != len(ids) or len(set(keys)) != len(keys):
            raise ValueError("practice ids and customer keys must be unique")
        self.developer_key = developer_key
        self._practices = {p.id: _PracticeRuntime(p) for p in practices}
        self._by_key = {p.customer_key: p.id for p in practices if p.customer_key is not None}
        self.fhir = FhirService(self, self._practices)
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.simulator = self
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else host

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    @property
    def practice_ids(self) -> list[str]:
        return list(self._practices)

    def start(self) -> SimulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="ehr-simulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def runtime(self, practice_id: str) -> _PracticeRuntime:
        try:
            return self._practices[practice_id]
        except KeyError:
            raise KeyError(f"unknown practice {practice_id!r}") from None

    def practice_for_key(self, customer_key: str) -> _PracticeRuntime | None:
        for key, practice_id in self._by_key.items():
            if hmac.compare_digest(key.encode(), customer_key.encode()):
                return self._practices[practice_id]
        return None

    def ledger(self, practice_id: str) -> Ledger:
        return self.runtime(practice_id).ledger

    def aging_report(
        self, practice_id: str, as_of: date, clinic: int | None = None
    ) -> list[dict[str, Any]]:
        return self.runtime(practice_id).aging(as_of, clinic)

    def set_faults(self, practice_id: str, faults: Faults) -> None:
        self.runtime(practice_id).faults.set(faults)

    def clear_faults(self, practice_id: str | None = None) -> None:
        for pid in [practice_id] if practice_id else self.practice_ids:
            self.runtime(pid).faults.clear()

    def faults(self, practice_id: str) -> Faults:
        return self.runtime(practice_id).faults.snapshot()

    def now(self, practice_id: str) -> datetime:
        return self.runtime(practice_id).now()

    def advance_clock(self, days: float, practice_id: str | None = None) -> None:
        for pid in [practice_id] if practice_id else self.practice_ids:
            self.runtime(pid).advance(days)

    def fhir_url(self, practice_id: str, version: str = "r4") -> str:
        """A practice's FHIR base URL (`version` "r4" or "r5")."""
        self.fhir.practice(practice_id)
        if version not in ("r4", "r5"):
            raise ValueError(f"FHIR version must be r4 or r5, not {version!r}")
        return f"http://{self.host}:{self.port}{FHIR_PREFIX}{practice_id}/{version}"

    def fhir_token_url(self, practice_id: str) -> str:
        """The SMART token endpoint, the `aud` a client assertion must name."""
        self.fhir.practice(practice_id)
        return f"http://{self.host}:{self.port}{FHIR_PREFIX}{practice_id}/auth/token"

    def fhir_accounts(self, practice_id: str) -> dict[str, FhirAccount]:
        """The figures the practice's FHIR Accounts carry now, by Account id."""
        return {a.id: a for a in self.fhir.practice(practice_id).accounts().values()}

    def expire_fhir_tokens(self, practice_id: str) -> int:
        """Expire every access token issued for the practice (not its static token)."""
        return self.fhir.practice(practice_id).auth.expire_tokens()

    def record_request(
        self, practice_id: str | None, method: str, endpoint: str, params: dict[str, str],
        status: int | None,
    ) -> None:
        self.record(RequestRecord(practice_id, method, endpoint, params, status))

    def record(self, entry: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(entry)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def reset_request_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def request_count(self, practice_id: str | None = None, endpoint: str | None = None) -> int:
        """API requests received (any status), optionally for one practice / endpoint."""
        return sum(
            1
            for r in self.requests
            if (practice_id is None or r.practice_id == practice_id)
            and (endpoint is None or r.endpoint == endpoint)
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def encode_json(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "balances-ehr-simulator/1"
    timeout = 120

    _sim_now: datetime | None = None
    _sim_runtime: _PracticeRuntime | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: the practice's server clock, as the GMT instant it is."""
        if timestamp is None and self._sim_now is not None and self._sim_runtime is not None:
            timestamp = self._sim_runtime.timestamp(self._sim_now)
        return formatdate(timestamp, usegmt=True)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def simulator(self) -> SimulatorServer:
        return self.server.simulator

    def _dispatch(self, method: str) -> None:
        self._sim_now = None
        self._sim_runtime = None
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.startswith(CONTROL_PREFIX):
            self._control(method, url.path[len(CONTROL_PREFIX) :], body)
        elif url.path.startswith(FHIR_PREFIX):
            self.simulator.fhir.handle(self, method, url.path, url.query, body)
        elif url.path.startswith(API_PREFIX):
            self._api(method, url.path[len(API_PREFIX) :].strip("/"), url.query, body)
        else:
            self._send_json(404, f"Not found: {url.path}")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, encode_json(payload), headers)

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- the Open Dental API ------------------------------------------------------------
    # Error answers carry their explanation as the body, a JSON string, as Open Dental's:
    # 400 "PatNum is required."

    def send_response(self, code: int, message: str | None = None) -> None:
        # Record an API request before its answer leaves, so a client that has the answer
        # always finds the request in the log.
        pending = getattr(self, "_pending_record", None)
        if pending is not None:
            self._pending_record = None
            self.simulator.record(RequestRecord(*pending, code))
        super().send_response(code, message)

    def _api(self, method: str, endpoint: str, query: str, body: bytes) -> None:
        params = {k.lower(): v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        endpoint = ENDPOINT_NAMES.get(endpoint.lower(), endpoint)
        practice = self._authenticate()
        pid = practice.practice.id if practice else None
        self._pending_record = (pid, method, endpoint, params)
        try:
            if practice is None:
                self._send_json(401, "Invalid Authorization header.")
                return
            self._sim_runtime = practice
            self._sim_now = practice.now()
            self._serve_api(practice, method, endpoint, params, body)
        finally:
            if self._pending_record is not None:  # no response was sent (dropped connection)
                self._pending_record = None
                self.simulator.record(RequestRecord(pid, method, endpoint, params, None))

    def _authenticate(self) -> _PracticeRuntime | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, credentials = header.partition(" ")
        developer_key, sep, customer_key = credentials.strip().partition("/")
        if scheme != "ODFHIR" or not sep:
            return None
        if not hmac.compare_digest(developer_key.encode(), self.simulator.developer_key.encode()):
            return None
        return self.simulator.practice_for_key(customer_key)

    def _serve_api(
        self,
        practice: _PracticeRuntime,
        method: str,
        endpoint: str,
        params: dict[str, str],
        body: bytes,
    ) -> int | None:
        faults = practice.faults.snapshot()
        if faults.slow_seconds > 0:
            time.sleep(faults.slow_seconds)
        fault = practice.faults.take_transport_fault()
        if fault == "drop":
            self._hang_up()
            return None
        if fault == "rate_limit":
            self._send_json(
                429, "Too many requests.", {"Retry-After": str(faults.retry_after_seconds)}
            )
            return 429
        if fault == "server_error":
            self._send_json(503, "Service unavailable.")
            return 503
        try:
            rows = self._page(practice, method, endpoint, params, body, faults)
        except ApiError as error:
            self._send_json(error.status, error.message)
            return error.status
        except QueryError as error:
            self._send_json(error.status, error.message)
            return error.status
        except Exception as error:  # a simulator bug must not look like a dropped connection
            self._send_json(500, f"simulator error: {error!r}")
            return 500
        data = encode_json(rows)
        if fault == "truncate":
            self._send_truncated(data)
            return 200
        self._send_bytes(200, data)
        return 200

    def _send_truncated(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data) + 64))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self._hang_up()

    def _page(
        self,
        practice: _PracticeRuntime,
        method: str,
        endpoint: str,
        params: dict[str, str],
        body: bytes,
        faults: Faults,
    ) -> list[dict[str, Any]]:
        offset = int_param(params, "offset", 0, minimum=0)
        start = offset - 1 if faults.duplicate_rows and offset > 0 else offset
        list_endpoint = LIST_ENDPOINTS.get(endpoint.lower())
        if endpoint == SHORT_QUERY_ENDPOINT:
            require_method(method, "PUT")
            if not practice.practice.queries_permission:
                raise ApiError(401, NO_QUERIES_PERMISSION)
            sql = sql_command(body)
            assert self._sim_now is not None
            page = practice.queries.page(sql, start, self._sim_now)
            # Without a total, only the faults that need none apply to query results.
            return corrupt_page(endpoint, page, start, 0, faults)
        require_method(method, "GET")
        limit = min(int_param(params, "limit", PAGE_SIZE, minimum=1), PAGE_SIZE)
        if endpoint == AGING_ENDPOINT:
            clinic = int_param(params, "clinicnum", None, minimum=0)
            as_of = as_of_param(params)
            # Without ClinicNum, the one-argument call tests may stand in for (runtime.aging).
            report = practice.aging(as_of) if clinic is None else practice.aging(as_of, clinic)
            total = len(report)
            page = [dict(row) for row in report[start : start + limit]]
        elif list_endpoint is not None:
            rows = practice.list_rows(list_endpoint.table, list_filters(list_endpoint, params))
            total = len(rows)
            as_dict = practice.ledger.table(list_endpoint.table).as_dict
            assert self._sim_now is not None
            server_time = self._sim_now.strftime(STAMP_FORMAT)
            shape = list_endpoint.shape
            page = [shape(as_dict(row), server_time) for row in rows[start : start + limit]]
        else:
            raise ApiError(404, f"Unknown endpoint: {endpoint}")
        return corrupt_page(endpoint, page, start, total, faults)

    # --- control endpoints (loopback only) ----------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        if not is_loopback(self.client_address[0]):
            self._send_json(403, {"error": "control endpoints are loopback only"})
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            payload = json.loads(body, parse_float=Decimal) if body.strip() else {}
            status, result = Control(self.simulator).handle(method, parts, payload)
        except ApiError as error:
            status, result = error.status, {"error": error.message}
        except (ValueError, TypeError) as error:
            status, result = 400, {"error": str(error)}
        except KeyError as error:
            status, result = 404, {"error": str(error.args[0] if error.args else error)}
        self._send_json(status, result)
