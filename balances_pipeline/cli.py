"""The `balances` command line. Bad input: a one-line error on stderr, exit 2, nothing changed."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from balances_pipeline.config import PracticesFileError
from balances_pipeline.settings import SettingsError
from balances_pipeline.staff.account_detail import DetailError
from balances_pipeline.staff.overrides import OverrideError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CommandError(Exception):
    """A one-line, human-readable reason the command cannot proceed."""


def _warehouse():
    """The same warehouse resource the Dagster code location uses, from the environment."""
    from balances_pipeline.defs.resources import resources_from
    from balances_pipeline.settings import Settings

    return resources_from(Settings.from_env())["warehouse"]


def _source_check(args: argparse.Namespace) -> int:
    from balances_pipeline.sources.check import check_source
    from balances_pipeline.sources.errors import SourceError

    warehouse = _warehouse()
    try:
        report = check_source(warehouse.practices(), args.practice)
    except SourceError as error:
        raise CommandError(str(error)) from None
    for line in report:
        print(line)
    return 0


def _practices_and_layout():
    warehouse = _warehouse()
    return warehouse.practices(), warehouse.layout()


class DagsterReport:
    """Reports staff changes to the Dagster instance of $DAGSTER_HOME: a runless
    AssetMaterialization per republished asset, in the practice's partition, so the UI
    shows that the practice's views changed (ids and counts only). Without DAGSTER_HOME,
    nothing is reported."""

    def __init__(self, dagster_home: str | None) -> None:
        self._instance = None
        if not dagster_home:
            return
        from dagster import DagsterError, DagsterInstance

        try:  # before the change: a bad DAGSTER_HOME stops the command, nothing changed
            self._instance = DagsterInstance.get()
        except DagsterError as error:
            raise CommandError(str(error).splitlines()[0]) from None

    def send(self, materializations: list) -> None:
        if self._instance is None or not materializations:
            return
        try:
            for materialization in materializations:
                self._instance.report_runless_asset_event(materialization)
        except Exception as error:  # the change is made: say so, and that Dagster missed it
            print(f"balances: warning: the change is made but was not reported to Dagster "
                  f"({type(error).__name__}: {error})", file=sys.stderr)
            return
        by_practice: dict[str, list[str]] = {}
        for materialization in materializations:
            by_practice.setdefault(materialization.partition, []).append(
                materialization.asset_key.to_user_string()
            )
        for practice_id, assets in by_practice.items():
            print(f"reported to Dagster for {practice_id}: {', '.join(assets)}")

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()


def _staff_objects():
    """What a staff change needs: the practices, the layout, and where to report it."""
    from balances_pipeline.settings import Settings

    practices, home = _practices_and_layout()
    _complete_pending(practices, home)
    dagster_home = Settings.from_env().dagster_home
    return practices, home, DagsterReport(str(dagster_home) if dagster_home else None)


def _targets_note(result) -> str:
    done = result.republished
    return (done.warning if done is not None and done.warning
            else "collection targets are re-evaluated")


def _override_set(args: argparse.Namespace) -> int:
    from balances_pipeline.defs.staff_jobs import CLI, override_materializations
    from balances_pipeline.staff.overrides import build_request, set_overrides

    practices, home, report = _staff_objects()
    try:
        request = build_request(
            practices, args.practice, args.account, args.patient_portion,
            args.insurance_portion, args.reason, args.actor,
        )
        [result] = set_overrides(home, practices, [request])
        replaced = result.events.count("replaced")
        print(
            f"override {result.override_id} set on {result.practice_id}/{result.account_id}"
            + (f" (replaced {replaced} earlier)" if replaced else "")
            + f"; outstanding_balances and aging_summary are updated; {_targets_note(result)}"
        )
        report.send(override_materializations([result], "override_set", CLI))
    finally:
        report.close()
    return 0


def _override_clear(args: argparse.Namespace) -> int:
    from balances_pipeline.defs.staff_jobs import CLI, override_materializations
    from balances_pipeline.staff.overrides import clear_override

    practices, home, report = _staff_objects()
    try:
        result = clear_override(
            home, practices, args.practice, args.account, args.reason, args.actor
        )
        print(
            f"override cleared on {result.practice_id}/{result.account_id}; "
            f"outstanding_balances and aging_summary are updated; {_targets_note(result)}"
        )
        report.send(override_materializations([result], "override_clear", CLI))
    finally:
        report.close()
    return 0


def _override_import(args: argparse.Namespace) -> int:
    from balances_pipeline.defs.staff_jobs import CLI, override_materializations
    from balances_pipeline.staff.overrides import read_import_file, set_overrides

    practices, home, report = _staff_objects()
    try:
        requests, where = read_import_file(Path(args.file), practices, args.actor)
        results = set_overrides(home, practices, requests, where=where)
        touched = sorted({result.practice_id for result in results})
        print(f"imported {len(results)} overrides; updated practices: {', '.join(touched)}")
        warnings = {r.republished.warning for r in results if r.republished and
                    r.republished.warning}
        for warning in sorted(warnings):
            print(f"balances: warning: {warning}", file=sys.stderr)
        report.send(override_materializations(results, "override_import", CLI))
    finally:
        report.close()
    return 0


def _complete_pending(practices, home, *, reading: bool = False) -> None:
    """Publish first what an interrupted staff command committed (of any practice), so
    every command starts from (and shows) every committed change. A read command run by
    a user who may not write the working database just reads."""
    from balances_pipeline.pipeline.recompute import complete_pending_republishes

    try:
        completed = complete_pending_republishes(home, practices)
    except PermissionError:
        if not reading:
            raise
        return
    if completed:
        print("balances: note: published the staff changes an interrupted command had"
              f" committed ({', '.join(completed)})", file=sys.stderr)


def _published_objects(practice_id: str | None):
    """What a read command needs, once the practice (None: every practice) is known and
    any staff change an interrupted command committed is published."""
    from balances_pipeline.staff.account_detail import known_practice

    practices, home = _practices_and_layout()
    known_practice(practices, practice_id)
    _complete_pending(practices, home, reading=True)
    return practices, home


def _override_list(args: argparse.Namespace) -> int:
    from balances_pipeline.staff.account_detail import override_list

    practices, home = _published_objects(args.practice)
    for line in override_list(home, args.practice, args.all, practices):
        print(line)
    return 0


def _account_show(args: argparse.Namespace) -> int:
    from balances_pipeline.staff.account_detail import account_detail

    practices, home = _published_objects(args.practice)
    for line in account_detail(home, args.practice, args.account, practices):
        print(line)
    return 0


def _warehouse_rebuild(args: argparse.Namespace) -> int:
    from balances_pipeline.pipeline.recompute import rebuild_published

    practices, home = _practices_and_layout()
    rebuilt = rebuild_published(home, practices)
    print(f"rebuilt warehouse.duckdb and republished {len(rebuilt)} practice(s)")
    return 0


def _warehouse_maintain(args: argparse.Namespace) -> int:
    from balances_pipeline.storage.lake_maintenance import maintain

    _, home = _practices_and_layout()
    if home.lake is None:
        raise CommandError("the warehouse is not on DuckLake (BALANCES_WAREHOUSE_CATALOG):"
                           " nothing to maintain")
    if args.keep_days < 1:
        raise CommandError(f"--keep-days must be at least 1, got {args.keep_days}")
    result = maintain(home, args.keep_days)
    print(f"lake maintained: live files {result.live_files_before} -> "
          f"{result.live_files_after}, snapshots {result.snapshots_before} -> "
          f"{result.snapshots_after}")
    return 0


def _block(args: argparse.Namespace) -> int:
    from balances_pipeline.defs.staff_jobs import CLI, block_materializations
    from balances_pipeline.staff.blocks import set_block

    practices, home, report = _staff_objects()
    try:
        blocked = args.block_command == "set"
        result = set_block(home, practices, args.practice, args.account, blocked, args.reason,
                           args.actor)
        state = "blocked from" if blocked else "unblocked for"
        print(f"account {result.practice_id}/{result.account_id} {state} collection rules; "
              + (result.warning or "collection targets are re-evaluated"))
        report.send(block_materializations(result, CLI))
    finally:
        report.close()
    return 0


def _sync_accept_drop(args: argparse.Namespace) -> int:
    from balances_pipeline.pipeline.collapse_guard import DropAcceptanceError, accept_drop

    practices, home = _practices_and_layout()
    try:
        acceptance = accept_drop(home, practices, args.practice, args.reason, args.actor)
    except DropAcceptanceError as error:
        raise CommandError(str(error)) from None
    print(f"drop accepted for {acceptance.practice_id} by {acceptance.actor}"
          f" (acceptance {acceptance.acceptance_id}); the practice's next sync publishes"
          " its accounts however few, once: sync it now")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from balances_pipeline.demo.run import run_demo

    return run_demo(port=args.port, accounts_scale=args.scale)


def _bench(args: argparse.Namespace) -> int:
    # The benchmark is not part of the installed product: it runs from a clone.
    clone = Path(__file__).resolve().parents[1]
    if not (clone / "benchmarks" / "bench.py").is_file():
        raise CommandError("balances bench runs from a clone of the repository (benchmarks/)")
    if str(clone) not in sys.path:
        sys.path.insert(0, str(clone))
    from benchmarks.bench import DEFAULT_ACCOUNTS, run_benchmark

    return run_benchmark(
        accounts=args.accounts or list(DEFAULT_ACCOUNTS), port=args.port, repeat=args.repeat,
        json_path=args.json, mode=args.mode, ledger_rows=args.ledger_rows,
        changes=args.changes, fleet=args.fleet, fleet_accounts=args.fleet_accounts,
    )


def _sizes(text: str) -> list[int]:
    """`N` or `N,N,N` (whole numbers; the benchmark checks their ranges)."""
    parts = text.split(",")
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected N or N,N,N (whole numbers), not {text!r}")
    return [int(part) for part in parts]


def _account_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--practice", required=True)
    parser.add_argument("--account", required=True)


def _who_and_why(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (never a patient's name)")
    parser.add_argument("--actor", required=True, help="who makes the change")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balances", description=__doc__.split(".")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="sync the bundled demo practices from the simulator")
    demo.add_argument("--port", type=int, default=9100, help="simulator port (default 9100)")
    demo.add_argument("--scale", type=float, default=1.0, help="multiply demo practice sizes")
    demo.set_defaults(handler=_demo)

    override = commands.add_parser("override", help="manual overrides of an account's portions")
    override_commands = override.add_subparsers(dest="override_command", required=True)
    set_ = override_commands.add_parser("set", help="set (or replace) an account's override")
    _account_arguments(set_)
    set_.add_argument("--patient-portion", metavar="AMOUNT")
    set_.add_argument("--insurance-portion", metavar="AMOUNT")
    _who_and_why(set_)
    set_.set_defaults(handler=_override_set)
    clear = override_commands.add_parser("clear", help="clear an account's override")
    _account_arguments(clear)
    _who_and_why(clear)
    clear.set_defaults(handler=_override_clear)
    list_ = override_commands.add_parser("list", help="active overrides (--all: history)")
    list_.add_argument("--practice")
    list_.add_argument("--all", action="store_true", help="every event, not only active ones")
    list_.set_defaults(handler=_override_list)
    import_ = override_commands.add_parser("import", help="import overrides from a CSV file")
    import_.add_argument("file", metavar="FILE.csv")
    import_.add_argument("--actor", required=True)
    import_.set_defaults(handler=_override_import)

    block = commands.add_parser("block", help="exclude an account from all collection rules")
    block_commands = block.add_subparsers(dest="block_command", required=True)
    for name, help_text in (("set", "block the account"), ("clear", "lift the block")):
        command = block_commands.add_parser(name, help=help_text)
        _account_arguments(command)
        _who_and_why(command)
        command.set_defaults(handler=_block)

    account = commands.add_parser("account", help="accounts")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    show = account_commands.add_parser("show", help="the account detail")
    _account_arguments(show)
    show.set_defaults(handler=_account_show)

    warehouse = commands.add_parser("warehouse", help="the published warehouse")
    warehouse_commands = warehouse.add_subparsers(dest="warehouse_command", required=True)
    rebuild = warehouse_commands.add_parser(
        "rebuild", help="rebuild warehouse.duckdb and republish every practice's snapshot"
    )
    rebuild.set_defaults(handler=_warehouse_rebuild)
    maintain = warehouse_commands.add_parser(
        "maintain", help="DuckLake layout: compact files, expire old snapshots, clean up"
    )
    maintain.add_argument("--keep-days", type=int, default=90,
                          help="snapshots kept for time travel (default 90 days)")
    maintain.set_defaults(handler=_warehouse_maintain)

    source = commands.add_parser("source", help="source connections")
    source_commands = source.add_subparsers(dest="source_command", required=True)
    check = source_commands.add_parser(
        "check", help="reach the source, authenticate, read one page; changes nothing"
    )
    check.add_argument("--practice", required=True)
    check.set_defaults(handler=_source_check)

    sync = commands.add_parser("sync", help="practice syncs")
    sync_commands = sync.add_subparsers(dest="sync_command", required=True)
    accept_drop = sync_commands.add_parser(
        "accept-drop",
        help="let the practice's next sync publish far fewer accounts than the last (once)",
    )
    accept_drop.add_argument("--practice", required=True)
    _who_and_why(accept_drop)
    accept_drop.set_defaults(handler=_sync_accept_drop)

    bench = commands.add_parser("bench", help="run the performance benchmark")
    bench.add_argument("--accounts", type=_sizes, default=None, metavar="N[,N,N]",
                       help="practice size(s) in accounts (default 1000,5000,20000)")
    bench.add_argument("--port", type=int, default=0, help="simulator port (0: any free)")
    bench.add_argument("--repeat", type=int, default=1, help="runs of baseline + sync")
    bench.add_argument("--mode", choices=("aging_report", "ledger", "both"), default="both",
                       help="source mode(s) to measure (default both)")
    bench.add_argument("--ledger-rows", type=_sizes, default=None, metavar="N[,N,N]",
                       help="ledger rows for the aging transform vs its baseline, one or one "
                            "per size (default 100000,300000,1000000)")
    bench.add_argument("--changes", type=int, default=20, metavar="K",
                       help="rows added between the full and the incremental ledger sync")
    bench.add_argument("--fleet", type=_sizes, default=None, metavar="N[,N,N]",
                       help="practices synced in one Dagster run for the fleet figure, one or "
                            "one per size (0: skip; default 5,10,20)")
    bench.add_argument("--fleet-accounts", type=int, default=10, metavar="A",
                       help="accounts of each fleet practice")
    bench.add_argument("--json", default=None, metavar="PATH",
                       help="also write the figures as JSON to PATH")
    bench.set_defaults(handler=_bench)

    from balances_pipeline.simulator.cli import register

    register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Errors reach the user once, as the one-line message below; `balances demo` adds its own
    # progress handler.
    logging.getLogger("balances_pipeline").addHandler(logging.NullHandler())
    handler: Callable[[argparse.Namespace], int] = getattr(args, "handler", None) or args.func
    try:
        return handler(args)
    except (CommandError, PracticesFileError, SettingsError, OverrideError, DetailError) as error:
        print(f"balances: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
