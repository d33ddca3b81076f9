"""The practices file: strict validation with one-line errors naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from balances_pipeline.config import DEMO_PRACTICES_FILE, PracticesFileError, load_practices
from balances_pipeline_tests.conftest import practice_entry, write_practices_file

URL = "http://127.0.0.1:9/api/v1"


def error_for(tmp_path: Path, entries: list[dict] | None = None, document: object = None) -> str:
    path = tmp_path / "practices.yaml"
    if document is not None:
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
    else:
        write_practices_file(path, entries or [])
    with pytest.raises(PracticesFileError) as raised:
        load_practices(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_demo_practices_cover_three_frequencies_and_time_zones() -> None:
    practices = load_practices(DEMO_PRACTICES_FILE).practices
    assert len(practices) >= 3
    assert {p.sync.frequency for p in practices} == {"daily", "hourly", "cron"}
    assert len({p.timezone for p in practices}) == len(practices)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "blue"}, "practices[0].colour: unknown key"),
        ({"sync": {"frequenc": "daily"}}, "practices[0].sync.frequenc: unknown key"),
        ({"sync": {"frequency": "weekly"}}, "practices[0].sync.frequency: Input should be"),
        ({"sync": {"at": "25:00"}}, "practices[0].sync.at: must be HH:MM"),
        ({"sync": {"frequency": "cron"}}, "needs a cron expression"),
        ({"sync": {"frequency": "cron", "cron": "every day"}}, "5-field cron expression"),
        ({"timezone": "Mars/Olympus"}, "practices[0].timezone: unknown IANA time zone"),
        ({"id": "Bad-Id"}, "practices[0].id: String should match pattern"),
        ({"source": {"page_size": 0}}, "practices[0].source.page_size:"),
        ({"source": {"pagesize": 10}}, "practices[0].source.pagesize: unknown key"),
        ({"max_rejected_fraction": 2}, "practices[0].max_rejected_fraction:"),
    ],
)
def test_bad_practice_is_one_line_naming_file_and_key(tmp_path, change, expected) -> None:
    entry = practice_entry("one_practice", URL)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            entry[key] = {**entry[key], **value}
        else:
            entry[key] = value
    assert expected in error_for(tmp_path, [entry])


def test_a_literal_secret_is_an_error(tmp_path) -> None:
    entry = practice_entry("one_practice", URL, source={"customer_key_env": "sk_live_9f8a7b6c"})
    message = error_for(tmp_path, [entry])
    assert "practices[0].source.customer_key_env: String should match pattern" in message


def test_duplicate_ids_and_empty_files_are_errors(tmp_path) -> None:
    twice = [practice_entry("same_id", URL), practice_entry("same_id", URL)]
    assert "duplicate practice id 'same_id'" in error_for(tmp_path, twice)
    assert "practices: Field required" in error_for(tmp_path, document={"rule_sets": {}})
    assert "expected a mapping" in error_for(tmp_path, document=["a"])


def test_unreadable_or_invalid_yaml(tmp_path) -> None:
    with pytest.raises(PracticesFileError, match="cannot read practices file"):
        load_practices(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("practices: [\n  - id: x\n   name", encoding="utf-8")
    with pytest.raises(PracticesFileError, match="not valid YAML at line"):
        load_practices(bad)


def test_defaults_and_rule_sets(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "practices": [practice_entry("one_practice", URL, collection_rules="standard")],
        "rule_sets": {"standard": [{"id": "remind", "action": "reminder",
                                    "min_patient_balance": "25.00", "min_days_outstanding": 31}]},
    }), encoding="utf-8")
    practices = load_practices(path)
    practice = practices.practice("one_practice")
    assert practice.sync.frequency == "daily" and practice.sync.at == "05:00"
    assert practice.source.page_size == 100 and practice.source.max_retries == 5
    assert practice.max_rejected_fraction == 0.01 and practice.history_days == 400
    assert [rule.id for rule in practices.rules_for(practice)] == ["remind"]


def test_a_bad_file_stops_the_code_location_before_any_sync(tmp_path, balances_home) -> None:
    path = write_practices_file(tmp_path / "p.yaml", [practice_entry("x1", URL, colour="red")])
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
         "balances_pipeline.definitions", "--select", "*", "--partition", "x1"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "BALANCES_PRACTICES_FILE": str(path)},
    )
    assert done.returncode != 0
    assert f"{path}: practices[0].colour: unknown key" in done.stderr
    assert not (balances_home / "pipeline" / "working.duckdb").exists()
