"""The simulator's SMART Backend Services: discovery, the token endpoint, bearer tokens."""

from __future__ import annotations

import time

import requests

from balances_pipeline.simulator import SimulatorServer
from balances_pipeline_tests.simulator_fhir_helpers import (  # noqa: F401 - fixtures too
    CLIENT,
    EC_PRIVATE,
    OTHER_PRIVATE,
    RSA_PRIVATE,
    STATIC,
    _no_faults,
    access_token,
    assertion,
    get,
    issue,
    sim,
    token_request,
)


def test_smart_configuration_names_the_token_endpoint(sim: SimulatorServer) -> None:
    for version in ("r4", "r5"):
        reply = get(sim, ".well-known/smart-configuration", version=version, token=None)
        assert reply.status_code == 200
        config = reply.json()
        assert config["token_endpoint"] == sim.fhir_token_url("peds")
        assert config["token_endpoint"].endswith("/fhir/peds/auth/token")
        assert config["grant_types_supported"] == ["client_credentials"]
        assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]


def test_rs384_and_es384_assertions_get_tokens_that_read(sim: SimulatorServer) -> None:
    for key, alg in ((RSA_PRIVATE, "RS384"), (EC_PRIVATE, "ES384")):
        reply = token_request(sim, assertion(sim, key=key, alg=alg))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 300
        assert set(body["scope"].split()) == {"system/Account.read", "system/Patient.read"}
        read = get(sim, "Account", token=body["access_token"], _count=2)
        assert read.status_code == 200, read.text
        assert read.json()["resourceType"] == "Bundle"


def test_bad_assertions_are_refused_as_invalid_client(sim: SimulatorServer) -> None:
    now = int(time.time())
    cases = {
        "wrong key": assertion(sim, key=OTHER_PRIVATE),
        "wrong aud": assertion(sim, aud=sim.fhir_url("peds")),
        "other practice's aud": assertion(sim, aud=sim.fhir_token_url("kolkata")),
        "exp too far": assertion(sim, exp=now + 600),
        "expired": assertion(sim, exp=now - 10),
        "no exp": assertion(sim, exp=None),
        "no jti": assertion(sim, jti=None),
        "wrong iss": assertion(sim, iss="someone-else"),
        "wrong sub": assertion(sim, sub="someone-else"),
        "HS256": assertion(sim, key="a-shared-secret-that-is-long-enough-32b", alg="HS256"),
        "RS256": assertion(sim, alg="RS256"),
        "not a JWT": "not-a-jwt",
    }
    for case, signed in cases.items():
        reply = token_request(sim, signed)
        assert reply.status_code == 400, case
        body = reply.json()
        assert body["error"] == "invalid_client", (case, body)
        assert body["error_description"], case


def test_a_replayed_jti_is_refused(sim: SimulatorServer) -> None:
    signed = assertion(sim, jti="once-only-jti")
    assert token_request(sim, signed).status_code == 200
    again = token_request(sim, assertion(sim, jti="once-only-jti"))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_client"
    assert "jti" in again.json()["error_description"]


def test_grant_type_scope_and_form_errors(sim: SimulatorServer) -> None:
    reply = token_request(sim, assertion(sim), grant_type="authorization_code")
    assert (reply.status_code, reply.json()["error"]) == (400, "unsupported_grant_type")
    reply = token_request(sim, assertion(sim), scope="system/Account.write")
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_scope")
    reply = token_request(sim, assertion(sim), client_assertion_type="password")
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_client")
    reply = requests.post(sim.fhir_token_url("peds"), json={"grant_type": "client_credentials"},
                          timeout=10)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_request")


def test_requests_without_a_valid_token_are_401_operation_outcomes(sim: SimulatorServer) -> None:
    for token in (None, "nonsense", ""):
        reply = get(sim, "Account", token=token)
        assert reply.status_code == 401
        assert reply.headers["Content-Type"].startswith("application/fhir+json")
        assert issue(reply)
    odfhir = get(sim, "Account", token=None, headers={"Authorization": f"ODFHIR {STATIC}"})
    assert odfhir.status_code == 401


def test_static_bearer_token_reads(sim: SimulatorServer) -> None:
    assert get(sim, "Account", token=STATIC, _count=1).status_code == 200
    assert get(sim, "Account", "kolkata", token=STATIC).status_code == 401


