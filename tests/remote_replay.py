"""A replay server for the engines' recorded API shapes (tests/fixtures/remote_engines/*.json): a real threaded
HTTP server on 127.0.0.1 that answers as the fixture says, so the remote backend is tested against vLLM's and
LMDeploy's shapes and not only Loupe's own server.

- GET /v1/models: the fixture's `models` (or `models_several` once `several` is set); GET <fixture health path>.
- POST /v1/chat/completions: the question's text picks the scenario: "answer" streams the fixture's answer,
  an error's name sends that error (a status and JSON body, a raw body, or an event stream with its events
  and optional raw tail); "flaky" answers 503 `fail_first` times, then the answer.
- Every chat request body is kept in `requests`, to check what the backend sent.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "remote_engines"


def load_fixture(engine: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{engine}.json").read_text(encoding="utf-8"))


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fixture: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fixture = fixture
        self.several = False
        self.fail_first = 0
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> ReplayServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _event(payload: object) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class QuietHandler(BaseHTTPRequestHandler):
    """A stand-in server's handler: HTTP/1.0 (a body or stream ends when the connection closes, as the engines'
    streams do after [DONE] and as a cut stream does), no request log, `_send` for a whole body."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Handler(QuietHandler):
    server: ReplayServer

    def _stream(self, events: list[object], raw_tail: str = "") -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"".join(_event(e) for e in events) + raw_tail.encode())

    def do_GET(self) -> None:
        fixture = self.server.fixture
        if self.path == "/v1/models":
            listing = fixture["models_several"] if self.server.several else fixture["models"]
            self._send(200, "application/json", json.dumps(listing).encode())
        elif self.path == fixture["health"]["path"]:
            self._send(fixture["health"]["status"], "application/json", fixture["health"]["body"].encode())
        else:
            self._send(404, "application/json", b'{"detail": "Not Found"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            flaky = self.server.fail_first > 0
            self.server.fail_first -= 1 if flaky else 0
        scenario = body["messages"][-1]["content"][-1]["text"]
        fixture = self.server.fixture
        if scenario == "flaky" and flaky:
            self._send(503, "application/json", json.dumps(
                {"object": "error", "message": "Service is overloaded", "type": "ServiceUnavailableError",
                 "param": None, "code": 503}).encode())
        elif scenario in ("answer", "flaky"):
            self._stream(fixture["answer"]["events"])
        else:
            error = fixture["errors"][scenario]
            if "events" in error:
                self._stream(error["events"], error.get("raw_tail", ""))
            elif "raw" in error:
                self._send(error["status"], error["content_type"], error["raw"].encode())
            else:
                self._send(error["status"], error["content_type"], json.dumps(error["body"]).encode())
