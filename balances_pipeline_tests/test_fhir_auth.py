"""FHIR connector: SMART Backend Services (client assertion, token cache, renewal on 401),
static bearer tokens, and secrets kept out of messages and logs."""

from __future__ import annotations

import logging
import time

import pytest

from balances_pipeline.sources.errors import AuthenticationError, InvalidCredentialError
from balances_pipeline.sources.fhir.client import FhirClient
from balances_pipeline_tests.fhir_fake import (
    CLIENT_ID,
    KEY_ENV,
    STATIC_TOKEN,
    TOKEN_ENV,
    FakeFhir,
    Reply,
    account,
    dumps,
    ec_pem,
    fhir_fixture,  # noqa: F401
    make_client,
    make_practice,
    outcome,
    read_all,
    rsa_pem,
)


def accounts(count: int) -> list[dict]:
    return [account(f"a{n}", [("patient", "current", "1")]) for n in range(count)]


def test_rs384_assertion_claims_verified_by_server(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(3)
    with make_client(fhir, key_id="key-2026") as client:
        rows, _ = read_all(client)
    assert len(rows) == 3
    (assertion,) = fhir.assertions  # the fake verified signature, alg, aud and iss
    assert assertion.header["alg"] == "RS384" and assertion.header["kid"] == "key-2026"
    claims = assertion.claims
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == fhir.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["exp"] <= time.time() + 300
    (token,) = fhir.requests_to("token")
    assert token.method == "POST"


def test_es384_for_an_ec_key(fhir: FakeFhir, monkeypatch: pytest.MonkeyPatch) -> None:
    pem, public = ec_pem()
    fhir.public_key, fhir.algorithm = public, "ES384"
    monkeypatch.setenv(KEY_ENV, pem)
    fhir.accounts = accounts(1)
    with make_client(fhir) as client:
        rows, _ = read_all(client)
    assert len(rows) == 1
    assert fhir.assertions[0].header["alg"] == "ES384"
    assert "kid" not in fhir.assertions[0].header


def test_pem_with_literal_newline_escapes(fhir: FakeFhir, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    pem, _ = rsa_pem()
    monkeypatch.setenv(KEY_ENV, pem.replace("\n", "\\n"))
    fhir.accounts = accounts(1)
    with make_client(fhir) as client:
        assert len(read_all(client)[0]) == 1


def test_token_cached_across_pages_and_jti_unique(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(20)
    with make_client(fhir, page_size=3) as client:
        read_all(client)
    assert len(fhir.requests_to("account")) == 7
    assert len(fhir.requests_to("token")) == 1
    assert len(fhir.requests_to("smart")) == 1
    with make_client(fhir, page_size=10) as client:  # a new client: a new token
        read_all(client)
    jtis = [a.claims["jti"] for a in fhir.assertions]
    assert len(jtis) == len(set(jtis)) == 2


def test_token_renewed_shortly_before_expires_in(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(4)
    fhir.expires_in = 2  # kept for half its life when that is shorter than 30 s
    with make_client(fhir, page_size=2) as client:
        pages = client.account_balance_pages(None)[0]
        next(pages)
        time.sleep(1.1)
        list(pages)
    assert len(fhir.requests_to("token")) == 2
    assert len(fhir.requests_to("account")) == 2  # no 401 was needed


def test_expired_token_renewed_once(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(6)
    with make_client(fhir, page_size=2) as client:
        pages = client.account_balance_pages(None)[0]
        first = next(pages)
        fhir.expire_tokens()  # the server revokes the token before its expires_in
        rest = list(pages)
    assert len(first.rows) + sum(len(page.rows) for page in rest) == 6
    assert len(fhir.requests_to("token")) == 2
    statuses = [s.authorization for s in fhir.requests_to("account")]
    assert len(statuses) == 4  # 3 pages, one of them sent twice


def test_second_401_fails_with_authentication_error(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(2)
    rejected = Reply(401, outcome("Token is not valid for this tenant"))
    fhir.script["account"] = [rejected, rejected]
    with make_client(fhir) as client, pytest.raises(AuthenticationError) as failure:
        read_all(client)
    assert str(failure.value) == ("authentication failed for practice test_fhir "
                                  "(HTTP 401: Token is not valid for this tenant)")
    assert len(fhir.requests_to("token")) == 2
    assert len(fhir.requests_to("account")) == 2


def test_wrong_static_token(fhir: FakeFhir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-1234")
    with make_client(fhir, auth="bearer") as client, \
            pytest.raises(AuthenticationError) as failure:
        read_all(client)
    assert str(failure.value) == ("authentication failed for practice test_fhir "
                                  "(HTTP 401: Access token expired or invalid)")
    assert len(fhir.requests_to("account")) == 1  # a static token is not renewed
    assert fhir.requests_to("token") == []


def test_static_token_sent(fhir: FakeFhir) -> None:
    fhir.accounts = accounts(2)
    with make_client(fhir, auth="bearer") as client:
        assert len(read_all(client)[0]) == 2
    assert fhir.requests_to("account")[0].authorization == f"Bearer {STATIC_TOKEN}"


def test_token_endpoint_refusal_is_authentication_error(fhir: FakeFhir) -> None:
    fhir.script["token"] = [Reply(401, dumps({"error": "invalid_client",
                                              "error_description": "unknown key"}))]
    with make_client(fhir) as client, pytest.raises(AuthenticationError) as failure:
        read_all(client)
    assert str(failure.value) == ("authentication failed for practice test_fhir (token "
                                  "endpoint HTTP 401: invalid_client: unknown key)")


def test_bad_pem_names_the_variable(fhir: FakeFhir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
    with pytest.raises(InvalidCredentialError) as failure:
        FhirClient(make_practice(fhir.url))
    message = str(failure.value)
    assert KEY_ENV in message and "not a key" not in message and "\n" not in message


def test_token_endpoint_on_plain_http_elsewhere_refused(fhir: FakeFhir) -> None:
    fhir.script["smart"] = [Reply(200, dumps({"token_endpoint": "http://localhost:1/token"}))]
    with make_client(fhir) as client, pytest.raises(Exception, match="must be https"):
        read_all(client)


def test_secrets_never_in_errors_or_logs(fhir: FakeFhir, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    pem, _ = rsa_pem()
    fhir.accounts = accounts(3)
    with make_client(fhir, page_size=2) as client:
        pages = client.account_balance_pages(None)[0]
        next(pages)
        token = client._transport.tokens._token  # type: ignore[union-attr]
        assert token and token not in repr(client) and token not in repr(client._transport)
        # The server echoes the token and the assertion back in its explanation.
        assertion = client._transport.tokens._spent[0]  # type: ignore[union-attr]
        fhir.script["account"] = [Reply(403, outcome(f"token {token} and {assertion} and "
                                                     f"Bearer {token} refused"))]
        with pytest.raises(AuthenticationError) as failure:
            list(pages)
    message = str(failure.value)
    assert message.startswith("authentication failed for practice test_fhir (HTTP 403: ")
    texts = [message, caplog.text, *(r.getMessage() for r in caplog.records)]
    body_lines = [line for line in pem.splitlines() if "-----" not in line]
    for text in texts:
        assert token not in text and assertion not in text
        assert not any(line in text for line in body_lines)
    monkeypatch.setenv(TOKEN_ENV, STATIC_TOKEN)
    fhir.script["account"] = [Reply(401, outcome(f"bad token {STATIC_TOKEN}"))]
    with make_client(fhir, auth="bearer") as client, \
            pytest.raises(AuthenticationError) as failure:
        read_all(client)
    assert STATIC_TOKEN not in str(failure.value) and STATIC_TOKEN not in caplog.text
