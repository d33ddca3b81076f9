"""The fleet figure: N small practices synced in ONE Dagster run, against one practice in one
run (the fixed cost every practice paid when each had a run of its own).

    simulator        N practices of `accounts` accounts each, on loopback
    fleet worker     one Dagster run (`dagster.materialize` of every sync asset, in-process
                     executor as the code location has) in a fresh process and
                     BALANCES_HOME: of the first practice's partition, or of the range
                     FIRST...LAST (the tags `--partition-range` and a grouped schedule set)

Each run's wall time covers `materialize` only (Dagster's run set-up, the steps, the
instance's event writes), not the interpreter's imports. Seconds per additional practice
= (wall of N - wall of 1) / (N - 1); the target is 0.5 s on the 2-core machines.
"""

from __future__ import annotations

import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import AS_OF, CUSTOMER_KEY_ENV, DEVELOPER_KEY_ENV, SEED
from benchmarks.measure import _bench_env, _run_worker, _simulator, _warm_up, _write_yaml

TARGET_SECONDS_PER_PRACTICE = 0.5


def practice_ids(count: int) -> list[str]:
    return [f"fleet_{index:03d}" for index in range(1, count + 1)]


def _key_env(practice_id: str) -> str:
    return f"BENCH_{practice_id.upper()}_OD_CUSTOMER_KEY"


def simulator_config(path: Path, ids: list[str], accounts: int, env: dict[str, str]) -> Path:
    """The simulator's config of `ids`, `accounts` accounts each; a fresh key of each
    practice set in `env`."""
    for practice_id in ids:
        env[_key_env(practice_id)] = secrets.token_hex(16)
    return _write_yaml(path, {
        "developer_key_env": DEVELOPER_KEY_ENV,
        "practices": [{"id": pid, "customer_key_env": _key_env(pid), "accounts": accounts,
                       "seed": SEED + index} for index, pid in enumerate(ids)],
    })


def warm_up_and_list(ids: list[str], base_url: str, env: dict[str, str], path: Path) -> Path:
    """Every practice's ledger and aging built before timing; the practices file of `ids`
    (aging-report mode) at `path`, named in `env`."""
    for practice_id in ids:
        _warm_up(base_url, {**env, CUSTOMER_KEY_ENV: env[_key_env(practice_id)]}, AS_OF)
    practices_file = _write_yaml(path, {"practices": [{
        "id": pid, "name": pid, "timezone": "America/Chicago",
        "source": {"type": "opendental", "base_url": base_url,
                   "developer_key_env": DEVELOPER_KEY_ENV,
                   "customer_key_env": _key_env(pid)},
    } for pid in ids]})
    env["BALANCES_PRACTICES_FILE"] = str(practices_file)
    return practices_file


def measure_fleet(count: int, accounts: int, port: int, repeat: int, workdir: Path
                  ) -> dict[str, Any]:
    env, _ = _bench_env(accounts, workdir)
    ids = practice_ids(count)
    sim_config = simulator_config(workdir / "fleet-simulator.yaml", ids, accounts, env)
    one: list[dict[str, Any]] = []
    many: list[dict[str, Any]] = []
    with _simulator(sim_config, port, env, workdir / "fleet-simulator.log") as base_url:
        warm_up_and_list(ids, base_url, env, workdir / "fleet-practices.yaml")
        for run in range(repeat):
            for label, last, into in (("one", ids[0], one), ("many", ids[-1], many)):
                home = workdir / f"fleet-home-{label}-{run}"
                into.append(_run_worker(
                    "fleet", {"first": ids[0], "last": last},
                    {**env, "BALANCES_HOME": str(home)},
                ))
    return {"practices": count, "accounts_per_practice": accounts, "one": one, "many": many}


def summarize_fleet(measured: dict[str, Any]) -> dict[str, Any]:
    count = measured["practices"]
    one = statistics.median(run["wall_seconds"] for run in measured["one"])
    many = statistics.median(run["wall_seconds"] for run in measured["many"])
    per_practice = (many - one) / (count - 1)
    return {
        "practices": count,
        "accounts_per_practice": measured["accounts_per_practice"],
        "one_practice_run_seconds": one,
        "fleet_run_seconds": many,
        "seconds_per_additional_practice": per_practice,
        "target_seconds_per_additional_practice": TARGET_SECONDS_PER_PRACTICE,
        "ratio_to_target": per_practice / TARGET_SECONDS_PER_PRACTICE,
        "ratio_to_one_run_per_practice": many / (one * count),
        "runs": {"one": len(measured["one"]), "many": len(measured["many"])},
    }


def fleet_lines(machine: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    count, accounts = summary["practices"], summary["accounts_per_practice"]
    one, many = summary["one_practice_run_seconds"], summary["fleet_run_seconds"]
    per = summary["seconds_per_additional_practice"]
    return [
        f"fleet: {count} practices x {accounts} accounts in ONE Dagster run on "
        f"{machine['cpu_model']} ({machine['cores_logical']} cores): {many:.2f} s wall; one "
        f"practice in one run {one:.2f} s → {per:.3f} s per additional practice (target ≤ "
        f"{TARGET_SECONDS_PER_PRACTICE} s → ratio {summary['ratio_to_target']:.2f}); "
        f"{count} runs of one practice would take ~{one * count:.1f} s → ratio "
        f"{summary['ratio_to_one_run_per_practice']:.2f}",
    ]


def worker_fleet(params: dict[str, Any]) -> dict[str, Any]:
    """One Dagster run of the first practice, or of the range first...last."""
    from dagster import DagsterInstance, materialize

    from balances_pipeline.config import load_practices
    from balances_pipeline.defs.assets import build_sync_assets
    from balances_pipeline.defs.partitions import (
        RANGE_END_TAG,
        RANGE_START_TAG,
        practice_partitions,
    )
    from balances_pipeline.defs.resources import resources_from
    from balances_pipeline.settings import Settings

    settings = Settings.from_env()
    assets = build_sync_assets(practice_partitions(load_practices(settings.practices_file)))
    first, last = params["first"], params["last"]
    options: dict[str, Any] = (
        {"partition_key": first} if first == last
        else {"tags": {RANGE_START_TAG: first, RANGE_END_TAG: last}}
    )
    with DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = materialize(assets, instance=instance, resources=resources_from(settings),
                             raise_on_error=False, **options)
        wall = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"the fleet run of {first}...{last} failed")
    return {"wall_seconds": wall, "first": first, "last": last}
