"""SMART Backend Services for a simulated FHIR practice: discovery, token endpoint, tokens.

`POST /fhir/<practice>/auth/token` takes `grant_type=client_credentials` with a
`private_key_jwt` client assertion, as the SMART App Launch "Backend Services" profile
says: signed RS384 or ES384 (nothing else) with a public key registered for the practice's
client, `iss` = `sub` = the client id, `aud` = the token URL exactly, `exp` present and at
most five minutes ahead, a `jti` never seen before. Failures are OAuth errors
(`400 {"error": "invalid_client", "error_description": ...}`). Granted scopes are the
requested read scopes on Account and Patient (`system/Account.read`, v2 `system/Account.rs`,
`system/*.read` ...); write scopes are not granted.

Access tokens live `fhir_token_lifetime_seconds` (real time, as JWT `exp` is); the
practice's static `fhir_bearer_token`, when set, is accepted too (all read scopes).

`demo_private_key_pem()` is the bundled demo key pair's private half: an ES384 (P-384) key
derived from a fixed, public label, for the simulator's demo practice only. It protects
nothing and must never be registered with a real EHR.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300
READ_SCOPES = frozenset({"read", "r", "rs", "s"})
SCOPE_RE = re.compile(r"^system/(Account|Patient|\*)\.([a-z]+)$")
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)
DEMO_KEY_LABEL = b"balances-pipeline simulator demo FHIR client key (demo only, not a secret)"
DEMO_CLIENT_ID = "balances-demo-client"


def demo_private_key_pem() -> str:
    """The demo-only ES384 private key (PEM), the same on every machine."""
    order = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                "581A0DB248B0A77AECEC196ACCC52973", 16)
    value = int.from_bytes(hashlib.sha384(DEMO_KEY_LABEL).digest(), "big") % (order - 1) + 1
    key = ec.derive_private_key(value, ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def demo_public_key_pem() -> str:
    return public_key_pem(demo_private_key_pem())


def public_key_pem(private_pem: str) -> str:
    """The PEM public key of a PEM private key (to register a client's key in a test)."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_keys(pem: str | None, where: str) -> list[Any]:
    """The RSA and P-384 EC public keys in `pem` (one or several PEM blocks)."""
    keys = []
    for block in PEM_BLOCK.findall(pem or ""):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError as error:
            raise ValueError(f"{where}: not a PEM public key ({error})") from None
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp384r1":
            raise ValueError(f"{where}: ES384 needs a P-384 key, not {key.curve.name}")
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"{where}: only RSA (RS384) and P-384 (ES384) keys are accepted")
        keys.append(key)
    if pem and not keys:
        raise ValueError(f"{where}: fhir_public_key_pem holds no PEM public key")
    return keys


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Grant:
    scopes: frozenset[str]

    def allows(self, resource_type: str) -> bool:
        for scope in self.scopes:
            match = SCOPE_RE.match(scope)
            if match and match.group(1) in (resource_type, "*"):
                return True
        return False


STATIC_GRANT = Grant(frozenset({"system/Account.read", "system/Patient.read"}))


def granted_scopes(requested: str) -> list[str]:
    granted = []
    for scope in requested.split():
        match = SCOPE_RE.match(scope)
        if match and (match.group(2) in READ_SCOPES) and scope not in granted:
            granted.append(scope)
    return granted


class FhirAuth:
    """One practice's client registration, issued tokens and seen assertion ids."""

    def __init__(
        self,
        practice_id: str,
        client_id: str | None,
        public_key_pem: str | None,
        bearer_token: str | None,
        token_lifetime_seconds: int,
    ) -> None:
        where = f"practice {practice_id}"
        if token_lifetime_seconds <= 0:
            raise ValueError(f"{where}: fhir_token_lifetime_seconds must be positive")
        self.client_id = client_id
        self.keys = load_public_keys(public_key_pem, where)
        if client_id and not self.keys:
            raise ValueError(f"{where}: fhir_client_id needs fhir_public_key_pem")
        self.bearer_token = bearer_token
        self.lifetime = token_lifetime_seconds
        self._tokens: dict[str, tuple[float, Grant]] = {}
        self._jtis: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, form: dict[str, str], token_url: str) -> dict[str, Any]:
        """The token response for a token request's form, or OAuthError."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is required")
        if not self.client_id:
            raise OAuthError("invalid_client", "no client is registered for this practice")
        claims = self._verify(assertion, token_url)
        scope = form.get("scope", "")
        if not scope.strip():
            raise OAuthError("invalid_scope", "scope is required")
        granted = granted_scopes(scope)
        if not granted:
            raise OAuthError("invalid_scope", f"none of the requested scopes is granted: {scope}")
        self._use_jti(str(claims["jti"]), float(claims["exp"]))
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now - 3600}
            self._tokens[token] = (now + self.lifetime, Grant(frozenset(granted)))
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.lifetime,
            "scope": " ".join(granted),
        }

    def _verify(self, assertion: str, token_url: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as error:
            raise OAuthError("invalid_client", f"client_assertion is not a JWT: {error}") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OAuthError("invalid_client", f"alg {alg!r} is not accepted (RS384, ES384)")
        kind = rsa.RSAPublicKey if alg == "RS384" else ec.EllipticCurvePublicKey
        keys = [key for key in self.keys if isinstance(key, kind)]
        if not keys:
            raise OAuthError("invalid_client", f"no {alg} key is registered for this client")
        for key in keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key,
                    algorithms=[alg],
                    audience=token_url,
                    issuer=self.client_id,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise OAuthError("invalid_client", f"client_assertion refused: {error}") from None
            break
        else:
            raise OAuthError(
                "invalid_client", "client_assertion signature does not verify with the "
                "client's registered key"
            )
        if claims.get("sub") != self.client_id:
            raise OAuthError("invalid_client", "sub must be the client id")
        if float(claims["exp"]) > time.time() + MAX_ASSERTION_LIFETIME:
            raise OAuthError("invalid_client", "exp is more than 5 minutes in the future")
        return claims

    def _use_jti(self, jti: str, exp: float) -> None:
        with self._lock:
            now = time.time()
            self._jtis = {k: v for k, v in self._jtis.items() if v >= now - 60}
            if jti in self._jtis:
                raise OAuthError("invalid_client", "jti has already been used")
            self._jtis[jti] = exp

    def check(self, authorization: str | None) -> Grant | str:
        """The grant of a request's `Authorization` header, or why it is refused."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "Authorization: Bearer <access token> is required"
        if self.bearer_token and hmac.compare_digest(token.encode(), self.bearer_token.encode()):
            return STATIC_GRANT
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None:
            return "the access token is not valid"
        if issued[0] <= time.time():
            return "the access token has expired"
        return issued[1]

    def expire_tokens(self) -> int:
        """Expire every issued token now (the static bearer token stays valid)."""
        with self._lock:
            for token, (_, grant) in list(self._tokens.items()):
                self._tokens[token] = (0.0, grant)
            return len(self._tokens)


def smart_configuration(token_url: str) -> dict[str, Any]:
    return {
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": ["system/Account.read", "system/Patient.read",
                             "system/Account.rs", "system/Patient.rs"],
        "capabilities": ["client-confidential-asymmetric"],
    }
