"""The `source` block of a FHIR practice (`type: fhir`, docs/sources.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from balances_pipeline.sources.source_config import ApiSourceConfig, EnvVarName, Produces


class FhirSource(ApiSourceConfig):
    type: Literal["fhir"]
    auth: Literal["smart_backend", "bearer"] = "smart_backend"
    # SMART Backend Services: the registered client id and the env var holding its PEM
    # private key (RS384 or ES384). Bearer: the env var holding a static access token.
    client_id: str | None = Field(default=None, min_length=1, max_length=200,
                                  pattern=r"^[\x21-\x7e]+$")
    private_key_env: EnvVarName | None = None
    token_env: EnvVarName | None = None
    # smart_backend: the `kid` header of the client assertion (the key's id in the JWKS
    # registered with the EHR), when the EHR asks for one.
    key_id: str | None = Field(default=None, min_length=1, max_length=200,
                               pattern=r"^[\x21-\x7e]+$")
    scope: str = "system/Account.read system/Patient.read"
    page_size: int = Field(default=100, ge=1, le=1000)
    # Bulk Data `$export` of this Group instead of paging `Account` searches.
    bulk_group_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    bulk_poll_max_seconds: float = Field(default=3600, gt=0, le=86400)
    # Searches add `status=active` (servers that do not support it: false).
    search_status_active: bool = True
    # Searches add `_include=Account:guarantor` for the guarantors' names (servers that
    # refuse it: false; names then come from `guarantor.party.display` only).
    include_guarantor: bool = True

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> FhirSource:
        if self.auth == "smart_backend":
            if not self.client_id or not self.private_key_env:
                raise ValueError("auth smart_backend needs client_id and private_key_env")
            if self.token_env:
                raise ValueError("token_env is for auth bearer; smart_backend uses "
                                 "client_id and private_key_env")
        else:
            if not self.token_env:
                raise ValueError("auth bearer needs token_env")
            if self.private_key_env or self.client_id or self.key_id:
                raise ValueError("client_id, private_key_env and key_id are for auth "
                                 "smart_backend")
        return self

    @property
    def produces(self) -> Produces:
        return "account_balances"

    @property
    def source_mode(self) -> str:
        return "fhir_bulk" if self.bulk_group_id else "fhir"

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        return tuple(name for name in (self.private_key_env, self.token_env) if name)

    @property
    def incremental_endpoints(self) -> tuple[str, ...]:
        return ("Account",)

    @property
    def days_outstanding_from_nonzero_terms(self) -> bool:
        return True
