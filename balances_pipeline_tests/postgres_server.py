"""A real Postgres server for the tests of the layout past one machine (docs/scaling.md).

`PostgresServer` runs the installed Postgres (`initdb`, `pg_ctl`: the Debian package
`postgresql`) in a temporary directory of its own: listening on 127.0.0.1 at a free port,
its unix socket in that directory, fsync off (a test's data need not survive a crash). As
root (CI) the server runs as the `postgres` user, since Postgres refuses to run as root.

The superuser `postgres` is trusted from 127.0.0.1 (the tests' own set-up); every other
role logs in with its password (scram-sha-256), as a production database would ask, so a
test that connects with a role proves its password reached Postgres.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

from balances_pipeline_tests.dagster_dev_process import free_port

SUPERUSER = "postgres"
INSTALL_HINT = (
    "Postgres is not installed (no initdb in `pg_config --bindir`, "
    "/usr/lib/postgresql/*/bin or on PATH): install the `postgresql` package "
    "(apt-get install postgresql) to run the tests that use a Postgres server"
)
START_TIMEOUT_SECONDS = 60


class PostgresNotInstalled(RuntimeError):
    """No Postgres server binaries on this machine (the message is one line)."""


def postgres_bindir() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `pg_isready`."""
    candidates = []
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if done.returncode == 0:
            candidates.append(done.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda path: int(Path(path).parent.name), reverse=True)
    if shutil.which("initdb"):  # a symbolic link into one of those, or a build of one's own
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresNotInstalled(INSTALL_HINT)


def libpq_string(**fields: object) -> str:
    """`key=value ...` with each value quoted as libpq reads it."""
    def quoted(value: object) -> str:
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{text}'"

    return " ".join(f"{key}={quoted(value)}" for key, value in fields.items())


class PostgresServer:
    """A throw-away Postgres: `with PostgresServer() as server: server.create_database(...)`."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port: int | None = None
        self.directory: Path | None = None
        self._owner: pwd.struct_passwd | None = None

    # --- life cycle ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None, "the server is not started"
        return self.directory / "data"

    def start(self) -> PostgresServer:
        self.directory = Path(tempfile.mkdtemp(prefix="balances-pg-"))
        try:
            if os.geteuid() == 0:
                self._owner = pwd.getpwnam(SUPERUSER)
                os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
            self._run("initdb", "-D", str(self.data_dir), "--username", SUPERUSER,
                      "--auth-local", "trust", "--auth-host", "scram-sha-256",
                      "--encoding", "UTF8", "--no-locale", "--no-sync")
            with open(self.data_dir / "pg_hba.conf", "w", encoding="utf-8") as hba:
                hba.write("local all all trust\n"
                          f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
                          "host all all 127.0.0.1/32 scram-sha-256\n")
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_on_a_free_port(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            options = (f"-c listen_addresses={self.host} -c port={self.port}"
                       f" -c unix_socket_directories={self.directory}"
                       " -c fsync=off -c full_page_writes=off -c synchronous_commit=off")
            done = self._run("pg_ctl", "-D", str(self.data_dir), "-l",
                             str(self.directory / "server.log"), "-o", options,
                             "-w", "-t", str(START_TIMEOUT_SECONDS), "start", check=False)
            if done.returncode == 0 and self._ready():
                return
            if attempt == attempts - 1:  # another process took the port in between, or worse
                raise RuntimeError(f"Postgres did not start: {done.stderr.strip()}\n"
                                   f"{self.log_tail()}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            done = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port),
                 "-U", SUPERUSER, "-d", "postgres", "-q"], capture_output=True,
            )
            if done.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.directory is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop",
                      check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace")[-chars:]
        except (OSError, TypeError):
            return ""

    def _run(self, program: str, *arguments: str, check: bool = True):
        command = [str(self.bindir / program), *arguments]
        if self._owner is not None:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.directory,
                              timeout=START_TIMEOUT_SECONDS + 30)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    # --- databases and roles ------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, **fields: object) -> str:
        """A libpq connection string to this server."""
        return libpq_string(host=self.host, port=self.port, dbname=dbname, user=user, **fields)

    def execute(self, statement: sql.Composable | str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE)."""
        connection = psycopg2.connect(self.dsn(dbname))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def create_role(self, name: str, password: str) -> None:
        """A login role that must give its password (scram-sha-256) from 127.0.0.1."""
        self.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)))

    def create_database(self, name: str, owner: str = SUPERUSER) -> str:
        """A new, empty database; its libpq connection string (as `owner`, no password)."""
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(owner)))
        return self.dsn(name, user=owner)
