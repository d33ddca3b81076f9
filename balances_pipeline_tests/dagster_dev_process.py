"""Test helpers for the operational tests: `dagster dev` in a subprocess, a webhook receiver.

`DagsterDev` runs the real webserver and daemon (`dagster dev -w workspace.yaml`) on a free
loopback port with its own `DAGSTER_HOME`, and always takes its whole process tree down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from dagster_graphql import DagsterGraphQLClient

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION_NAME = "balances_pipeline"  # workspace.yaml
REPOSITORY_NAME = "__repository__"  # what a `Definitions` object is loaded as
SYNC_JOB = "practice_sync_job"

# Faster than production, so that a test sees monitoring and retries within seconds.
TEST_INSTANCE_OVERRIDES: dict[str, Any] = {
    "run_monitoring": {
        "poll_interval_seconds": 5,
        "start_timeout_seconds": 90,
        "cancel_timeout_seconds": 60,
        "free_slots_after_run_end_seconds": 5,
    },
}

LOCATION_LOADED = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation { repositories { name jobs { name } } }
        }
      }
    }
  }
}
"""

RUN_LOGS = """
query RunLogs($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_instance_yaml() -> dict[str, Any]:
    """The repository's dagster.yaml with the test overrides merged in."""
    config = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text(encoding="utf-8")) or {}
    for key, value in TEST_INSTANCE_OVERRIDES.items():
        config[key] = {**(config.get(key) or {}), **value}
    return config


class DagsterDev:
    """`dagster dev` (webserver + daemon + code server) in its own session."""

    def __init__(self, dagster_home: Path, env: dict[str, str], log_path: Path) -> None:
        self.dagster_home = dagster_home
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._log = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare_home(self) -> None:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        (self.dagster_home / "dagster.yaml").write_text(
            yaml.safe_dump(test_instance_yaml(), sort_keys=False), encoding="utf-8"
        )
        # Initialize the instance's storage once, before the webserver, the daemon and the
        # code server open it at the same moment (they race on a fresh DAGSTER_HOME).
        subprocess.run(
            [sys.executable, "-c", "from dagster import DagsterInstance; DagsterInstance.get()"],
            env=self.env, check=True, timeout=120, capture_output=True,
        )

    def start(self, timeout: float = 180) -> DagsterDev:
        self.prepare_home()
        started = time.monotonic()
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(REPOSITORY / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPOSITORY, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            self._wait_until_up(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_until_up(self, deadline: float) -> None:
        while True:
            self._assert_alive()
            try:
                if requests.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev not up in time:\n{self.log_tail()}")
            time.sleep(0.5)
        # The webserver answers before the code location has loaded: wait for the job.
        while True:
            self._assert_alive()
            entries = self.graphql(LOCATION_LOADED)["workspaceOrError"].get("locationEntries", [])
            for entry in entries:
                location = entry.get("locationOrLoadError") or {}
                if location.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location failed to load: {location['message']}")
                for repository in location.get("repositories", []):
                    if SYNC_JOB in {job["name"] for job in repository["jobs"]}:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"code location not loaded in time:\n{self.log_tail()}")
            time.sleep(0.5)

    def _assert_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 5000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def graphql(self, query: str, variables: dict | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def launch_sync(self, practice_id: str) -> str:
        return self.client().submit_job_execution(
            SYNC_JOB,
            repository_location_name=LOCATION_NAME,
            repository_name=REPOSITORY_NAME,
            tags={"dagster/partition": practice_id, "balances/trigger": "test"},
        )

    def run_messages(self, run_id: str) -> list[str]:
        messages: list[str] = []
        cursor = None
        while True:
            page = self.graphql(RUN_LOGS, {"runId": run_id, "after": cursor})["logsForRun"]
            for event in page.get("events", []):
                error = (event.get("error") or {}).get("message")
                messages.append((event.get("message") or "") + (f" {error}" if error else ""))
            cursor = page.get("cursor")
            if not page.get("hasMore"):
                return messages

    def run_worker_pid(self, run_id: str) -> int | None:
        """The pid of the run's worker process, from its "Started process for run" event."""
        for message in self.run_messages(run_id):
            found = re.search(r"Started process for run \(pid: (\d+)\)", message)
            if found:
                return int(found.group(1))
        return None

    def descendants(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Take the whole tree down: SIGTERM the session, then SIGKILL whatever is left."""
        if self.process is None:
            return
        leftovers = self.descendants()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in leftovers:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=10)
        self.process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None


class WebhookReceiver:
    """A loopback HTTP server that records every POSTed body (the alert webhook)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server calls it by this name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.bodies.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/alerts"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            bodies = list(self.bodies)
        return [json.loads(body) for body in bodies]

    def raw(self) -> list[bytes]:
        with self._lock:
            return list(self.bodies)


def dagster_dev_env(keys: dict[str, str], balances_home: Path, practices_file: Path,
                    webhook_url: str, dagster_home: Path) -> dict[str, str]:
    """The environment of a `dagster dev` under test: this one without `BALANCES_AS_OF`
    (schedules use the real date), the practices' keys, and the deployment's settings."""
    return {
        **{k: v for k, v in os.environ.items() if k != "BALANCES_AS_OF"},
        **keys,
        "BALANCES_HOME": str(balances_home),
        "BALANCES_PRACTICES_FILE": str(practices_file),
        "BALANCES_ALERT_WEBHOOK_URL": webhook_url,
        "DAGSTER_HOME": str(dagster_home),
    }
