"""`python -m core <command>`: Loupe without the UI. Refusals exit 2 with one `error:` line on stderr."""
from __future__ import annotations

import argparse
import importlib
import sys

from core.commands import COMMANDS
from core.errors import LoupeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see python -m core --help)\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m core", description="Loupe from the command line.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"core.commands.{name}").register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LoupeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
