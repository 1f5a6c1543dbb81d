"""Serving the API app from a background thread of this process (tests, benchmarks, the dashboard's API)."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import GenerationError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


@dataclass
class RunningServer:
    """A uvicorn server started in a background thread of this process (tests, benchmarks, the dashboard)."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> RunningServer:
    """Serve `app` from a daemon thread; port 0 picks a free port. Returns once it accepts connections."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loupe-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GenerationError(f"The API server did not start on {host}:{port}.")
        time.sleep(0.01)
    bound = sock.getsockname()[1]
    return RunningServer(url=f"http://{'[' + host + ']' if ':' in host else host}:{bound}", server=server, thread=thread)
