"""The simulator's FHIR R4/R5 endpoint: the same simulated ledgers as its Open Dental API.

URL scheme (per practice `<pid>`, on the simulator's host and port):

| URL | what |
| --- | --- |
| `/fhir/<pid>/r4`, `/fhir/<pid>/r5` | bases: R4 4.0.1 (cross-version extension), R5 5.0.0 |
| `[base]/metadata` | CapabilityStatement (no auth) |
| `[base]/.well-known/smart-configuration` | SMART discovery (no auth) |
| `/fhir/<pid>/auth/token` | SMART Backend Services token endpoint (fhir_auth.py) |
| `GET [base]/Account?...` | searchset Bundles (fhir_search.py) |
| `GET [base]/Account/<id>`, `GET [base]/Patient/<id>` | reads |
| `GET [base]/Group/<group>/$export` | Bulk Data kick-off (fhir_bulk.py) |
| `/fhir/<pid>/bulk/<job>[/<n>.ndjson]` | export status (GET, DELETE) and files |

A practice serves FHIR when it has `fhir_client_id` or `fhir_bearer_token`; other ids are
404. Every request but discovery, metadata and the token endpoint needs
`Authorization: Bearer <token>` (401 OperationOutcome otherwise). Errors are
`OperationOutcome`s with `issue[0].diagnostics`. Each request is in the simulator's request
log (`RequestRecord`, endpoints `fhir/<version>/Account` ... below); the practice's
transport faults (slow, drop, 429, 503, truncated body) apply to every FHIR request.
Resources and figures: fhir_data.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

from balances_pipeline.simulator.fhir_auth import FhirAuth, Grant, OAuthError, smart_configuration
from balances_pipeline.simulator.fhir_bulk import (
    OUTPUT_FORMATS,
    BulkJobs,
    export_types,
    manifest,
    ndjson_files,
)
from balances_pipeline.simulator.fhir_data import (
    FhirAccount,
    account_resource,
    build_accounts,
    fhir_json,
    format_instant,
    patient_resource,
)
from balances_pipeline.simulator.fhir_search import (
    SearchError,
    Searches,
    account_query,
    bad_request,
    time_filter,
)

if TYPE_CHECKING:
    from balances_pipeline.simulator.server import SimulatorServer, _PracticeRuntime

FHIR_PREFIX = "/fhir/"
VERSIONS = {"r4": "4.0.1", "r5": "5.0.0"}
FHIR_JSON = "application/fhir+json; charset=utf-8"
EXPORT_PARAMS = frozenset({"_type", "_since", "_outputFormat"})
# Request log endpoint names (`RequestRecord.endpoint`); `{v}` is r4 or r5.
TOKEN_ENDPOINT = "fhir/auth/token"
SEARCH_ENDPOINT = "fhir/{v}/Account"
EXPORT_ENDPOINT = "fhir/{v}/Group/$export"
STATUS_ENDPOINT = "fhir/bulk/status"
FILE_ENDPOINT = "fhir/bulk/file"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = FHIR_JSON
    headers: dict[str, str] = field(default_factory=dict)


def outcome(status: int, code: str, diagnostics: str, severity: str = "error") -> Reply:
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]}
    return Reply(status, fhir_json(body))


def _json(status: int, payload: Any, content_type: str = FHIR_JSON) -> Reply:
    return Reply(status, fhir_json(payload), content_type)


class FhirPractice:
    """One practice's FHIR state: client registration, tokens, searches, exports, figures."""

    def __init__(self, runtime: _PracticeRuntime) -> None:
        p = runtime.practice
        self.runtime = runtime
        self.auth = FhirAuth(p.id, p.fhir_client_id, p.fhir_public_key_pem,
                             p.fhir_bearer_token, p.fhir_token_lifetime_seconds)
        if p.fhir_bulk_polls < 0 or p.fhir_bulk_retry_after_seconds < 0:
            raise ValueError(f"practice {p.id}: fhir_bulk_* settings must not be negative")
        if p.fhir_bulk_file_accounts < 1:
            raise ValueError(f"practice {p.id}: fhir_bulk_file_accounts must be at least 1")
        self.zone = ZoneInfo(p.timezone) if p.timezone else None
        self.searches = Searches()
        self.bulk = BulkJobs()
        self._cache: tuple[tuple[int, date], dict[int, FhirAccount]] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        p = self.runtime.practice
        return bool(p.fhir_client_id or p.fhir_bearer_token)

    def localize(self, moment: datetime) -> datetime:
        """A naive office-local moment as an aware one in the office's UTC offset."""
        if self.zone is None:
            return moment.astimezone()
        return moment.replace(tzinfo=self.zone)

    def now(self) -> datetime:
        return self.localize(self.runtime.now())

    def accounts(self) -> dict[int, FhirAccount]:
        ledger = self.runtime.ledger
        key = (ledger.version, self.runtime.now().date())
        with self._lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, build_accounts(ledger, key[1], self.localize))
            return self._cache[1]


