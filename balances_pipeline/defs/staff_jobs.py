"""The launchpad actions, and how any staff change is reported to Dagster.

Two jobs of their own (the sync assets need no config): set or clear one account's manual
override, and block an account from the collection rules or lift the block. Their config
is kept in Dagster's run storage: never put a patient's name in the reason.

Every staff change, from these jobs or from the `balances` CLI, is reported as one
AssetMaterialization per asset it republished, in the practice's partition: the
materializations say what changed (ids and counts), never why (the reason stays in the
warehouse's audit tables).
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

from balances_pipeline.defs.metadata import block_change_metadata, override_change_metadata
from balances_pipeline.defs.resources import BalancesWarehouse
from balances_pipeline.staff.blocks import BlockResult, set_block
from balances_pipeline.staff.overrides import (
    OverrideError,
    OverrideResult,
    Republished,
    build_request,
    clear_override,
    set_overrides,
)

LAUNCHPAD = "launchpad"
CLI = "cli"


def _materializations(done: Republished, metadata: dict) -> list[AssetMaterialization]:
    return [
        AssetMaterialization(asset_key=AssetKey(asset), partition=done.practice_id,
                             metadata=metadata)
        for asset in done.assets
    ]


def override_materializations(
    results: list[OverrideResult], action: str, via: str
) -> list[AssetMaterialization]:
    """One materialization per republished asset of each practice the overrides touched.
    `action`: override_set, override_clear or override_import; `via`: cli or launchpad."""
    by_practice: dict[str, list[OverrideResult]] = {}
    for result in results:
        by_practice.setdefault(result.practice_id, []).append(result)
    materializations = []
    for practice_results in by_practice.values():
        done = practice_results[0].republished
        if done is not None:
            materializations += _materializations(
                done, override_change_metadata(practice_results, action, via)
            )
    return materializations


def block_materializations(result: BlockResult, via: str) -> list[AssetMaterialization]:
    """collection_targets, when they were re-evaluated after the block."""
    return _materializations(result.republished, block_change_metadata(result, via))


def _warn(context: OpExecutionContext, done: Republished | None) -> None:
    if done is not None and done.warning:
        context.log.warning(f"practice {done.practice_id}: {done.warning}")


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
    _warn(context, result.republished)
    for materialization in override_materializations(
        [result], f"override_{config.action}", LAUNCHPAD
    ):
        context.log_event(materialization)


@job(description="Set or clear one account's manual override (launchpad config).")
def manual_override_job() -> None:
    apply_manual_override()


class CollectionBlockConfig(Config):
    practice_id: str = Field(description="the practice id (partition key)")
    account_id: str = Field(description="the account (guarantor) id in the source")
    blocked: bool = Field(
        default=True, description="true: block the account from every collection rule; "
        "false: lift the block"
    )
    reason: str = Field(description="why (1-500 characters; never a patient's name)")
    actor: str = Field(description="who makes the change")


@op(description="Block an account from the collection rules (or lift the block), then "
    "re-evaluate the practice's collection targets.")
def apply_collection_block(
    context: OpExecutionContext, config: CollectionBlockConfig, warehouse: BalancesWarehouse
) -> None:
    try:
        result = set_block(
            warehouse.layout(), warehouse.practices(), config.practice_id, config.account_id,
            config.blocked, config.reason, config.actor,
        )
    except OverrideError as error:  # BlockError included
        raise Failure(description=str(error)) from None
    state = "blocked from" if result.blocked else "unblocked for"
    context.log.info(f"account {result.practice_id}/{result.account_id} {state} collection "
                     f"rules (block {result.sequence})")
    _warn(context, result.republished)
    for materialization in block_materializations(result, LAUNCHPAD):
        context.log_event(materialization)


@job(description="Block an account from the collection rules, or lift the block "
     "(launchpad config).")
def collection_block_job() -> None:
    apply_collection_block()


# Every launchpad job, for the code location's Definitions.
STAFF_JOBS = [manual_override_job, collection_block_job]
