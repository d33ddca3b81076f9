"""`balances simulator serve`: run the bundled EHR simulator until SIGINT/SIGTERM; and
`balances simulator write-aging-file`: an aging export as a PMS without an API drops it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from balances_pipeline.simulator.fhir_auth import demo_public_key_pem
from balances_pipeline.simulator.server import SimPractice, SimulatorServer

DEFAULT_PORT = 9100
FHIR_INT_KEYS = (
    "fhir_token_lifetime_seconds",
    "fhir_bulk_polls",
    "fhir_bulk_retry_after_seconds",
    "fhir_bulk_file_accounts",
)
FHIR_KEYS = {
    "fhir_client_id",
    "fhir_public_key_pem",
    "fhir_public_key_file",
    "fhir_demo_key",
    "fhir_bearer_token_env",
    "fhir_group_id",
    *FHIR_INT_KEYS,
}
CONFIG_KEYS = {"developer_key_env", "practices"}
PRACTICE_KEYS = {
    "id",
    "customer_key_env",
    "accounts",
    "seed",
    "dataset",
    "timezone",
    "queries_permission",
    "clinics",
    *FHIR_KEYS,
}


class ConfigError(Exception):
    pass


def bundled_config_path() -> Path:
    return Path(str(resources.files("balances_pipeline.simulator") / "demo.yaml"))


def register(subparsers: Any) -> None:
    """Add `simulator serve` to the `balances` command's subparsers."""
    simulator = subparsers.add_parser("simulator", help="the bundled EHR simulator")
    commands = simulator.add_subparsers(dest="simulator_command", metavar="COMMAND")
    commands.required = True
    serve = commands.add_parser(
        "serve", help="serve simulated Open Dental practices over HTTP on loopback"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="simulator YAML (default: the bundled demo practices)",
    )
    serve.add_argument("--today", type=_parse_day, default=None, help="yyyy-mm-dd")
    serve.set_defaults(func=run_serve)

    advance = commands.add_parser("advance", help="move a running simulator's clock")
    _control_arguments(advance)
    advance.add_argument("--days", type=float, required=True)
    advance.set_defaults(func=run_control)
    row = commands.add_parser(
        "row", help="add, edit or delete a ledger row of a running simulator"
    )
    row.add_argument("action", choices=("add", "edit", "delete"))
    _control_arguments(row)
    row.add_argument("--table", required=True,
                     choices=("patients", "procedurelogs", "claimprocs", "paysplits",
                              "adjustments"))
    row.add_argument("--key", type=int, help="the row's key (edit, delete)")
    row.add_argument("--fields", default="{}",
                     help='JSON object of Open Dental fields, e.g. \'{"SplitAmt": 50.00}\'')
    row.set_defaults(func=run_control)
    aging_file = commands.add_parser(
        "write-aging-file",
        help="write a practice's aging report as a CSV export into a folder (file drops)",
    )
    aging_file.add_argument("--practice", required=True)
    aging_file.add_argument("--folder", type=Path, required=True)
    aging_file.add_argument("--as-of", dest="as_of", type=_parse_day, default=None,
                            help="yyyy-mm-dd (default: the practice's today)")
    aging_file.add_argument("--config", type=Path, default=None,
                            help="simulator YAML (default: the bundled demo practices)")
    aging_file.add_argument("--name", default=None,
                            help="file name (default: aging_YYYYMMDD.csv)")
    aging_file.add_argument("--encoding", default="cp1252")
    aging_file.add_argument("--write-seconds", dest="write_seconds", type=_non_negative,
                            default=0.0, help="spread the write over this many seconds")
    aging_file.add_argument("--incomplete", action="store_true",
                            help="stop halfway, leaving a partial file (to test settling)")
    aging_file.set_defaults(func=run_write_aging_file)


def _control_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                        help="the running simulator (default: %(default)s)")
    parser.add_argument("--practice", required=True)


