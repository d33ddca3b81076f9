"""FHIR authorization: a static bearer token, or SMART Backend Services.

SMART Backend Services (client credentials): the token endpoint comes from
`[base]/.well-known/smart-configuration`; the client posts `grant_type=client_credentials`
with a `client_assertion` JWT signed with the practice's private key (RS384 for an RSA
key, ES384 for an EC P-384 key; `iss` = `sub` = client id, `aud` = the token URL, `exp`
at most 5 minutes ahead, a unique `jti`). The access token is kept until 30 s before its
`expires_in` (half its life when that is shorter) and renewed once on a 401.

The private key, assertions and tokens live only in objects whose repr hides them; they
never reach a message or a log record (`secrets()` lists them for scrubbing).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from requests.auth import AuthBase

from balances_pipeline.config import Practice
from balances_pipeline.sources.credentials import read_pem_secret, read_secret
from balances_pipeline.sources.errors import (
    AuthenticationError,
    InvalidCredentialError,
    MalformedResponseError,
    SourceError,
    TransientSourceError,
)
from balances_pipeline.sources.fhir.config import FhirSource
from balances_pipeline.sources.fhir.values import decode_json

logger = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 300
RENEW_MARGIN_SECONDS = 30.0
DEFAULT_EXPIRES_IN = 300
_SENDABLE_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")


class PrivateKey:
    """A loaded private key and the JWS algorithm it signs with; repr hides it."""

    __slots__ = ("_key", "algorithm")

    def __init__(self, key: Any, algorithm: str) -> None:
        self._key = key
        self.algorithm = algorithm

    def __repr__(self) -> str:
        return f"<{self.algorithm} private key (redacted)>"


def read_private_key(practice: Practice, variable: str) -> PrivateKey:
    """The PEM private key in `variable` (real newlines, or literal `\\n` escapes as env
    files carry them). Errors name the variable, never the value."""
    value = read_pem_secret(practice, variable)
    invalid = InvalidCredentialError(
        f"practice {practice.id}: environment variable {variable} does not hold an "
        "unencrypted PEM private key (RSA, or EC P-384)")
    try:
        key = serialization.load_pem_private_key(value.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError, Exception):  # noqa: B014 - never the value
        raise invalid from None
    if isinstance(key, rsa.RSAPrivateKey):
        return PrivateKey(key, "RS384")
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return PrivateKey(key, "ES384")
    raise invalid


def client_assertion(key: PrivateKey, client_id: str, token_url: str,
                     key_id: str | None = None, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id, "sub": client_id, "aud": token_url,
        "exp": issued + ASSERTION_LIFETIME_SECONDS, "iat": issued, "jti": str(uuid.uuid4()),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key._key, algorithm=key.algorithm, headers=headers)


class BearerAuth(AuthBase):
    """Sets `Authorization: Bearer <token>` from a token source; repr hides the token."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._tokens.token()}"
        return request

    def __repr__(self) -> str:
        return "<Bearer authorization (redacted)>"


class TokenSource:
    """Where access tokens come from. `renewable`: a 401 is worth one new token."""

    renewable = False

    def token(self) -> str:
        raise NotImplementedError

    def renew(self) -> None:
        """Drop the cached token: the next `token()` gets a new one."""

    def secrets(self) -> tuple[str, ...]:
        return ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (redacted)>"


class StaticToken(TokenSource):
    def __init__(self, practice: Practice, variable: str) -> None:
        self._value = read_secret(practice, variable)

    def token(self) -> str:
        return self._value

    def secrets(self) -> tuple[str, ...]:
        return (self._value,)


# Sends one request without a token: (method, url, *, what, data=, headers=) -> an answer
# with `status`, `headers` and `body` (transport.Answer), counted in the client's stats.
Send = Callable[..., Any]


class SmartBackendTokens(TokenSource):
    """SMART Backend Services tokens, cached; `send` makes the HTTP requests (counted)."""

    renewable = True

    def __init__(self, practice: Practice, source: FhirSource, send: Send,
                 explain: Callable[[Any], str]) -> None:
        assert source.client_id and source.private_key_env
        self._practice = practice
        self._source = source
        self._key = read_private_key(practice, source.private_key_env)
        self._send = send
        self._explain = explain
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._token_url: str | None = None
        self._spent: list[str] = []  # earlier tokens and assertions, to scrub
        self.token_requests = 0

    @property
    def algorithm(self) -> str:
        return self._key.algorithm

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def renew(self) -> None:
        with self._lock:
            self._token = None

    def secrets(self) -> tuple[str, ...]:
        return tuple(self._spent) + ((self._token,) if self._token else ())

    def _fail(self, what: str, response: Any = None) -> SourceError:
        practice = self._practice.id
        if response is not None and response.status in (400, 401, 403):
            explanation = self._explain(response)
            said = f": {explanation}" if explanation else ""
            return AuthenticationError(f"authentication failed for practice {practice} "
                                       f"({what} HTTP {response.status}{said})")
        status = f" HTTP {response.status}" if response is not None else ""
        if response is not None and (response.status == 429
                                     or response.status >= 500):
            return TransientSourceError(f"practice {practice}: {what}{status}")
        return SourceError(f"practice {practice}: {what}{status}")

    def token_url(self) -> str:
        if self._token_url is None:
            self._token_url = self._discover()
        return self._token_url

    def _discover(self) -> str:
        base = self._source.base_url
        response = self._send("GET", f"{base}/.well-known/smart-configuration",
                              what="smart-configuration",
                              headers={"Accept": "application/json"})
        if response.status != 200:
            raise self._fail("smart-configuration", response)
        body = _json(response)
        url = body.get("token_endpoint") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise MalformedResponseError(f"practice {self._practice.id}: smart-configuration "
                                         "has no token_endpoint")
        token, fhir = urlsplit(url), urlsplit(base)
        if not (token.scheme == "https" or (token.scheme == "http" and fhir.scheme == "http"
                                            and token.netloc == fhir.netloc)):
            raise SourceError(f"practice {self._practice.id}: token_endpoint must be https "
                              "(or http on the FHIR server's own host)")
        return url

    def _fetch(self) -> None:
        url = self.token_url()
        assertion = client_assertion(self._key, self._source.client_id or "", url,
                                     self._source.key_id)
        self._spent.append(assertion)
        self.token_requests += 1
        response = self._send("POST", url, what="token endpoint", data={
            "grant_type": "client_credentials", "scope": self._source.scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
        }, headers={"Accept": "application/json"})
        if response.status != 200:
            raise self._fail("token endpoint", response)
        body = _json(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not _SENDABLE_TOKEN.fullmatch(token):
            raise MalformedResponseError(f"practice {self._practice.id}: token endpoint "
                                         "answer has no usable access_token")
        token_type = body.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise MalformedResponseError(f"practice {self._practice.id}: token endpoint "
                                         "answer is not a bearer token")
        expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | Decimal) \
                or not 0 < expires_in < 10**7:
            expires_in = DEFAULT_EXPIRES_IN
        margin = min(RENEW_MARGIN_SECONDS, float(expires_in) / 2)
        if self._token:
            self._spent.append(self._token)
        self._token = token
        self._expires_at = time.monotonic() + float(expires_in) - margin
        logger.info("practice %s: access token obtained (valid %d s)", self._practice.id,
                    int(expires_in))


def _json(response: Any) -> Any:
    try:
        return decode_json(response.body)
    except ValueError:
        return None
