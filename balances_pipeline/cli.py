"""The `balances` command line. Bad input: a one-line error on stderr, exit 2, nothing changed."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from balances_pipeline.config import PracticesFileError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CommandError(Exception):
    """A one-line, human-readable reason the command cannot proceed."""


def _source_check(args: argparse.Namespace) -> int:
    from balances_pipeline.sources.errors import SourceError
    from balances_pipeline.sources.source_check import check_source

    try:
        report = check_source(args.practice)
    except SourceError as error:
        raise CommandError(str(error)) from None
    for line in report:
        print(line)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from balances_pipeline.demo.run import run_demo

    return run_demo(port=args.port, accounts_scale=args.scale)


def _bench(args: argparse.Namespace) -> int:
    from balances_pipeline.bench import run_benchmark

    return run_benchmark(
        accounts=args.accounts, port=args.port, repeat=args.repeat, json_path=args.json
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balances", description=__doc__.split(".")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="sync the bundled demo practices from the simulator")
    demo.add_argument("--port", type=int, default=9100, help="simulator port (default 9100)")
    demo.add_argument("--scale", type=float, default=1.0, help="multiply demo practice sizes")
    demo.set_defaults(handler=_demo)

    source = commands.add_parser("source", help="source connections")
    source_commands = source.add_subparsers(dest="source_command", required=True)
    check = source_commands.add_parser(
        "check", help="reach the source, authenticate, read one page; changes nothing"
    )
    check.add_argument("--practice", required=True)
    check.set_defaults(handler=_source_check)

    bench = commands.add_parser("bench", help="run the performance benchmark")
    bench.add_argument("--accounts", type=int, default=50_000)
    bench.add_argument("--port", type=int, default=0, help="simulator port (0: any free)")
    bench.add_argument("--repeat", type=int, default=1, help="runs of baseline + sync")
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
    except (CommandError, PracticesFileError) as error:
        print(f"balances: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