def run_control(args: argparse.Namespace) -> int:
    """Change a running simulator through its loopback control paths; print the answer."""
    import requests

    base = f"{args.url.rstrip('/')}/_sim"
    if args.simulator_command == "advance":
        method, path = "POST", f"clock/{args.practice}"
        body = json.dumps({"advance_days": args.days})
    else:
        try:
            fields = json.loads(args.fields, parse_float=Decimal)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            print("error: --fields is not a JSON object", file=sys.stderr)
            return 2
        body = args.fields  # sent as written: amounts stay exact JSON numbers
        if args.action != "add" and args.key is None:
            print(f"error: {args.action} needs --key", file=sys.stderr)
            return 2
        path = f"rows/{args.practice}/{args.table}"
        method = {"add": "POST", "edit": "PATCH", "delete": "DELETE"}[args.action]
        if args.action != "add":
            path += f"/{args.key}"
    try:
        response = requests.request(
            method, f"{base}/{path}", data=body.encode(), timeout=30
        )
    except requests.RequestException as error:
        print(f"error: simulator not reachable at {args.url} ({type(error).__name__})",
              file=sys.stderr)
        return 2
    if response.status_code >= 300:
        print(f"error: simulator answered HTTP {response.status_code}: {response.text[:200]}",
              file=sys.stderr)
        return 2
    print(response.text)
    return 0


def run_write_aging_file(args: argparse.Namespace) -> int:
    """`balances simulator write-aging-file`: no server, no keys needed."""
    from balances_pipeline.simulator.aging_files import (
        AgingFileError,
        practice_aging_rows,
        write_aging_file,
    )

    config = args.config or bundled_config_path()
    try:
        _, practices = load_config(Path(config), need_keys=False)
        by_id = {p.id: p for p in practices}
        if args.practice not in by_id:
            raise ConfigError(f"unknown practice {args.practice!r} in {config} "
                              f"(one of {', '.join(by_id)})")
        practice = by_id[args.practice]
        if not args.folder.is_dir():
            raise AgingFileError(f"folder {args.folder} does not exist or is not a folder")
        as_of = args.as_of or datetime.now(
            ZoneInfo(practice.timezone) if practice.timezone else None).date()
        rows = practice_aging_rows(practice, as_of)
        path = write_aging_file(
            rows, args.folder, as_of, name=args.name, encoding=args.encoding,
            write_seconds=args.write_seconds, complete=not args.incomplete,
        )
    except (ConfigError, AgingFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write into {args.folder} ({error.strerror or error})",
              file=sys.stderr)
        return 2
    state = "partial" if args.incomplete else "complete"
    print(f"wrote {path} ({len(rows)} guarantors, as of {as_of.isoformat()}, {state})")
    return 0


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0: {text!r}")
    return value


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a yyyy-mm-dd date: {text!r}") from None


def _env(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} must name an environment variable")
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set ({where})")
    return value


def _practice(entry: Any, index: int, base: Path, today: date | None,
              need_keys: bool = True) -> SimPractice:
    where = f"practices[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(entry) - PRACTICE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(entry.get("id"), str):
        raise ConfigError(f"{where}: id is required")
    where = f"practice {entry['id']}"
    dataset = entry.get("dataset")
    for key in ("accounts", "seed", "clinics"):
        if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], int)):
            raise ConfigError(f"{where}: {key} must be an integer")
    if entry.get("clinics", 0) < 0:
        raise ConfigError(f"{where}: clinics must not be negative")
    if "queries_permission" in entry and not isinstance(entry["queries_permission"], bool):
        raise ConfigError(f"{where}: queries_permission must be true or false")
    timezone = entry.get("timezone")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ValueError, TypeError, ZoneInfoNotFoundError):
            raise ConfigError(f"{where}: unknown time zone {timezone!r}") from None
    fhir = _fhir_settings(entry, where, base, need_keys)
    if "customer_key_env" not in entry and not (fhir.get("fhir_client_id")
                                                or fhir.get("fhir_bearer_token")):
        raise ConfigError(f"{where}: customer_key_env is required (or FHIR settings)")
    customer_key = None if need_keys else f"unused-{entry['id']}"
    if "customer_key_env" in entry and need_keys:
        customer_key = _env(entry["customer_key_env"], f"{where}, customer_key_env")
    return SimPractice(
        id=entry["id"],
        customer_key=customer_key,
        accounts=entry.get("accounts", 200),
        seed=entry.get("seed", 1),
        today=today,
        dataset=(base / dataset) if dataset else None,
        timezone=timezone,
        queries_permission=entry.get("queries_permission", False),
        clinics=entry.get("clinics", 0),
        **fhir,
    )


