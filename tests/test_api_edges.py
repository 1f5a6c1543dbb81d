"""API edges found by probing as an attacker and a careless client would (issue #16 item 8), on the real
demo model: non-ASCII tokens, null bytes in paths, fields Loupe cannot honour, unknown models, and queue
fairness decided by who the client is rather than by the `user` field it picks."""
from __future__ import annotations

import contextlib
import json
import socket
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from core.serving.api import start_server
from tests.test_api import _body, _png, _uri
from tests.test_scheduler import Gate

URL = "/v1/chat/completions"


def _error(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("setting", ["s3cret", "pässwörd-🔑"])
def test_non_ascii_bearer_tokens_are_compared_as_bytes(serving, setting) -> None:
    app, _ = serving(api_token=setting)
    client = TestClient(app)
    for sent in ("wrong", "pässwörd", "s3cret-é", "pässwörd-🔑x"):
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {sent}".encode()})
        assert response.status_code == 401, (sent, response.text)
        assert _error(response)["code"] == "invalid_api_key"
    right = client.get("/v1/models", headers={"Authorization": f"Bearer {setting}".encode()})
    assert right.status_code == 200, right.text


def test_a_null_byte_in_a_local_image_path_is_a_400(serving, tmp_path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    app, _ = serving(api_allowed_paths=str(allowed))
    client = TestClient(app)
    for url in (f"{allowed}/photo\x00.png", f"file://{allowed}/photo%00.png"):
        response = client.post(URL, json=_body(url))
        assert response.status_code == 400, response.text
        error = _error(response)
        assert error["param"] == "messages" and error["code"] == "invalid_value"
        assert "image_url" in error["message"] and "null" in error["message"]


UNSUPPORTED = [
    ("stop", ["\n"]), ("stop", "END"), ("presence_penalty", 0.5), ("frequency_penalty", -1),
    ("logprobs", True), ("top_logprobs", 2), ("response_format", {"type": "json_object"}),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "required"),
    ("logit_bias", {"50256": -100}), ("functions", [{"name": "f"}]), ("function_call", "auto"),
]
# What clients send when a feature is off; refusing these would break clients that spell out defaults.
NEUTRAL = {"stop": None, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False, "top_logprobs": None,
           "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "logit_bias": {},
           "functions": [], "function_call": "none", "n": 1}


def test_fields_loupe_cannot_honour_are_refused_by_name(serving) -> None:
    app, scheduler = serving()
    client = TestClient(app)
    for field, value in UNSUPPORTED:
        response = client.post(URL, json=_body(_uri(_png()), **{field: value}))
        assert response.status_code == 400, (field, response.text)
        error = _error(response)
        assert error["param"] == field and error["code"] == "unsupported_parameter", error
        assert field in error["message"]
    assert client.post(URL, json=_body(_uri(_png()), **NEUTRAL)).status_code == 200
    honoured = _body(_uri(_png()), temperature=0.7, top_p=0.9, seed=3, max_tokens=4, stream=True,
                     stream_options={"include_usage": True})
    with client.stream("POST", URL, json=honoured) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] == 4
    assert scheduler.snapshot().waiting == 0


def test_system_messages_and_earlier_turns_are_refused(serving) -> None:
    app, _ = serving()
    client = TestClient(app)
    turn = _body(_uri(_png()))["messages"][0]
    cases = {
        "system": [{"role": "system", "content": "Answer in French."}, turn],
        "developer": [{"role": "developer", "content": "Be brief."}, turn],
        "assistant": [turn, {"role": "assistant", "content": "A teal square."}, turn],
        "earlier turn": [turn, {"role": "user", "content": "And now?"}],
    }
    for name, messages in cases.items():
        response = client.post(URL, json={"max_tokens": 4, "messages": messages})
        assert response.status_code == 400, (name, response.text)
        error = _error(response)
        assert error["param"] == "messages" and error["code"] == "unsupported_value", (name, error)


def test_unknown_model_is_a_404_and_models_can_be_fetched_by_id(serving) -> None:
    app, _ = serving()
    client = TestClient(app)
    listed = client.get("/v1/models").json()["data"][0]
    unknown = client.post(URL, json={**_body(_uri(_png())), "model": "gpt-4o"})
    assert unknown.status_code == 404
    error = _error(unknown)
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")
    assert "gpt-4o" in error["message"] and listed["id"] in error["message"]
    without = _body(_uri(_png()))
    del without["model"]
    assert client.post(URL, json=without).status_code == 200  # one model is served: omitting it means that one
    assert client.post(URL, json={**without, "model": listed["id"]}).status_code == 200
    one = client.get(f"/v1/models/{listed['id']}")
    assert one.status_code == 200 and one.json() == listed
    for missing in ("gpt-4o", "org/some-model"):
        response = client.get(f"/v1/models/{missing}")
        assert response.status_code == 404 and _error(response)["code"] == "model_not_found"


