"""The bundled EHR simulator's command line: its config file and `serve` in a subprocess."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from balances_pipeline.simulator.cli import ConfigError, bundled_config_path, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 30)


DEMO_ENV = {
    "OD_DEVELOPER_KEY": "demo-dev",
    "BRIGHT_SMILES_OD_CUSTOMER_KEY": "demo-bright",
    "LAKESIDE_FAMILY_OD_CUSTOMER_KEY": "demo-lakeside",
    "HARBOR_DENTAL_OD_CUSTOMER_KEY": "demo-harbor",
}


def test_bundled_demo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)
    developer_key, practices = load_config(bundled_config_path(), AS_OF)
    assert developer_key == "demo-dev"
    assert [(p.id, p.customer_key, p.accounts, p.seed) for p in practices] == [
        ("bright_smiles", "demo-bright", 300, 11),
        ("lakeside_family", "demo-lakeside", 150, 22),
        ("harbor_dental", "demo-harbor", 500, 33),
        ("lakeside_peds", None, 200, 44),  # FHIR only (the bundled demo-only key pair)
    ]
    # The office's time zones of balances_pipeline/demo/practices.yaml; both ShortQuery
    # paths (with and without the Queries permission); one database of several clinics.
    assert [(p.timezone, p.queries_permission, p.clinics) for p in practices] == [
        ("America/Denver", True, 0),
        ("America/New_York", False, 0),
        ("America/Los_Angeles", True, 3),
        ("America/Phoenix", False, 0),
    ]
    monkeypatch.delenv("LAKESIDE_FAMILY_OD_CUSTOMER_KEY")
    with pytest.raises(ConfigError, match="LAKESIDE_FAMILY_OD_CUSTOMER_KEY"):
        load_config(bundled_config_path())


def test_config_rejects_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "v")
    config = tmp_path / "sim.yaml"
    config.write_text(
        "developer_key_env: K\npractices:\n  - {id: a, customer_key_env: K, acounts: 3}\n"
    )
    with pytest.raises(ConfigError, match="acounts"):
        load_config(config)


def test_config_practice_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "v")
    config = tmp_path / "sim.yaml"
    config.write_text(
        "developer_key_env: K\npractices:\n  - {id: a, customer_key_env: K}\n"
        "  - {id: b, customer_key_env: K, timezone: Europe/Paris, queries_permission: true,"
        " clinics: 2}\n"
    )
    _, (a, b) = load_config(config)
    assert (a.timezone, a.queries_permission, a.clinics) == (None, False, 0)
    assert (b.timezone, b.queries_permission, b.clinics) == ("Europe/Paris", True, 2)
    for bad, message in (
        ("timezone: Mars/Olympus", "time zone"),
        ("queries_permission: yes please", "queries_permission"),
        ("clinics: -1", "clinics"),
        ("clinics: two", "clinics"),
    ):
        config.write_text(f"developer_key_env: K\npractices:\n  - id: a\n    customer_key_env: K\n"
                          f"    {bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(config)


def _serve(extra_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "balances_pipeline.simulator.cli", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_command_runs_until_sigterm() -> None:
    process = _serve(DEMO_ENV, "--port", "0", "--today", "2026-11-30")
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        assert line.endswith("/api/v1 (practices: bright_smiles, lakeside_family, harbor_dental)")
        url = urlsplit(line.split()[3])
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request(
            "GET",
            "/api/v1/patients?Limit=2",
            headers={"Authorization": "ODFHIR demo-dev/demo-harbor"},
        )
        response = connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())) == 2
        # The demo config's Queries permission: harbor_dental has it, lakeside_family not.
        for key, status in (("demo-harbor", 200), ("demo-lakeside", 401)):
            connection.request(
                "PUT",
                "/api/v1/queries/ShortQuery",
                body=json.dumps({"SqlCommand": "SELECT NOW() AS now"}),
                headers={"Authorization": f"ODFHIR demo-dev/{key}"},
            )
            response = connection.getresponse()
            assert response.status == status, response.read()
            response.read()
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_command_names_a_missing_variable() -> None:
    env = {k: v for k, v in DEMO_ENV.items() if k != "OD_DEVELOPER_KEY"}
    process = _serve({**env, "OD_DEVELOPER_KEY": ""}, "--port", "0")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert "OD_DEVELOPER_KEY" in stderr and len(stderr.strip().splitlines()) == 1