def _fhir_settings(entry: dict[str, Any], where: str, base: Path, need_keys: bool = True
                   ) -> dict[str, Any]:
    """A practice's FHIR settings: the client id, its public key (inline PEM, a PEM file,
    or `fhir_demo_key: true` for the bundled demo-only key pair), a static bearer token
    from an environment variable, and the Bulk Data knobs."""
    settings: dict[str, Any] = {}
    for key in FHIR_INT_KEYS:
        if key in entry:
            if isinstance(entry[key], bool) or not isinstance(entry[key], int):
                raise ConfigError(f"{where}: {key} must be an integer")
            settings[key] = entry[key]
    for key in ("fhir_client_id", "fhir_group_id"):
        if key in entry:
            if not isinstance(entry[key], str) or not entry[key]:
                raise ConfigError(f"{where}: {key} must be a non-empty string")
            settings[key] = entry[key]
    sources = [k for k in ("fhir_public_key_pem", "fhir_public_key_file", "fhir_demo_key")
               if entry.get(k)]
    if len(sources) > 1:
        raise ConfigError(f"{where}: give one of {', '.join(sources)}")
    if "fhir_demo_key" in entry and not isinstance(entry["fhir_demo_key"], bool):
        raise ConfigError(f"{where}: fhir_demo_key must be true or false")
    if entry.get("fhir_demo_key"):
        settings["fhir_public_key_pem"] = demo_public_key_pem()
    elif entry.get("fhir_public_key_file"):
        try:
            settings["fhir_public_key_pem"] = (base / entry["fhir_public_key_file"]).read_text()
        except (OSError, TypeError) as error:
            raise ConfigError(f"{where}: cannot read fhir_public_key_file: {error}") from None
    elif entry.get("fhir_public_key_pem"):
        settings["fhir_public_key_pem"] = str(entry["fhir_public_key_pem"])
    if settings.get("fhir_client_id") and "fhir_public_key_pem" not in settings:
        raise ConfigError(f"{where}: fhir_client_id needs fhir_public_key_pem, "
                          "fhir_public_key_file or fhir_demo_key")
    if "fhir_bearer_token_env" in entry and need_keys:
        settings["fhir_bearer_token"] = _env(entry["fhir_bearer_token_env"],
                                             f"{where}, fhir_bearer_token_env")
    return settings


def load_config(path: Path, today: date | None = None, need_keys: bool = True
                ) -> tuple[str, list[SimPractice]]:
    """Read a simulator YAML; keys come from the environment variables it names (not read
    with `need_keys=False`, for what serves no API: aging files)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping")
    unknown = sorted(set(document) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    entries = document.get("practices")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: practices must be a non-empty list")
    developer_key = (_env(document.get("developer_key_env"), f"{path}, developer_key_env")
                     if need_keys else "")
    practices = [_practice(e, i, path.parent, today, need_keys) for i, e in enumerate(entries)]
    return developer_key, practices


def run_serve(args: argparse.Namespace) -> int:
    config = args.config or bundled_config_path()
    try:
        developer_key, practices = load_config(Path(config), args.today)
        server = SimulatorServer(practices, developer_key, host=args.host, port=args.port)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.start()
        ids = ", ".join(p.id for p in practices if p.customer_key is not None)
        print(f"simulator listening on {server.url} (practices: {ids})", flush=True)
        for p in practices:
            if p.fhir_client_id or p.fhir_bearer_token:
                print(f"FHIR {p.id}: {server.fhir_url(p.id)} (r5: {server.fhir_url(p.id, 'r5')})",
                      flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balances")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulator", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
