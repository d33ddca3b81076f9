"""Shared by the simulator's FHIR tests: the module-scoped simulator with FHIR practices,
the test client keys, and small callers (real HTTP on loopback with `requests`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from balances_pipeline.simulator import SimPractice, SimulatorServer
from balances_pipeline_tests.simulator_http_helpers import _no_faults  # noqa: F401 - re-exported

AS_OF = date(2026, 11, 30)
DEV = "dev-key-fhir"
CLIENT = "test-client-peds"
STATIC = "static-token-peds"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/Account.read system/Patient.read"
BALANCE_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
TERMS = ("current", "30", "60", "90", "120")


def _pem(key: Any) -> tuple[str, str]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


RSA_PRIVATE, RSA_PUBLIC = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = _pem(ec.generate_private_key(ec.SECP384R1()))
OTHER_PRIVATE, _ = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    practices = [
        # FHIR and Open Dental over one ledger: the aging report is the independent witness.
        SimPractice("peds", "cust-peds", accounts=230, seed=7, today=AS_OF,
                    timezone="America/Denver", fhir_client_id=CLIENT,
                    fhir_public_key_pem=RSA_PUBLIC + EC_PUBLIC, fhir_bearer_token=STATIC,
                    fhir_bulk_retry_after_seconds=0),
        # Changed by tests (rows added, deleted): a half-hour offset east of UTC.
        SimPractice("kolkata", "cust-kolkata", accounts=60, seed=21, today=AS_OF,
                    timezone="Asia/Kolkata", fhir_client_id="client-kolkata",
                    fhir_public_key_pem=EC_PUBLIC, fhir_bearer_token="static-kolkata",
                    fhir_bulk_polls=0, fhir_bulk_retry_after_seconds=0),
        SimPractice("dental_only", "cust-dental", accounts=10, seed=2, today=AS_OF),
    ]
    with SimulatorServer(practices, developer_key=DEV) as server:
        yield server




def assertion(
    sim: SimulatorServer,
    practice: str = "peds",
    key: str = RSA_PRIVATE,
    alg: str = "RS384",
    **overrides: Any,
) -> str:
    """A SMART client assertion; `overrides` replace claims (None drops one)."""
    client = CLIENT if practice == "peds" else f"client-{practice}"
    claims: dict[str, Any] = {
        "iss": client,
        "sub": client,
        "aud": sim.fhir_token_url(practice),
        "exp": int(time.time()) + 240,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg)


def token_request(sim: SimulatorServer, signed: str, practice: str = "peds",
                  **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed, "scope": SCOPE, **form}
    return requests.post(sim.fhir_token_url(practice), data=data, timeout=10)


def access_token(sim: SimulatorServer, practice: str = "peds", **kwargs: Any) -> str:
    key, alg = (EC_PRIVATE, "ES384") if practice != "peds" else (RSA_PRIVATE, "RS384")
    reply = token_request(sim, assertion(sim, practice, key, alg), practice, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def get(sim: SimulatorServer, path: str, practice: str = "peds", version: str = "r4",
        token: str | None = STATIC, headers: dict[str, str] | None = None,
        **params: Any) -> requests.Response:
    url = path if path.startswith("http") else f"{sim.fhir_url(practice, version)}/{path}"
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, params=params or None, headers=all_headers, timeout=30)


def decimal_json(reply: requests.Response) -> Any:
    return json.loads(reply.text, parse_float=Decimal)


def search_all(sim: SimulatorServer, practice: str = "peds", version: str = "r4",
               token: str = STATIC, **params: Any) -> list[dict[str, Any]]:
    """Every page of an Account search, following `next` links."""
    bundles = []
    reply = get(sim, "Account", practice, version, token, **params)
    while True:
        assert reply.status_code == 200, reply.text
        bundle = decimal_json(reply)
        bundles.append(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return bundles
        reply = get(sim, nxt[0], practice, version, token)


def matches(bundles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["resource"] for b in bundles for e in b.get("entry", [])
            if e["search"]["mode"] == "match"]


def balances(resource: dict[str, Any]) -> dict[tuple[str, str], tuple[Decimal, bool]]:
    """(aggregate, term) -> (amount, estimate) of an R4 (extension) or R5 Account."""
    result = {}
    if "balance" in resource:
        for entry in resource["balance"]:
            key = (entry["aggregate"]["coding"][0]["code"], entry["term"]["coding"][0]["code"])
            assert entry["amount"]["currency"] == "USD"
            result[key] = (entry["amount"]["value"], entry["estimate"])
        return result
    for ext in resource.get("extension", []):
        assert ext["url"] == BALANCE_EXT
        parts = {sub["url"]: sub for sub in ext["extension"]}
        key = (parts["aggregate"]["valueCodeableConcept"]["coding"][0]["code"],
               parts["term"]["valueCodeableConcept"]["coding"][0]["code"])
        money = parts["amount"]["valueMoney"]
        assert money["currency"] == "USD"
        result[key] = (money["value"], parts["estimate"]["valueBoolean"])
    return result


def issue(reply: requests.Response) -> str:
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["diagnostics"]
