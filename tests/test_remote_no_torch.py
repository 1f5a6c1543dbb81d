"""A remote-only Loupe never imports torch or transformers: a fresh interpreter imports the remote backend,
builds an engine against a stand-in server, asks a question through the shared queue, builds the API app over
it, and still has neither
module loaded (importing them costs 1.7 s and hundreds of MB for nothing when the model runs elsewhere)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = r"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "stand-in", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for chunk in ({"choices": [{"index": 0, "delta": {"content": "ok."}, "finish_reason": "stop"}]},
                      {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}):
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()

import core.backends.openai_remote  # noqa: F401
from core.serving.engine import load_engine
from core.serving.scheduler import close_scheduler_for
from core.settings import load_settings

engine = load_engine(load_settings(backend="openai", openai_base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                                   home=sys.argv[1]))
ticket = engine.submit([], "hi", session="one")
ticket.wait(30)
text = ticket.answer.text if ticket.answer else str(ticket.error)
from core.serving.api import create_app  # the API server over it (python -m core serve), /health included

create_app(engine)
close_scheduler_for(engine)
engine.backend.unload()
loaded = sorted(name for name in ("torch", "transformers", "accelerate") if name in sys.modules)
print(json.dumps({"text": text, "loaded": loaded}))
"""


def test_a_remote_only_loupe_imports_no_torch(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"text": "ok.", "loaded": []}
