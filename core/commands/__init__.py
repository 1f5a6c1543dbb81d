"""Subcommands of `python -m core` (and the `loupe` script). May import anything in core/.

Each module has `register(subparsers)` that sets `func` on its parser.

The command names, their JSON keys and exit codes are interfaces others depend on: keep them exactly.
"""
COMMANDS = ("ask", "prepare", "gpus", "serve", "plan")