def test_expired_tokens_get_401_and_a_new_token_works(sim: SimulatorServer) -> None:
    token = access_token(sim)
    assert get(sim, "Account", token=token, _count=1).status_code == 200
    assert sim.expire_fhir_tokens("peds") >= 1
    reply = get(sim, "Account", token=token, _count=1)
    assert reply.status_code == 401
    assert "expired" in issue(reply)
    assert get(sim, "Account", token=STATIC, _count=1).status_code == 200  # static stays
    assert get(sim, "Account", token=access_token(sim), _count=1).status_code == 200


def test_tokens_are_per_practice(sim: SimulatorServer) -> None:
    token = access_token(sim, "kolkata")
    assert get(sim, "Account", "kolkata", token=token, _count=1).status_code == 200
    assert get(sim, "Account", "peds", token=token, _count=1).status_code == 401


def test_scopes_limit_what_a_token_reads(sim: SimulatorServer) -> None:
    token = access_token(sim, scope="system/Account.read")
    assert get(sim, "Account", token=token, _count=1).status_code == 200
    included = get(sim, "Account", token=token, _count=1, _include="Account:guarantor")
    assert included.status_code == 403
    assert "Patient" in issue(included)
    guarantor = next(iter(sim.fhir_accounts("peds")))
    assert get(sim, f"Patient/{guarantor}", token=token).status_code == 403
    assert get(sim, f"Patient/{guarantor}", token=STATIC).status_code == 200


def test_token_requests_are_logged_without_the_assertion(sim: SimulatorServer) -> None:
    before = sim.request_count("peds", "fhir/auth/token")
    access_token(sim)
    assert sim.request_count("peds", "fhir/auth/token") == before + 1
    record = [r for r in sim.requests if r.endpoint == "fhir/auth/token"][-1]
    assert record.status == 200
    assert record.params["grant_type"] == "client_credentials"
    assert "client_assertion" not in record.params
    assert CLIENT not in str(record.params)


def test_bundled_demo_config_serves_a_fhir_practice_with_the_demo_key(
    tmp_path, monkeypatch
) -> None:
    from balances_pipeline.simulator.cli import ConfigError, bundled_config_path, load_config
    from balances_pipeline.simulator.fhir_auth import DEMO_CLIENT_ID, demo_private_key_pem

    for name in ("OD_DEVELOPER_KEY", "BRIGHT_SMILES_OD_CUSTOMER_KEY",
                 "LAKESIDE_FAMILY_OD_CUSTOMER_KEY", "HARBOR_DENTAL_OD_CUSTOMER_KEY"):
        monkeypatch.setenv(name, f"demo-{name.lower()}")
    developer_key, practices = load_config(bundled_config_path())
    peds = next(p for p in practices if p.id == "lakeside_peds")
    assert peds.customer_key is None and peds.fhir_client_id == DEMO_CLIENT_ID
    assert demo_private_key_pem() == demo_private_key_pem()  # deterministic
    small = [p for p in practices if p.id == "lakeside_peds"]
    with SimulatorServer(small, developer_key) as server:
        signed = assertion(server, "lakeside_peds", key=demo_private_key_pem(), alg="ES384",
                           iss=DEMO_CLIENT_ID, sub=DEMO_CLIENT_ID)
        token = token_request(server, signed, "lakeside_peds")
        assert token.status_code == 200, token.text
        reply = get(server, "Account", "lakeside_peds", token=token.json()["access_token"])
        assert reply.status_code == 200
        assert requests.delete(f"http://127.0.0.1:{server.port}/_sim/fhir-tokens/lakeside_peds",
                               timeout=10).json() == {"expired": 1}
        assert get(server, "Account", "lakeside_peds",
                   token=token.json()["access_token"]).status_code == 401

    config = tmp_path / "sim.yaml"
    monkeypatch.setenv("PEDS_TOKEN", "static-from-env")
    config.write_text("developer_key_env: OD_DEVELOPER_KEY\npractices:\n"
                      "  - id: p\n    fhir_bearer_token_env: PEDS_TOKEN\n"
                      "    fhir_bulk_polls: 0\n")
    _, (only,) = load_config(config)
    assert only.fhir_bearer_token == "static-from-env" and only.fhir_bulk_polls == 0
    config.write_text("developer_key_env: OD_DEVELOPER_KEY\npractices:\n"
                      "  - id: p\n    fhir_client_id: c\n")
    try:
        load_config(config)
    except ConfigError as error:
        assert "fhir_public_key" in str(error)
    else:
        raise AssertionError("a client id without a key must be refused")
