"""A remote engine gets several requests at once through the shared queue (it batches them), and one hung
request holds no one else's question. Proven without timing: the stand-in server answers the "together"
questions only once all of them have arrived (a barrier), which a one-at-a-time queue can never reach."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.serving.engine import Engine, load_engine
from core.serving.scheduler import close_scheduler_for
from core.settings import load_settings
from core.statuses import RequestStatus

TOGETHER = 4
ARRIVED = threading.Barrier(TOGETHER)
RELEASE = threading.Event()  # the hung request waits on it; set at teardown so no thread outlives the test


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"data": [{"id": "stand-in"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scenario = body["messages"][-1]["content"][-1]["text"]
        if scenario == "together":
            try:
                ARRIVED.wait(timeout=20)  # broken (an error answer) unless TOGETHER requests are in flight at once
            except threading.BrokenBarrierError:
                self.send_response(503)
                self.end_headers()
                return
        elif scenario == "hang":
            RELEASE.wait(30)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in ({"choices": [{"index": 0, "delta": {"content": "ok."}, "finish_reason": None}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    RELEASE.set()
    server.shutdown()


def _engine(base_url: str, in_flight: int, tmp_path, timeout_s: float = 30) -> Engine:
    return load_engine(load_settings(backend="openai", openai_base_url=base_url, remote_max_in_flight=in_flight,
                                     stream_timeout_s=timeout_s, home=tmp_path))


def test_several_remote_requests_are_in_flight_at_once(base_url: str, tmp_path) -> None:
    engine = _engine(base_url, 8, tmp_path)
    try:
        tickets = [engine.submit([], "together", session=f"analyst-{i}") for i in range(TOGETHER)]
        for ticket in tickets:
            assert ticket.wait(60)
        assert [t.status for t in tickets] == [RequestStatus.DONE] * TOGETHER, [t.error for t in tickets]
        assert all(t.answer is not None and t.answer.text == "ok." for t in tickets)
    finally:
        close_scheduler_for(engine)


def test_a_hung_remote_request_holds_no_one_else(base_url: str, tmp_path) -> None:
    engine = _engine(base_url, 2, tmp_path, timeout_s=5)  # the hung one ends in 5 s, with its own error
    try:
        hung = engine.submit([], "hang", session="first")
        assert hung.wait_started(10)
        other = engine.submit([], "ok", session="second")
        assert other.wait(20)  # answered while the first is still waiting on its server
        assert other.status == RequestStatus.DONE and other.answer is not None and other.answer.text == "ok."
        assert not hung.finished
        assert hung.wait(30) and hung.status == RequestStatus.FAILED and "stream_timeout_s" in str(hung.error)
    finally:
        close_scheduler_for(engine)


def test_remote_max_in_flight_is_honoured(base_url: str, tmp_path) -> None:
    engine = _engine(base_url, 1, tmp_path, timeout_s=3)  # one at a time, as for a local model
    try:
        hung = engine.submit([], "hang", session="first")
        assert hung.wait_started(10)
        other = engine.submit([], "ok", session="second")
        assert other.status == RequestStatus.QUEUED and other.ahead() == 1  # waits behind the hung request
        assert other.wait(30) and other.status == RequestStatus.DONE  # once the hung one has timed out
        assert hung.status == RequestStatus.FAILED
    finally:
        close_scheduler_for(engine)
