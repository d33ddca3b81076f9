"""The `source` block of an Open Dental practice (`type: opendental`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from balances_pipeline.sources.source_config import ApiSourceConfig, EnvVarName, Produces


class OpenDentalSource(ApiSourceConfig):
    type: Literal["opendental"]
    developer_key_env: EnvVarName
    customer_key_env: EnvVarName
    mode: Literal["aging_report", "ledger"] = "aging_report"
    # One clinic of a multi-clinic database: the aging report's ClinicNum, and in ledger
    # mode the families whose guarantor is assigned to it (docs/sources.md, Clinics).
    clinic_num: int | None = Field(default=None, ge=0, le=2**63 - 1, strict=True)
    page_size: int = Field(default=100, ge=1, le=1000)

    @property
    def produces(self) -> Produces:
        return self.mode

    @property
    def source_mode(self) -> str:
        return self.mode

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        return (self.developer_key_env, self.customer_key_env)

    @property
    def incremental_endpoints(self) -> tuple[str, ...]:
        if self.mode != "ledger":
            return ()
        from balances_pipeline.sources.opendental.rows import LEDGER_RELATIONS

        return tuple(LEDGER_RELATIONS)
