"""`./dev ui` keeps Dagster's home private, like BALANCES_HOME (fault: it was 0755 with its
files 0644, while run config holds override reasons and run logs hold ids)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from balances_pipeline.demo import ui


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def default_umask():
    previous = os.umask(0o022)  # what most accounts have: files 0644, directories 0755
    yield
    os.umask(previous)


def test_the_default_dagster_home_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_umask
) -> None:
    monkeypatch.setenv("BALANCES_HOME", str(tmp_path / "balances_home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ui.prepare_dagster_home()
    assert home == tmp_path / "balances_home" / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(home)
    assert mode(home) == 0o700
    assert mode(home / "dagster.yaml") == 0o600
    assert (home / "dagster.yaml").read_bytes() == (ui.REPOSITORY / "dagster.yaml").read_bytes()
    assert mode(home.parent) == 0o700  # BALANCES_HOME itself

    # What Dagster then creates there under the default umask is out of others' reach.
    subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance; DagsterInstance.get()"],
        env={**os.environ, "DAGSTER_HOME": str(home)}, check=True, timeout=120,
        capture_output=True,
    )
    assert mode(home) == 0o700
    assert any(path.name != "dagster.yaml" for path in home.iterdir())


def test_an_existing_dagster_home_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_umask
) -> None:
    home = tmp_path / "my_dagster_home"
    home.mkdir(mode=0o755)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.chmod(home / "dagster.yaml", 0o644)
    monkeypatch.setenv("BALANCES_HOME", str(tmp_path / "balances_home"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert ui.prepare_dagster_home() == home
    assert mode(home) == 0o700
    assert mode(home / "dagster.yaml") == 0o600
    assert (home / "dagster.yaml").read_bytes() == (ui.REPOSITORY / "dagster.yaml").read_bytes()
