"""The remote backend against vLLM's and LMDeploy's recorded API shapes (tests/fixtures/remote_engines/, served
by tests/remote_replay.py): text streamed, usage counted, errors typed with the engine's own message, the model
picked by id, the request body as the engines read it, retries of an overloaded server."""
from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from PIL import Image

from core.backends import create_backend
from core.backends.openai_remote import OpenAIRemoteBackend
from core.errors import GenerationError, LoupeError, ModelError
from core.inputs.images import prepare
from core.records import GenerationSettings, Query
from core.settings import load_settings
from tests.image_factory import encode
from tests.remote_replay import ReplayServer, load_fixture

ENGINES = ("vllm", "lmdeploy")


@pytest.fixture(params=ENGINES)
def replay(request: pytest.FixtureRequest) -> Iterator[ReplayServer]:
    server = ReplayServer(load_fixture(request.param)).start()
    yield server
    server.stop()


def _backend(server: ReplayServer, **changes: object) -> OpenAIRemoteBackend:
    settings = load_settings(backend="openai", openai_base_url=server.base_url, stream_timeout_s=5.0, **changes)
    backend = create_backend(settings)
    assert isinstance(backend, OpenAIRemoteBackend)
    backend.load()
    return backend


def _query(text: str, settings: GenerationSettings | None = None, with_image: bool = True) -> Query:
    images = (prepare(encode(Image.new("RGB", (96, 64), "teal"), "PNG")),) if with_image else ()
    return Query(images, text, settings or GenerationSettings(max_new_tokens=64))


def test_an_answer_streams_with_the_engines_usage(replay: ReplayServer) -> None:
    backend = _backend(replay)
    try:
        expected = replay.fixture["answer"]
        assert backend.model_id == replay.fixture["models"]["data"][0]["id"]  # the only model served
        stream = backend.stream(backend.encode(_query("answer")))
        pieces = list(stream)
        answer = stream.answer
        assert answer is not None and len(pieces) >= 2 and "".join(pieces) == expected["text"]
        assert (answer.text, answer.truncated) == (expected["text"], False)
        usage = expected["usage"]
        assert (answer.input_tokens, answer.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert answer.model == backend.model_id and answer.timings.prefill > 0
    finally:
        backend.unload()


def test_the_model_card_lists_what_the_server_serves() -> None:
    server = ReplayServer(load_fixture("vllm")).start()
    try:
        backend = _backend(server)
        notes = " ".join(backend.describe().notes)
        assert "Qwen/Qwen2.5-VL-7B-Instruct (max_model_len 32768, from /models/Qwen2.5-VL-7B-Instruct)" in notes
        backend.unload()
    finally:
        server.stop()


def test_the_request_is_sent_as_the_engines_read_it(replay: ReplayServer) -> None:
    backend = _backend(replay)
    try:
        backend.stream(backend.encode(_query("answer"))).collect()
        greedy = replay.requests[-1]
        assert greedy["model"] == backend.model_id and greedy["stream"] is True
        assert greedy["stream_options"] == {"include_usage": True}
        assert (greedy["max_tokens"], greedy["temperature"], greedy["top_k"]) == (64, 0.0, 1)
        assert greedy["repetition_penalty"] == 1.005  # extra_body reaches the top level of the body
        assert "top_p" not in greedy and "seed" not in greedy and "use_beam_search" not in greedy
        url = greedy["messages"][-1]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:3] == b"\xff\xd8\xff"  # a JPEG

        sampled = GenerationSettings(max_new_tokens=32, do_sample=True, temperature=0.7, top_p=0.9, seed=11,
                                     repetition_penalty=1.1)
        backend.stream(backend.encode(_query("answer", sampled))).collect()
        body = replay.requests[-1]
        assert (body["temperature"], body["top_p"], body["seed"], body["repetition_penalty"]) == (0.7, 0.9, 11, 1.1)
        assert "top_k" not in body

        beams = GenerationSettings(max_new_tokens=32, num_beams=3)
        backend.stream(backend.encode(_query("answer", beams))).collect()
        body = replay.requests[-1]
        assert (body["use_beam_search"], body["best_of"], body["num_beams"]) == (True, 3, 3) and "n" not in body
    finally:
        backend.unload()


def test_png_images_by_the_setting(replay: ReplayServer) -> None:
    backend = _backend(replay, remote_image_format="png")
    try:
        backend.stream(backend.encode(_query("answer"))).collect()
        url = replay.requests[-1]["messages"][-1]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        backend.unload()


@pytest.mark.parametrize(("engine", "scenario"), [(engine, name) for engine in ENGINES
                                                  for name in load_fixture(engine)["errors"]])
def test_an_engines_error_is_typed_with_its_message(engine: str, scenario: str) -> None:
    server = ReplayServer(load_fixture(engine)).start()
    try:
        backend = _backend(server)
        error = server.fixture["errors"][scenario]
        with pytest.raises(LoupeError) as caught:
            backend.stream(backend.encode(_query(scenario))).collect()
        assert type(caught.value).__name__ == error["kind"]
        assert error["shown"] in str(caught.value)
        assert "{" not in str(caught.value)  # the message, never the JSON around it
        assert backend.stream(backend.encode(_query("answer"))).collect().text == server.fixture["answer"]["text"]
        backend.unload()
    finally:
        server.stop()


def test_the_model_is_chosen_by_id_when_the_server_serves_several() -> None:
    server = ReplayServer(load_fixture("vllm")).start()
    server.several = True
    try:
        with pytest.raises(ModelError, match=r"serves 2 models: Qwen/Qwen2\.5-VL-7B-Instruct, radiology-lora\. "
                                             "Set remote_model"):
            _backend(server)
        with pytest.raises(ModelError, match="has no model 'other'; it serves: Qwen/Qwen2.5-VL-7B-Instruct, "
                                             "radiology-lora"):
            _backend(server, remote_model="other")
        backend = _backend(server, remote_model="radiology-lora")
        backend.stream(backend.encode(_query("answer"))).collect()
        assert backend.model_id == "radiology-lora" and server.requests[-1]["model"] == "radiology-lora"
        backend.unload()
    finally:
        server.stop()


def test_an_overloaded_server_is_retried_with_backoff() -> None:
    server = ReplayServer(load_fixture("vllm")).start()
    try:
        backend = _backend(server)  # remote_max_retries 2 by default
        server.fail_first = 2
        answer = backend.stream(backend.encode(_query("flaky", with_image=False))).collect()
        assert answer.text == server.fixture["answer"]["text"] and len(server.requests) == 3
        backend.unload()

        backend = _backend(server, remote_max_retries=0)
        server.fail_first = 1
        with pytest.raises(GenerationError, match=r"HTTP 503: Service is overloaded\)"):
            backend.stream(backend.encode(_query("flaky", with_image=False))).collect()
        backend.unload()
    finally:
        server.stop()


def test_remote_health_reports_the_engine(replay: ReplayServer) -> None:
    backend = _backend(replay)
    health = backend.remote_health()
    assert health.reachable and health.served == (backend.model_id,) and health.error == ""
    replay.stop()
    gone = backend.remote_health()
    assert not gone.reachable and gone.served == () and "Cannot reach" in gone.error
    backend.unload()
    replay.stop = lambda: None  # type: ignore[method-assign]  # already stopped
