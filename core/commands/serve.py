"""`python -m core serve [--host 127.0.0.1] [--port 8000] [--model PATH]`: the OpenAI-compatible API.

Loads the model once, then serves it through its queue until Ctrl-C. Binds to loopback by default: set
`api_token` in the settings before listening on another address.
"""
from __future__ import annotations

import argparse
import socket
import sys

from core.commands.common import quiet_libraries
from core.errors import ConfigError
from core.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None, help="model folder or cached model id (default: settings)")
    parser.set_defaults(func=run)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before loading the model, so a busy port is refused at once with one clear line."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port.") from None
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from core.serving.api import create_app

    sock = _listen(args.host, args.port)
    settings = load_settings(model=args.model)
    if settings.backend != "openai":  # a remote model loads no transformers to quieten
        quiet_libraries()
    from core.serving.engine import load_engine  # torch + transformers: only when serving a local model
    from core.serving.lifecycle import keep_out_of_collections

    engine = load_engine(settings)
    keep_out_of_collections()  # a server for as long as it runs: full collections would stall its answers
    card = engine.describe()
    auth = "bearer token required" if settings.api_token else "no token (set api_token to require one)"
    port = sock.getsockname()[1]
    sys.stderr.write(f"Loupe API: model {card.name} on {card.device}, http://{args.host}:{port}/v1 ({auth})\n")
    uvicorn.Server(uvicorn.Config(create_app(engine), log_level="info")).run(sockets=[sock])
    return 0
