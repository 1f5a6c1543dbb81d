"""The OpenAI-compatible API on the real demo model: TestClient for the contract, one real uvicorn server on
127.0.0.1 (free port) for concurrent streaming clients and for a client that goes away."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.records import GenerationSettings
from core.serving.api import start_server
from tests.image_factory import encode
from tests.test_scheduler import Gate

QUESTION = "What is in the image?"


def _png(colour: str = "teal") -> bytes:
    return encode(Image.new("RGB", (120, 90), colour), "PNG")


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _body(*urls: str, question: str = QUESTION, **extra) -> dict:
    content = [{"type": "text", "text": question}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": "demo-llava-v2", "max_tokens": 8, "messages": [{"role": "user", "content": content}], **extra}


def _sse_events(lines) -> list:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_chat_completion_matches_the_local_answer(engine, serving) -> None:
    app, _ = serving()
    local = engine.ask([_png()], QUESTION, GenerationSettings(max_new_tokens=8)).collect()
    response = TestClient(app).post("/v1/chat/completions", json=_body(_uri(_png())))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "demo-llava-v2"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": local.text}
    assert choice["finish_reason"] == "length"  # the demo never stops by itself within 8 tokens
    assert data["usage"] == {"prompt_tokens": local.input_tokens, "completion_tokens": 8,
                             "total_tokens": local.input_tokens + 8}
    assert set(data["loupe"]["timings_s"]) == {"queue", "preprocess", "vision", "prefill", "decode", "total"}


def test_streaming_sends_chunks_then_done(serving) -> None:
    app, _ = serving()
    client = TestClient(app)
    whole = client.post("/v1/chat/completions", json=_body(_uri(_png()))).json()
    body = _body(_uri(_png()), stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]][0]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["loupe"]["text"] == whole["choices"][0]["message"]["content"]
    assert streamed.strip().startswith(final["loupe"]["text"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_models_and_health(serving) -> None:
    app, _ = serving()
    client = TestClient(app)
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "demo-llava-v2"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queue"] == {"waiting": 0, "running": False, "sessions": 0}
    assert isinstance(health["gpus"], list) and health["rss_gb"] > 0.05 and health["nvml"]


def _bad_requests(tmp_path) -> list:
    text_file = _uri(b"just some text, not pixels", "text/plain")
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png())
    return [
        (b"{not json", 400, "invalid_json", None),
        (json.dumps({"model": "x"}).encode(), 400, "invalid_value", "messages"),
        (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), 400, "invalid_value", "messages"),
        (json.dumps(_body("https://example.com/a.png")).encode(), 400, "unsupported_image_url", "messages"),
        (json.dumps(_body(text_file)).encode(), 400, "invalid_image", "messages"),
        (json.dumps(_body("data:image/png;base64,@@@")).encode(), 400, "invalid_image", "messages"),
        (json.dumps(_body(_uri(_png()), question="问" * 201)).encode(), 400, "invalid_question", "messages"),
        (json.dumps(_body(*[_uri(_png())] * 5)).encode(), 400, "invalid_question", "messages"),
        (json.dumps(_body(_uri(_png()), max_tokens=0)).encode(), 400, "invalid_value", "max_tokens"),
        (json.dumps(_body(_uri(_png()), max_tokens=100_000)).encode(), 400, "invalid_question", "messages"),
        (json.dumps(_body(_uri(_png()), n=2)).encode(), 400, "unsupported_value", "n"),
        (json.dumps(_body(str(outside))).encode(), 400, "path_not_allowed", "messages"),
        (json.dumps(_body(_uri(b"x" * 3 * 2**20))).encode(), 413, "body_too_large", None),
    ]


def test_bad_requests_get_openai_shaped_4xx(serving, tmp_path) -> None:
    app, scheduler = serving()
    client = TestClient(app)
    for raw, status, code, param in _bad_requests(tmp_path):
        response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == status, (code, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["code"], error["param"]) == (code, param), error
        assert error["message"] and "Traceback" not in error["message"]
    chunked = client.post("/v1/chat/completions", content=iter([b"x" * 2**20] * 3))  # no Content-Length
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    assert client.get("/v1/chat/completions").status_code == 405
    # the server is still fine afterwards
    assert client.post("/v1/chat/completions", json=_body(_uri(_png()))).status_code == 200
    assert scheduler.snapshot().waiting == 0


def test_local_paths_only_inside_allowed_folders(serving, tmp_path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "photo.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    app, _ = serving(api_allowed_paths=str(allowed))
    client = TestClient(app)
    for url in (str(allowed / "photo.png"), (allowed / "photo.png").as_uri()):
        assert client.post("/v1/chat/completions", json=_body(url)).status_code == 200
    sneaky = client.post("/v1/chat/completions", json=_body(str(allowed / ".." / "secret.png")))
    assert sneaky.status_code == 400 and sneaky.json()["error"]["code"] == "path_not_allowed"
    missing = client.post("/v1/chat/completions", json=_body(str(allowed / "nope.png")))
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_image"


def test_bearer_token(serving) -> None:
    app, _ = serving(api_token="s3cret")
    client = TestClient(app)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # probes need no secret


def test_real_server_concurrent_streams_and_a_client_that_goes_away(engine, serving) -> None:
    app, scheduler = serving()
    finished = {}
    cancelled = threading.Event()

    def record(done) -> None:
        finished[done.session] = done.status
        if done.status == "cancelled":
            cancelled.set()

    scheduler.add_listener(record)
    server = start_server(app)
    try:
        assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
        results = {}

        def client(name: str) -> None:
            body = _body(_uri(_png()), stream=True, user=name)
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as response:
                results[name] = _sse_events(response.iter_lines())

        threads = [threading.Thread(target=client, args=(f"bot-{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(events[-1] == "[DONE]" and '"finish_reason": "length"' in events[-2] for events in results.values())
        assert finished == {"api:bot-0": "done", "api:bot-1": "done", "api:bot-2": "done"}

        gate = Gate(engine)
        try:
            holder = threading.Thread(target=client, args=("holder",))
            holder.start()
            assert gate.entered.wait(30)
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                              json=_body(_uri(_png()), stream=True, user="leaver")) as response:
                lines = response.iter_lines()
                assert json.loads(next(lines)[6:])["choices"][0]["delta"]["role"] == "assistant"
                assert ": 1 request ahead" in [next(lines) for _ in range(3)]
            # the connection is closed here: the server must notice and drop the queued request
            assert cancelled.wait(30)
            assert finished["api:leaver"] == "cancelled"
        finally:
            gate.open()
        holder.join(60)
        assert finished["api:holder"] == "done"
    finally:
        server.stop()


def test_the_openai_client_works_unchanged(serving) -> None:
    """What the README shows: the official `openai` Python client against a real server."""
    openai = pytest.importorskip("openai")
    app, _ = serving(api_token="s3cret")
    server = start_server(app)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret")
        model = client.models.list().data[0].id
        content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": _uri(_png())}}]
        reply = client.chat.completions.create(model=model, max_tokens=8,
                                               messages=[{"role": "user", "content": content}])
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 8
        stream = client.chat.completions.create(model=model, max_tokens=8, stream=True,
                                                messages=[{"role": "user", "content": content}])
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert streamed.strip().startswith(reply.choices[0].message.content)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "问" * 201}])
        assert refused.value.code == "invalid_question" and "201 characters" in refused.value.message
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong").models.list()
    finally:
        server.stop()


def test_serve_refuses_a_busy_port_with_one_error_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "core", "serve", "--port", str(port)], capture_output=True,
                                text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: Cannot listen on 127.0.0.1:{port} (Address already in use); "
                                                  "choose another --port."]


def test_api_requests_are_kept_in_history(serving, tmp_path) -> None:
    from core.history import HistoryStore

    app, scheduler = serving()
    assert TestClient(app).post("/v1/chat/completions", json=_body(_uri(_png()))).status_code == 200
    store = HistoryStore(tmp_path / "history.sqlite3")
    assert store.count() == 1
    entry = store.get(1)
    assert entry.page == "api" and entry.status == "answered" and entry.session_id.startswith("api:")
    assert entry.output_tokens == 8 and entry.stamp["model"] == "demo-llava-v2" and len(entry.image_hashes) == 1


def test_a_failed_api_request_keeps_its_error() -> None:
    from core.records import FinishedRequest, Query
    from core.serving.api_requests import entry_for
    from core.statuses import RequestStatus

    failed = FinishedRequest(request_id=1, session="api:x", query=Query(images=(), question="hi"),
                             status=RequestStatus.FAILED,
                             answer=None, error="The GPU ran out of memory while answering.",
                             error_type="GenerationError", submitted_at=0.0, waited_s=0.0, run_s=0.1)
    entry = entry_for(failed, {})
    assert (entry.status, entry.error_type, entry.page) == ("failed", "GenerationError", "api")
    assert "ran out of memory" in entry.error
