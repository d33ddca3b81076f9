"""The launchpad action: set or clear one account's manual override from the Dagster UI.

A job of its own (the sync assets need no config). Its config is kept in Dagster's run
storage: never put a patient's name in the reason.
"""

from typing import Literal

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    Failure,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from balances_pipeline.defs.resources import BalancesWarehouse
from balances_pipeline.staff.overrides import (
    OverrideError,
    build_request,
    clear_override,
    set_overrides,
)

REFRESHED_ASSETS = ("manual_overrides", "outstanding_balances", "aging_summary")


class ManualOverrideConfig(Config):
    practice_id: str = Field(description="the practice id (partition key)")
    account_id: str = Field(description="the account (guarantor) id in the source")
    action: Literal["set", "clear"] = Field(default="set", description="set or clear")
    patient_portion: str | None = Field(
        default=None, description="new patient portion, e.g. 182.40 (set: this and/or insurance)"
    )
    insurance_portion: str | None = Field(default=None, description="new insurance portion")
    reason: str = Field(description="why (1-500 characters; never a patient's name)")
    actor: str = Field(description="who makes the change")


@op(description="Validate and apply one manual override, then republish the practice.")
def apply_manual_override(
    context: OpExecutionContext, config: ManualOverrideConfig, warehouse: BalancesWarehouse
) -> None:
    practices = warehouse.practices()
    try:
        if config.action == "clear":
            result = clear_override(
                warehouse.layout(), practices, config.practice_id, config.account_id,
                config.reason, config.actor,
            )
        else:
            request = build_request(
                practices, config.practice_id, config.account_id, config.patient_portion,
                config.insurance_portion, config.reason, config.actor,
            )
            [result] = set_overrides(warehouse.layout(), practices, [request])
    except OverrideError as error:
        raise Failure(description=str(error)) from None
    context.log.info(
        f"override {config.action} on {result.practice_id}/{result.account_id}: "
        f"{', '.join(result.events)}"
    )
    for asset in REFRESHED_ASSETS:
        context.log_event(
            AssetMaterialization(
                asset_key=AssetKey(asset), partition=result.practice_id,
                metadata={"override_id": result.override_id or "", "action": config.action},
            )
        )


@job(description="Set or clear one account's manual override (launchpad config).")
def manual_override_job() -> None:
    apply_manual_override()