def test_fairness_and_the_per_client_limit_follow_the_client_not_its_user_field(engine, serving) -> None:
    """Client A (127.0.0.1) rotates `user` on every request; client B (127.0.0.2) asks once. B waits behind
    at most one of A's requests, and A cannot queue more than its share of the queue (8 // 4 = 2)."""
    app, scheduler = serving(max_waiting=8)
    server = start_server(app)
    a = httpx.Client(base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
    b = httpx.Client(base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    gate = Gate(engine)
    holder = threading.Thread(target=a.post, args=(URL,), kwargs={"json": _body(_uri(_png()), user="hold")})
    try:
        holder.start()
        assert gate.entered.wait(30)
        with contextlib.ExitStack() as stack:
            kept = []  # a dropped line iterator closes its connection, which would cancel the request
            for user in ("u1", "u2"):
                response = stack.enter_context(a.stream("POST", URL, json=_body(_uri(_png()), stream=True, user=user)))
                assert response.status_code == 200
                kept.append(response.iter_lines())
                next(kept[-1])  # the first chunk comes once the request is queued
            assert scheduler.snapshot().waiting == 2
            over = stack.enter_context(a.stream("POST", URL, json=_body(_uri(_png()), stream=True, user="u3")))
            assert over.status_code == 429
            over.read()
            error = _error(over)
            assert error["code"] == "queue_full" and "2" in error["message"]
            response = stack.enter_context(b.stream("POST", URL, json=_body(_uri(_png()), stream=True, user="u1")))
            assert response.status_code == 200
            lines = response.iter_lines()
            comment = next(line for line in lines if line.startswith(":"))
            assert comment == ": 2 requests ahead"  # the running one and A's next, not all of A's
            assert scheduler.snapshot().sessions == 2  # A's rotating users share one lane
    finally:
        gate.open()
        holder.join(60)
        a.close()
        b.close()
        server.stop()


# -- a body over the limit (issue #16 item 8): every kind of client reads the 413, the server reads a bounded amount
BIG = 40 * 2**20


def _raw_post(url: str, *, declared: int, send: int, chunked: bool = False, token: str = "") -> tuple[bytes, str]:
    """POST over a plain socket: the headers, then `send` bytes of body, then read what comes back.
    Returns (the response bytes, the error the send met or "")."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST {URL} HTTP/1.1\r\nHost: loupe\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {declared}\r\n"
    head += f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((head + "\r\n").encode())
    failed, block = "", b"x" * 2**20
    try:
        for _ in range(send // len(block)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked and send:
            sock.sendall(b"0\r\n\r\n")
    except OSError as exc:
        failed = type(exc).__name__
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answer += chunk
    sock.close()
    return answer, failed


def _json_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.fixture()
def default_limit_server(engine, serving):
    """The real server (uvicorn) with the default body limit, 32 MiB."""
    from core.serving.api import create_app

    _app, scheduler = serving()
    server = start_server(create_app(engine, scheduler, record_history=False))
    yield server
    server.stop()


def test_a_40_mb_body_gets_a_clean_413_whatever_the_client_does(default_limit_server) -> None:
    url = default_limit_server.url
    cases = {"sends it all, then reads": dict(declared=BIG, send=BIG),
             "sends Content-Length only and waits": dict(declared=BIG, send=0),
             "sends it chunked, then reads": dict(declared=0, send=BIG, chunked=True)}
    for case, how in cases.items():
        answer, failed = _raw_post(url, **how)
        assert not failed, (case, failed)
        status, body = _json_of(answer)
        assert status == 413 and b"connection: close" in answer.lower(), (case, answer[:300])
        assert body["error"]["code"] == "body_too_large" and "32 MiB" in body["error"]["message"], case
    for content in (b"x" * BIG, iter([b"x" * 2**20] * 40)):  # with Content-Length, and chunked
        response = httpx.post(url + URL, content=content, timeout=60)
        assert response.status_code == 413 and _error(response)["code"] == "body_too_large"
    # and the server still answers
    assert httpx.post(url + URL, json=_body(_uri(_png())), timeout=60).status_code == 200


def test_a_refused_body_is_read_only_up_to_a_bound(serving) -> None:
    """2 MiB limit: the server discards at most 4 × 2 MiB of a refused body, then closes; before, uvicorn
    read (and threw away) everything a client kept sending."""
    app, _ = serving()
    server = start_server(app)
    try:
        answer, failed = _raw_post(server.url, declared=256 * 2**20, send=256 * 2**20)
        assert failed in ("BrokenPipeError", "ConnectionResetError"), (failed, answer[:200])
        within, failed = _raw_post(server.url, declared=6 * 2**20, send=6 * 2**20)  # within the bound: read, answered
        assert not failed and _json_of(within)[0] == 413
    finally:
        server.stop()


def test_a_wrong_token_with_a_large_body_is_a_clean_401(serving) -> None:
    app, _ = serving(api_token="s3cret")
    server = start_server(app)
    try:
        answer, failed = _raw_post(server.url, declared=3 * 2**20, send=3 * 2**20, token="wrong")
        assert not failed and _json_of(answer)[0] == 401
        assert _json_of(answer)[1]["error"]["code"] == "invalid_api_key"
    finally:
        server.stop()


def test_the_api_has_its_own_question_length_limit(serving, engine) -> None:
    """`api_max_question_chars` limits API questions; the pages keep `max_question_chars` (200)."""
    from core.errors import QuestionError

    app, _ = serving(api_max_question_chars=500)
    client = TestClient(app)
    long_question = "Describe this picture in detail. " * 9  # 297 characters
    assert client.post(URL, json=_body(_uri(_png()), question=long_question)).status_code == 200
    refused = client.post(URL, json=_body(_uri(_png()), question="问" * 501))
    assert refused.status_code == 400 and "500" in _error(refused)["message"]
    with pytest.raises(QuestionError):  # the pages' path (Engine.build_query) still stops at 200
        engine.build_query([_png()], long_question)
    app, _ = serving(api_max_question_chars=50)
    short = TestClient(app).post(URL, json=_body(_uri(_png()), question="x" * 51))
    assert short.status_code == 400 and _error(short)["code"] == "invalid_question"