@dataclass
class _Request:
    method: str
    parts: list[str]
    params: dict[str, list[str]]
    headers: Any
    body: bytes
    root: str  # http://host:port/fhir/<pid>
    url: str  # the request's absolute URL

    def base(self, version: str) -> str:
        return f"{self.root}/{version}"


class FhirService:
    """Routes `/fhir/...` requests of the simulator's HTTP handler."""

    def __init__(self, simulator: SimulatorServer, runtimes: dict[str, _PracticeRuntime]) -> None:
        self.simulator = simulator
        self.practices = {pid: FhirPractice(runtime) for pid, runtime in runtimes.items()}

    def practice(self, practice_id: str) -> FhirPractice:
        state = self.practices.get(practice_id)
        if state is None or not state.enabled:
            raise KeyError(f"practice {practice_id!r} has no FHIR endpoint")
        return state

    def handle(self, handler: Any, method: str, path: str, query: str, body: bytes) -> None:
        parts = [unquote(p) for p in path[len(FHIR_PREFIX) :].strip("/").split("/")]
        params = parse_qs(query, keep_blank_values=True)
        state = self.practices.get(parts[0])
        if state is not None and not state.enabled:
            state = None
        pid = parts[0] if state else None
        logged = {k: v[-1] for k, v in params.items()}
        handler._pending_record = (pid, method, _endpoint_name(parts), logged)
        try:
            if state is None:
                self._send(handler, outcome(404, "not-found", f"no FHIR practice {parts[0]!r}"))
                return
            handler._sim_runtime = state.runtime
            handler._sim_now = state.runtime.now()
            host = handler.headers.get("Host") or f"{self.simulator.host}:{self.simulator.port}"
            root = f"http://{host}{FHIR_PREFIX}{parts[0]}"
            request = _Request(method, parts[1:], params, handler.headers, body, root,
                               f"http://{host}{handler.path}")
            if request.parts == ["auth", "token"] and method == "POST":
                handler._pending_record = (pid, method, TOKEN_ENDPOINT, _form_log(body))
            self._serve(handler, state, request)
        finally:
            if handler._pending_record is not None:  # nothing sent (dropped connection)
                pending, handler._pending_record = handler._pending_record, None
                self.simulator.record_request(*pending, None)

    def _serve(self, handler: Any, state: FhirPractice, request: _Request) -> None:
        runtime = state.runtime
        faults = runtime.faults.snapshot()
        if faults.slow_seconds > 0:
            time.sleep(faults.slow_seconds)
        fault = runtime.faults.take_transport_fault()
        if fault == "drop":
            handler._hang_up()
            return
        if fault == "rate_limit":
            reply = outcome(429, "throttled", "Too many requests.")
            reply.headers["Retry-After"] = str(faults.retry_after_seconds)
        elif fault == "server_error":
            reply = outcome(503, "transient", "Service unavailable.")
        else:
            try:
                reply = self._route(state, request)
            except SearchError as error:
                reply = outcome(error.status, error.code, error.diagnostics)
            except Exception as error:  # a simulator bug must not look like a dropped line
                reply = outcome(500, "exception", f"simulator error: {error!r}")
        self._send(handler, reply, truncate=fault == "truncate")

    def _send(self, handler: Any, reply: Reply, truncate: bool = False) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body) + (64 if truncate else 0)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if truncate:
            handler.wfile.write(reply.body[: len(reply.body) // 2])
            handler._hang_up()
        else:
            handler.wfile.write(reply.body)

    # --- routes ---------------------------------------------------------------------------

    def _route(self, state: FhirPractice, request: _Request) -> Reply:
        parts, method = request.parts, request.method
        if parts == ["auth", "token"]:
            return self._token(state, request) if method == "POST" else _not_allowed(method)
        if len(parts) >= 2 and parts[0] == "bulk":
            return self._bulk(state, request)
        if not parts or parts[0] not in VERSIONS:
            return outcome(404, "not-found", f"unknown FHIR path {'/'.join(parts)!r} "
                           "(bases are /r4 and /r5)")
        version, rest = parts[0], parts[1:]
        if rest == [".well-known", "smart-configuration"]:
            return _json(200, smart_configuration(f"{request.root}/auth/token"),
                         "application/json")
        if rest == ["metadata"]:
            return _json(200, _capability(version, state.now()))
        if method != "GET":
            return _not_allowed(method)
        grant = state.auth.check(request.headers.get("Authorization"))
        if isinstance(grant, str):
            reply = outcome(401, "login", grant)
            reply.headers["WWW-Authenticate"] = 'Bearer realm="fhir", error="invalid_token"'
            return reply
        if rest and rest[0] in ("Account", "Patient") and not grant.allows(rest[0]):
            return outcome(403, "forbidden", f"the token's scopes do not allow {rest[0]}")
        if rest == ["Account"]:
            return self._search(state, request, version, grant)
        if len(rest) == 2 and rest[0] in ("Account", "Patient"):
            return self._read(state, version, rest[0], rest[1])
        if len(rest) == 3 and rest[0] == "Group" and rest[2] == "$export":
            return self._export(state, request, version, rest[1], grant)
        return outcome(404, "not-found", f"unknown resource or operation: {'/'.join(rest)}")

    def _token(self, state: FhirPractice, request: _Request) -> Reply:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            if content_type != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request",
                                 "the body must be application/x-www-form-urlencoded")
            form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
            payload = state.auth.issue(form, f"{request.root}/auth/token")
        except OAuthError as error:
            return Reply(error.status, fhir_json(error.to_json()), "application/json",
                         {"Cache-Control": "no-store"})
        return Reply(200, fhir_json(payload), "application/json", {"Cache-Control": "no-store"})

    def _search(self, state: FhirPractice, request: _Request, version: str, grant: Grant) -> Reply:
        params = request.params
        if "_page" in params:
            result, offset, count = state.searches.page(params["_page"][-1])
            if result.version != version:
                raise bad_request("this page link belongs to another FHIR version's base")
        else:
            query = account_query(params, state.localize)
            if query.include and not grant.allows("Patient"):
                return outcome(403, "forbidden", "the token's scopes do not allow Patient "
                               "(_include=Account:guarantor)")
            ids = [g for g, a in state.accounts().items() if query.matches(a)]
            result, offset, count = state.searches.add(version, ids, query.include), 0, query.count
        accounts = state.accounts()
        base = request.base(version)
        entries: list[dict[str, Any]] = []
        included: list[dict[str, Any]] = []
        for guarantor in result.ids[offset : offset + count]:
            account = accounts.get(guarantor)
            if account is None:
                continue
            entries.append({"fullUrl": f"{base}/Account/{account.id}",
                            "resource": account_resource(account, version),
                            "search": {"mode": "match"}})
            patient = patient_resource(account) if result.include else None
            if patient is not None:
                included.append({"fullUrl": f"{base}/Patient/{patient['id']}",
                                 "resource": patient, "search": {"mode": "include"}})
        links = [{"relation": "self", "url": request.url}]
        if count > 0 and offset + count < len(result.ids):
            token = state.searches.page_token(result, offset + count, count)
            links.append({"relation": "next", "url": f"{base}/Account?_page={token}"})
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": format_instant(state.now())},
            "type": "searchset",
            "total": len(result.ids),
            "link": links,
        }
        if entries or included:
            bundle["entry"] = entries + included
        return _json(200, bundle)

    def _read(self, state: FhirPractice, version: str, resource_type: str, rid: str) -> Reply:
        account = state.accounts().get(int(rid)) if rid.isdigit() else None
        resource = None
        if account is not None:
            resource = (account_resource(account, version) if resource_type == "Account"
                        else patient_resource(account))
        if resource is None:
            return outcome(404, "not-found", f"{resource_type}/{rid} is not known")
        return _json(200, resource)

    def _export(
        self, state: FhirPractice, request: _Request, version: str, group: str, grant: Grant
    ) -> Reply:
        practice = state.runtime.practice
        if group != practice.fhir_group_id:
            return outcome(404, "not-found", f"Group/{group} is not known")
        prefer = [p.strip().lower() for p in (request.headers.get("Prefer") or "").split(",")]
        if "respond-async" not in prefer:
            raise bad_request("$export needs the header Prefer: respond-async")
        params = request.params
        unknown = sorted(set(params) - EXPORT_PARAMS)
        if unknown:
            raise bad_request(f"$export does not support {', '.join(unknown)}")
        fmt = params.get("_outputFormat", ["application/fhir+ndjson"])[-1]
        if fmt not in OUTPUT_FORMATS:
            raise bad_request(f"_outputFormat {fmt!r} is not supported (application/fhir+ndjson)")
        try:
            types = export_types(params.get("_type"))
        except ValueError as error:
            raise bad_request(str(error)) from None
        for rtype in types:
            if not grant.allows(rtype):
                return outcome(403, "forbidden", f"the token's scopes do not allow {rtype}")
        since: Callable[[datetime], bool] = lambda t: True  # noqa: E731
        if "_since" in params:
            since = time_filter("_since", "ge" + params["_since"][-1], state.localize)
        transaction_time = format_instant(state.now())
        accounts = list(state.accounts().values())
        per_file = practice.fhir_bulk_file_accounts
        files = []
        for rtype in types:
            if rtype == "Account":
                resources = [account_resource(a, version) for a in accounts
                             if since(a.last_updated)]
            else:
                patients = (patient_resource(a) for a in accounts
                            if a.patient_updated and since(a.patient_updated))
                resources = [p for p in patients if p is not None]
            files.extend(ndjson_files(rtype, resources, per_file))
        job = state.bulk.add(request.url, transaction_time, files, practice.fhir_bulk_polls)
        reply = outcome(202, "informational", "export started", severity="information")
        reply.headers["Content-Location"] = f"{request.root}/bulk/{job.id}"
        return reply

    def _bulk(self, state: FhirPractice, request: _Request) -> Reply:
        grant = state.auth.check(request.headers.get("Authorization"))
        if isinstance(grant, str):
            return outcome(401, "login", grant)
        job = state.bulk.get(request.parts[1])
        if job is None or len(request.parts) > 3:
            return outcome(404, "not-found", "no such export (finished, cancelled or unknown)")
        status_url = f"{request.root}/bulk/{job.id}"
        if len(request.parts) == 3:
            if request.method != "GET":
                return _not_allowed(request.method)
            name = request.parts[2]
            index = int(name[: -len(".ndjson")]) if name.endswith(".ndjson") and \
                name[: -len(".ndjson")].isdigit() else 0
            if not 1 <= index <= len(job.files):
                return outcome(404, "not-found", f"no file {name} in this export")
            return Reply(200, job.files[index - 1][1], "application/fhir+ndjson")
        if request.method == "DELETE":
            state.bulk.delete(job.id)
            return outcome(202, "informational", "export cancelled", severity="information")
        if request.method != "GET":
            return _not_allowed(request.method)
        if not job.poll():
            retry = str(state.runtime.practice.fhir_bulk_retry_after_seconds)
            return Reply(202, b"", FHIR_JSON, {"Retry-After": retry, "X-Progress": job.progress})
        return _json(200, manifest(job, status_url), "application/json")


