"""The file-drop sensor, evaluated for real: Definitions built from a practices file, the
sensor's own tick evaluation on a DagsterInstance, real files in tmp folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context

from balances_pipeline.definitions import build_definitions
from balances_pipeline.defs.file_drop_sensor import SENSOR_NAME, build_file_drop_sensor
from balances_pipeline.defs.jobs import SYNC_JOB
from balances_pipeline.settings import Settings
from balances_pipeline_tests.file_drop_helpers import (
    HOUR,
    csv_text,
    drop,
    practice_entry,
    practices_file,
)

ROW = "1001,\"Ashgrove, Avery\",$10.00,$0.00,$0.00,$0.00,$10.00,$0.00,$0.00"


@pytest.fixture
def setup(tmp_path: Path):
    sunrise, harbor = tmp_path / "drops" / "sunrise", tmp_path / "drops" / "harbor"
    sunrise.mkdir(parents=True)
    path = tmp_path / "practices.yaml"
    practices_file(path, [
        practice_entry("sunrise", sunrise),
        practice_entry("harbor", harbor),  # its folder is not there (yet)
    ])
    defs = build_definitions(Settings(home=tmp_path / "home", practices_file=path))
    instance = DagsterInstance.ephemeral()
    yield defs, instance, sunrise, harbor
    instance.dispose()


def tick(defs, instance, cursor: str | None):
    sensor_def = defs.resolve_sensor_def(SENSOR_NAME)
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor_def.evaluate_tick(context)


def test_one_run_per_new_settled_file(setup) -> None:
    defs, instance, sunrise, harbor = setup
    first = tick(defs, instance, None)
    assert first.run_requests == []  # no file yet, and harbor's missing folder is no crash
    assert json.loads(first.cursor) == {"harbor": {"missing": True}}

    drop(sunrise, "aging_20250301.csv", csv_text(ROW))
    second = tick(defs, instance, first.cursor)
    [request] = second.run_requests
    assert request.partition_key == "sunrise"
    assert request.run_key.startswith("file_drop:sunrise:")
    assert request.tags["balances/trigger"] == "file_drop"
    assert all("aging" not in value for value in [request.run_key, *request.tags.values()])
    assert json.loads(second.cursor)["sunrise"]["name"] == "aging_20250301.csv"
    assert defs.resolve_sensor_def(SENSOR_NAME).job_name == SYNC_JOB

    again = tick(defs, instance, second.cursor)
    assert again.run_requests == []  # the same file: nothing new

    drop(sunrise, "aging_20250302.csv", csv_text(ROW), age_seconds=5)  # still being written
    unsettled = tick(defs, instance, again.cursor)
    assert unsettled.run_requests == []

    drop(sunrise, "aging_20250302.csv", csv_text(ROW), age_seconds=HOUR / 2)  # now settled
    new = tick(defs, instance, unsettled.cursor)
    [request2] = new.run_requests
    assert request2.partition_key == "sunrise"
    assert request2.run_key != request.run_key


def test_the_first_evaluation_triggers_an_existing_file_once(setup) -> None:
    defs, instance, sunrise, harbor = setup
    harbor.mkdir()
    drop(sunrise, "aging_1.csv", csv_text(ROW))
    drop(harbor, "aging_1.csv", csv_text(ROW))
    first = tick(defs, instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["harbor", "sunrise"]
    # A lost cursor asks again with the same run keys: Dagster launches a run key once.
    assert {r.run_key for r in tick(defs, instance, None).run_requests} == {
        r.run_key for r in first.run_requests}
    assert tick(defs, instance, first.cursor).run_requests == []


def test_same_name_rewritten_is_a_new_file(setup) -> None:
    defs, instance, sunrise, _ = setup
    path = drop(sunrise, "aging_1.csv", csv_text(ROW))
    first = tick(defs, instance, None)
    drop(sunrise, path.name, csv_text(ROW, ROW.replace("1001", "1002")), age_seconds=HOUR / 2)
    [request] = tick(defs, instance, first.cursor).run_requests
    assert request.run_key != first.run_requests[0].run_key


def test_no_sensor_without_file_drop_practices(tmp_path: Path) -> None:
    entry = {"id": "od_only", "name": "Od", "timezone": "UTC",
             "source": {"type": "opendental", "base_url": "http://127.0.0.1:1/api/v1",
                        "developer_key_env": "A_KEY", "customer_key_env": "B_KEY"}}
    practices = practices_file(tmp_path / "p.yaml", [entry])
    assert build_file_drop_sensor(practices, job=None) is None
