"""Bad input that used to get through or crash: each is one clear line, and changes nothing.

The practices file (duplicate keys, not UTF-8, nested thousands deep), override CSVs (not
UTF-8, Excel's BOM, an unclosed quote), amounts in non-ASCII digits, reasons and actors
with control or bidirectional characters, unknown practices on the command line, and a
bad practices file under the `dagster` command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from balances_pipeline.config import PracticesFileError, load_practices
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.staff.overrides import OverrideError, build_request, read_import_file
from balances_pipeline.storage.working_db import WorkingDatabase
from balances_pipeline_tests.conftest import practice_entry, sync_practice, write_practices_file
from balances_pipeline_tests.conftest import warehouse_dicts as query

BIN = Path(sys.executable).parent
BALANCES = str(BIN / "balances")
URL = "http://127.0.0.1:9/api/v1"
PRACTICE = "alpha_dental"
HEADER = "practice_id,account_id,patient_portion,insurance_portion,reason\n"


def balances(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BALANCES, *arguments], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("balances: error: ")
    return done.stderr.strip()


def practices_error(path: Path) -> str:
    with pytest.raises(PracticesFileError) as raised:
        load_practices(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def practices_text() -> str:
    return yaml.safe_dump({"practices": [practice_entry("one_practice", URL)]}, sort_keys=False)


# --- The practices file ---


def test_a_key_given_twice_is_an_error_naming_it_and_its_line(tmp_path) -> None:
    path = tmp_path / "practices.yaml"
    text = practices_text().replace("  name: One Practice\n",
                                    "  name: One Practice\n  verify_tls: true\n"
                                    "  verify_tls: false\n")
    path.write_text(text, encoding="utf-8")
    first = text.splitlines().index("  verify_tls: true") + 1
    assert practices_error(path) == (
        f"{path}: line {first + 1}: duplicate key 'verify_tls' (first at line {first})"
    )
    path.write_text(practices_text().replace("  name: One Practice\n",
                                             "  name: One Practice\n  id: other_practice\n"),
                    encoding="utf-8")
    assert "duplicate key 'id' (first at line 2)" in practices_error(path)
    # At any level: in the source mapping, in flow style, at the top.
    path.write_text(practices_text().replace("type: opendental", "type: opendental\n"
                                             "    type: fhir"), encoding="utf-8")
    assert "duplicate key 'type'" in practices_error(path)
    path.write_text("practices: []\nrule_sets: {a: [], a: []}\n", encoding="utf-8")
    assert practices_error(path) == f"{path}: line 2: duplicate key 'a' (first at line 2)"
    path.write_text(practices_text() + "rule_sets: {}\npractices: []\n", encoding="utf-8")
    assert "duplicate key 'practices' (first at line 1)" in practices_error(path)
    # A merge key is not a duplicate: explicit keys override merged ones, as YAML says.
    path.write_text(
        "defaults: &defaults {verify_tls: true}\n" + practices_text().replace(
            "- id: one_practice", "- <<: *defaults\n  verify_tls: false\n  id: one_practice"),
        encoding="utf-8",
    )
    assert "defaults: unknown key" in practices_error(path)  # parsed; then validated


def test_a_practices_file_not_in_utf8_is_one_line(tmp_path) -> None:
    path = tmp_path / "practices.yaml"
    path.write_bytes(practices_text().replace("One Practice", "Clínica Dental")
                     .encode("latin-1"))
    assert practices_error(path) == (
        f"{path}: line 3 is not UTF-8 (byte 0xed); save the file as UTF-8"
    )
    path.write_text(practices_text().replace("One Practice", "One\x07Practice"),
                    encoding="utf-8")
    assert "character U+0007 is not allowed" in practices_error(path)
    path.write_bytes(b"\xef\xbb\xbf" + practices_text().encode("utf-8"))
    assert load_practices(path).ids == ["one_practice"]


def test_a_practices_file_nested_too_deep_is_one_line(tmp_path) -> None:
    path = tmp_path / "practices.yaml"
    for deep in ("[" * 5000 + "]" * 5000,
                 "".join("  " * level + f"k{level}:\n" for level in range(5000))):
        path.write_text(deep, encoding="utf-8")
        assert "nested deeper than 50 levels" in practices_error(path)


def test_the_command_line_reports_a_bad_practices_file_in_one_line(tmp_path) -> None:
    path = tmp_path / "practices.yaml"
    path.write_bytes(practices_text().replace("One Practice", "Clínica").encode("latin-1"))
    env = {"BALANCES_PRACTICES_FILE": str(path), "BALANCES_HOME": str(tmp_path / "home")}
    assert "is not UTF-8" in one_line_error(balances("override", "list", env=env))
    path.write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    assert "nested deeper" in one_line_error(balances("override", "list", env=env))


# --- The dagster command line ---


def _stderr_of_dagster(arguments: list[str], practices_file: Path, tmp_path: Path) -> str:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [str(BIN / "dagster"), *arguments], capture_output=True, text=True, timeout=180,
        cwd=tmp_path,
        env={**os.environ, "BALANCES_PRACTICES_FILE": str(practices_file),
             "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_bad_practices_file_under_dagster_is_short(tmp_path, balances_home) -> None:
    path = write_practices_file(tmp_path / "p.yaml", [practice_entry("x1", URL, colour="red")])
    useful = f"{path}: practices[0].colour: unknown key"
    # Before: the code location loaded the file with nothing around it (what
    # definitions.py did), and `dagster` printed its whole traceback.
    (tmp_path / "old_location.py").write_text(
        "from balances_pipeline.config import load_practices\n"
        "from balances_pipeline.settings import Settings\n"
        "defs = load_practices(Settings.from_env().practices_file)\n", encoding="utf-8")
    materialize = ["asset", "materialize", "--select", "*", "--partition", "x1"]
    before = _stderr_of_dagster([*materialize, "-f", "old_location.py"], path, tmp_path)
    after = _stderr_of_dagster([*materialize, "-m", "balances_pipeline.definitions"], path,
                               tmp_path)
    assert useful in before and "Traceback (most recent call last)" in before
    assert useful in after and "Traceback" not in after
    assert after.strip() == f"Error: {useful}"
    assert len(after.splitlines()) * 20 < len(before.splitlines()), (before, after)
    # Where Dagster shows the load error itself (`dagster dev`, `definitions validate`):
    # the message and the one frame that raised it, no chained error, none of config.py.
    validated = _stderr_of_dagster(
        ["definitions", "validate", "-m", "balances_pipeline.definitions"], path, tmp_path)
    assert useful in validated
    assert "config.py" not in validated and "During handling" not in validated
    assert validated.count('File "') == 1
    assert not (balances_home / "pipeline" / "working.duckdb").exists()


# --- Overrides ---


@pytest.fixture
def practices_file(tmp_path) -> Path:
    return write_practices_file(tmp_path / "practices.yaml", [practice_entry(PRACTICE, URL)])


@pytest.fixture
def practices(practices_file):
    return load_practices(practices_file)


@pytest.fixture
def practices_env(practices_file, tmp_path) -> dict:
    """The environment of a `balances` command with that practices file, nothing synced."""
    return {"BALANCES_PRACTICES_FILE": str(practices_file),
            "BALANCES_HOME": str(tmp_path / "home")}


@pytest.fixture
def synced(simulated):
    sync_practice(simulated.practice(PRACTICE))
    accounts = [row["account_id"] for row in query(
        "SELECT account_id FROM account_balances ORDER BY account_id LIMIT 3")]
    return simulated, accounts


def working_events() -> list[tuple]:
    with WorkingDatabase(layout()).connect() as con:
        return con.execute("SELECT * FROM override_events").fetchall()


def import_cli(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return balances("override", "import", str(path), "--actor", "carol", env=env)


def test_an_override_csv_not_in_utf8_is_one_line(practices_env, tmp_path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + f"{PRACTICE},1000,10.00,,réduction\n").encode("latin-1"))
    assert one_line_error(import_cli(latin, practices_env)) == (
        f"balances: error: {latin}: line 2 is not UTF-8 (byte 0xe9); save the file as CSV UTF-8"
    )


def test_an_unclosed_quote_is_an_error_naming_the_row(practices_env, tmp_path) -> None:
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text(HEADER + f"{PRACTICE},1000,10.00,,plan\n"
                        f"{PRACTICE},1001,11.00,,\"plan B\n", encoding="utf-8")
    assert one_line_error(import_cli(unclosed, practices_env)) == (
        "balances: error: unclosed.csv row 3: a quoted field is not closed"
        " (a '\"' without its closing quote)"
    )
    # A quoted field spanning lines is named by the row it starts on.
    unclosed.write_text(HEADER + f"{PRACTICE},1000,10.00,,\"plan\n\nB\n", encoding="utf-8")
    assert "unclosed.csv row 2: a quoted field is not closed" in one_line_error(
        import_cli(unclosed, practices_env))
    stray = tmp_path / "stray.csv"
    stray.write_text(HEADER + f"{PRACTICE},1000,10.00,,\"plan\"x\n", encoding="utf-8")
    assert "stray.csv row 2: not valid CSV" in one_line_error(import_cli(stray, practices_env))
    assert not (Path(practices_env["BALANCES_HOME"]) / "pipeline" / "working.duckdb").exists()


def test_an_excel_csv_utf8_file_with_a_bom_imports(synced, tmp_path) -> None:
    _, accounts = synced
    excel = tmp_path / "excel.csv"
    excel.write_bytes(("\ufeff" + HEADER + f"{PRACTICE},{accounts[0]},10.00,,réduction\r\n"
                       f"{PRACTICE},{accounts[1]},,0,\"plan, agreed\"\r\n").encode("utf-8"))
    done = import_cli(excel)
    assert done.returncode == 0, done.stderr
    assert sorted((r["account_id"], r["reason"]) for r in query(
        "SELECT account_id, reason FROM active_overrides")) == [
        (accounts[0], "réduction"), (accounts[1], "plan, agreed")]


def test_amounts_are_ascii_digits_only(practices) -> None:
    for amount in ("١٢٣", "１２３", "12.٥", "߁߂", "¹²", "𝟏𝟐"):
        with pytest.raises(OverrideError, match="patient portion: .* is not an amount"):
            build_request(practices, PRACTICE, "1000", amount, None, "r", "a")
        with pytest.raises(OverrideError, match="insurance portion: .* is not an amount"):
            build_request(practices, PRACTICE, "1000", None, amount, "r", "a")
    assert str(build_request(practices, PRACTICE, "1000", "-12.50", "0", "r", "a")
               .patient_portion) == "-12.50"


# C1 CSI, bidirectional override and isolate, line and paragraph separators, zero-width
# space, BEL, DEL, BOM (zero-width no-break space), soft hyphen.
BAD_CHARACTERS = ["\u009b", "\u202e", "\u2066", "\u2028", "\u2029", "\u200b", "\u0007",
                  "\u007f", "\ufeff", "\u00ad", "\t"]


def test_reasons_actors_and_accounts_are_plain_text(practices, tmp_path) -> None:
    for character in BAD_CHARACTERS:
        code = f"U+{ord(character):04X}"
        for reason, actor, account, field in ((f"plan{character}b", "dana", "1000", "reason"),
                                              ("plan", f"da{character}na", "1000", "actor"),
                                              (f"plan{character}", "dana", "1000", "reason"),
                                              ("plan", "dana", f"10{character}00", "account")):
            with pytest.raises(OverrideError) as raised:
                build_request(practices, PRACTICE, account, "1.00", None, reason, actor)
            assert str(raised.value) == (
                f"{field} contains a control or formatting character ({code})")
        csv_file = tmp_path / "reasons.csv"
        csv_file.write_text(HEADER + f"{PRACTICE},1000,1.00,,hold{character}on\n",
                            encoding="utf-8")
        with pytest.raises(OverrideError,
                           match=f"reasons.csv row 2: reason contains .*{re.escape(code)}"):
            read_import_file(csv_file, practices, "carol")
    # Letters, accents, other scripts and emoji are text.
    request = build_request(practices, PRACTICE, "1000", "1.00", None,
                            "plan agréé — 分割払い 👍", "José")
    assert request.reason == "plan agréé — 分割払い 👍" and request.actor == "José"


def test_control_characters_on_the_command_line_change_nothing(synced) -> None:
    _, accounts = synced
    common = ["--practice", PRACTICE, "--account", accounts[0]]
    for reason, actor, field, code in (("a\u202egnp.exe", "dana", "reason", "U+202E"),
                                       ("plan", "dana\u009b31m", "actor", "U+009B")):
        done = balances("override", "set", *common, "--patient-portion", "5.00",
                        "--reason", reason, "--actor", actor)
        assert one_line_error(done) == (
            f"balances: error: {field} contains a control or formatting character ({code})")
        done = balances("block", "set", *common, "--reason", reason, "--actor", actor)
        assert field in one_line_error(done)
    assert working_events() == []
    done = balances("override", "set", *common, "--patient-portion", "١٢٣", "--reason", "r",
                    "--actor", "a")
    assert "patient portion: '١٢٣' is not an amount" in one_line_error(done)


def test_an_unknown_practice_is_named_as_such(synced) -> None:
    _, accounts = synced
    assert one_line_error(balances("account", "show", "--practice", "nope", "--account",
                                   accounts[0])) == "balances: error: unknown practice 'nope'"
    assert one_line_error(balances("override", "list", "--practice", "nope")) == (
        "balances: error: unknown practice 'nope'")
    assert one_line_error(balances("override", "list", "--all", "--practice", "nope")) == (
        "balances: error: unknown practice 'nope'")
    shown = balances("account", "show", "--practice", PRACTICE, "--account", "no_such")
    assert "unknown account 'no_such'" in one_line_error(shown)
    listed = balances("override", "list", "--practice", PRACTICE)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1  # the header
