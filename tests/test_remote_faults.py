"""The remote backend against a misbehaving stand-in for an OpenAI-compatible server (a real threaded HTTP
server on 127.0.0.1): a hung server, a 200 that is not a stream, a stream cut short and error bodies each end
in a typed error that says what happened, and the same backend answers the next question."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from core.backends.openai_remote import OpenAIRemoteBackend
from core.errors import GenerationError, QuestionError
from core.history import HistoryStore
from core.records import Query
from core.serving.engine import load_engine
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
from core.settings import load_settings
from tests.image_factory import encode
from tests.remote_replay import QuietHandler

RELEASE = threading.Event()  # set at teardown: handlers that "hang" wait on it, so no thread outlives the tests
KEEPALIVE_CLOSED = threading.Event()  # the keep-alive handler saw its connection closed by the client


def _chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n".encode()


class Handler(QuietHandler):
    """Behaves as the question's text asks: `ok`, `hang`, `stall`, `json`, `html`, `cut`, `vllm-400`..."""

    def _stream_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def do_GET(self) -> None:
        self._send(200, "application/json", json.dumps({"data": [{"id": "stand-in"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scenario = body["messages"][0]["content"][-1]["text"]
        if scenario == "hang":  # accepts, never answers
            RELEASE.wait(30)
        elif scenario == "stall":  # starts the stream, then stops sending
            self._stream_head()
            self.wfile.write(_chunk("A cat"))
            self.wfile.flush()
            RELEASE.wait(30)
        elif scenario == "json":
            answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
            self._send(200, "application/json", json.dumps(answer).encode())
        elif scenario == "html":
            self._send(200, "text/html", b"<html><body><h1>Welcome to nginx!</h1></body></html>")
        elif scenario == "cut":  # two pieces, then the connection closes: no finish_reason, no [DONE]
            self._stream_head()
            self.wfile.write(_chunk("A cat ") + _chunk("sits on"))
        elif scenario == "vllm-400":
            error = {"object": "error", "message": "This model's maximum context length is 4096 tokens.",
                     "type": "BadRequestError", "code": 400}
            self._send(400, "application/json", json.dumps(error).encode())
        elif scenario == "openai-500":
            error = {"error": {"message": "CUDA out of memory on the server", "type": "server_error"}}
            self._send(500, "application/json", json.dumps(error).encode())
        elif scenario == "html-502":
            self._send(502, "text/html", b"<html><head><title>502 Bad Gateway</title></head><body>bad</body></html>")
        elif scenario == "error-event":  # vLLM's shape for an error met while streaming
            self._stream_head()
            self.wfile.write(_chunk("A") + b'data: {"object": "error", "message": "engine died", "code": 500}\n\n'
                             + b"data: [DONE]\n\n")
        elif scenario == "error-string":
            self._stream_head()
            self.wfile.write(b'data: {"error": "overloaded"}\n\n')
        elif scenario == "keepalive":  # a stream of SSE comments only, never an event, until the client leaves
            self._stream_head()
            try:
                while not RELEASE.wait(0.1):
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
            except OSError:
                KEEPALIVE_CLOSED.set()
        elif scenario == "not-json":
            self._stream_head()
            self.wfile.write(b"data: {broken\n\n")
        else:  # ok
            self._stream_head()
            usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
            self.wfile.write(_chunk("A cat.") + _chunk(" Yes.", "stop") + f"data: {json.dumps(usage)}\n\n".encode()
                             + b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    RELEASE.set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def backend(base_url: str) -> Iterator[OpenAIRemoteBackend]:
    remote = OpenAIRemoteBackend(base_url, stream_timeout_s=0.5, connect_timeout_s=2)
    remote.load()
    yield remote
    remote.unload()


def ask(backend: OpenAIRemoteBackend, scenario: str) -> tuple[list[str], str]:
    """The pieces that reached the reader, and the error's message ("" when it answered)."""
    stream = backend.stream(backend.encode(Query((), scenario)))
    pieces: list[str] = []
    try:
        for piece in stream:
            pieces.append(piece)
    except GenerationError as exc:
        return pieces, str(exc)
    return pieces, ""


def test_a_healthy_stream_still_answers(backend: OpenAIRemoteBackend) -> None:
    answer = backend.stream(backend.encode(Query((), "ok"))).collect()
    assert (answer.text, answer.truncated, answer.input_tokens, answer.output_tokens) == ("A cat. Yes.", False, 5, 2)


@pytest.mark.parametrize("scenario", ["hang", "stall"])
def test_a_hung_server_times_out_with_a_clear_error_and_the_model_stays_usable(
        backend: OpenAIRemoteBackend, base_url: str, scenario: str) -> None:
    started = time.perf_counter()
    pieces, error = ask(backend, scenario)
    assert time.perf_counter() - started < 5
    assert pieces == ([] if scenario == "hang" else ["A cat"])
    assert base_url in error and "0.5 s" in error and "stream_timeout_s" in error
    assert backend.stream(backend.encode(Query((), "ok"))).collect().text == "A cat. Yes."


def test_a_question_cancelled_while_the_server_hangs_ends_cancelled_not_failed(backend: OpenAIRemoteBackend) -> None:
    stream = backend.stream(backend.encode(Query((), "hang")))
    stream.cancel()
    answer = stream.collect()  # once the request's own timeout (and retries) ran out: never an error
    assert answer.text == "" and answer.truncated


def test_keep_alives_alone_end_at_the_backstop_and_the_connection_is_closed(base_url: str) -> None:
    remote = OpenAIRemoteBackend(base_url, stream_timeout_s=0.5, connect_timeout_s=2, max_retries=0)
    remote.load()
    try:
        started = time.perf_counter()
        pieces, error = ask(remote, "keepalive")
        assert pieces == [] and "produced nothing for 4 s" in error  # every try's connect + wait, plus 1 s
        assert time.perf_counter() - started < 8
        assert KEEPALIVE_CLOSED.wait(5)  # the cancel closed the response: the server is not left streaming
        assert remote.stream(remote.encode(Query((), "ok"))).collect().text == "A cat. Yes."
    finally:
        remote.unload()


@pytest.mark.parametrize(("scenario", "shown"), [("json", "application/json"), ("html", "text/html")])
def test_a_200_that_is_not_an_event_stream_is_an_error(backend: OpenAIRemoteBackend, base_url: str,
                                                       scenario: str, shown: str) -> None:
    pieces, error = ask(backend, scenario)
    assert pieces == [] and base_url in error and "not an event stream" in error and shown in error


def test_a_stream_cut_before_its_end_is_an_error_with_what_arrived(backend: OpenAIRemoteBackend,
                                                                   base_url: str) -> None:
    pieces, error = ask(backend, "cut")
    assert "".join(pieces) == "A cat sits on"
    assert base_url in error and "ended before the answer was complete" in error and "13 characters" in error


@pytest.mark.parametrize(("scenario", "kind", "message"), [
    ("vllm-400", QuestionError, "refused the question: This model's maximum context length is 4096 tokens."),
    ("openai-500", GenerationError, r"HTTP 500: CUDA out of memory on the server\)"),
    ("html-502", GenerationError, r"HTTP 502: 502 Bad Gateway bad\)"),
    ("error-event", GenerationError, "failed while answering: engine died"),
    ("error-string", GenerationError, "failed while answering: overloaded"),
    ("not-json", GenerationError, r"sent an event that is not JSON: \{broken"),
])
def test_an_error_from_the_server_is_shown_as_its_message(backend: OpenAIRemoteBackend, scenario: str,
                                                         kind: type[Exception], message: str) -> None:
    with pytest.raises(kind, match=message):
        backend.stream(backend.encode(Query((), scenario))).collect()


@pytest.mark.parametrize(("scenario", "kept"), [("cut", "A cat sits on"), ("json", ""), ("stall", "A cat")])
def test_history_keeps_a_broken_stream_as_failed_with_what_arrived(base_url: str, tmp_path: Path,
                                                                    scenario: str, kept: str) -> None:
    engine = load_engine(load_settings(backend="openai", openai_base_url=base_url, stream_timeout_s=0.5))
    store = HistoryStore(tmp_path / "history.sqlite3")
    request = AskRequest(session_id="0123456789ab", page="ask", question=scenario,
                         images=(ImageUpload(encode(Image.new("RGB", (32, 32), "olive"), "PNG"), "olive.png"),))
    try:
        run = ask_and_record(engine, store, request)
        with pytest.raises(GenerationError, match="remote server"):
            run.run()
        assert run.entry is not None
        entry = store.get(run.entry.id)
        assert entry is not None and store.count() == 1
        assert (entry.status, entry.answer, entry.error_type) == ("failed", kept, "GenerationError")
        assert base_url in entry.error
    finally:
        engine.backend.unload()
