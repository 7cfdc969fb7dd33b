"""The ``foresight`` command line: one subcommand per module in ``foresight_lib.commands``.

Each command module has ``register(subparsers)`` that adds its parser and sets
``func`` to a function taking the parsed arguments and returning an exit code.
Errors Foresight raises on purpose are printed as one line, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from foresight_lib.errors import ForesightError

COMMAND_MODULES = [
    "foresight_lib.commands.backtest",
    "foresight_lib.commands.extract",
    "foresight_lib.commands.serve_metrics",
    "foresight_lib.commands.rightsize_replay",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foresight", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ForesightError as exc:
        print(f"foresight {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