def _not_allowed(method: str) -> Reply:
    return outcome(405, "not-supported", f"method {method} is not allowed here")


def _endpoint_name(parts: list[str]) -> str:
    rest = parts[1:]
    if rest[:1] == ["bulk"]:
        return FILE_ENDPOINT if len(rest) >= 3 else STATUS_ENDPOINT
    if rest[:1] == ["auth"]:
        return TOKEN_ENDPOINT
    if len(rest) >= 4 and rest[1] == "Group" and rest[3] == "$export":
        return EXPORT_ENDPOINT.format(v=rest[0])
    if len(rest) == 3 and rest[1] in ("Account", "Patient"):
        return f"fhir/{rest[0]}/{rest[1]}/{{id}}"
    return "fhir/" + "/".join(rest)


def _form_log(body: bytes) -> dict[str, str]:
    """A token request's form for the request log, without the client assertion."""
    form = parse_qs(body.decode("utf-8", "replace"))
    return {k: v[-1] for k, v in form.items() if k != "client_assertion"}


def _capability(version: str, now: datetime) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now),
        "kind": "instance",
        "fhirVersion": VERSIONS[version],
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {"service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}]}]},
            "resource": [
                {"type": "Account", "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": [{"name": "status", "type": "token"},
                                 {"name": "_lastUpdated", "type": "date"}],
                 "searchInclude": ["Account:guarantor"]},
                {"type": "Patient", "interaction": [{"code": "read"}]},
                {"type": "Group", "operation": [{"name": "export", "definition":
                    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]},
            ],
        }],
    }
