"""The remote backend against Loupe's own API server on 127.0.0.1 (a real uvicorn server on a free port,
serving the real demo model): same answers as the local model, streamed, with timings and tokens."""
from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from core.backends import create_backend
from core.backends.openai_remote import OpenAIRemoteBackend
from core.errors import ModelError, QuestionError
from core.records import GenerationSettings
from core.serving.api import create_app, start_server
from core.serving.engine import Engine
from core.serving.scheduler import Scheduler
from core.settings import load_settings
from tests.image_factory import encode, jpeg_with_orientation


@pytest.fixture(scope="module")
def server(engine):
    served = Engine(backend=engine.backend, settings=dataclasses.replace(engine.settings, api_token="k3y"))
    scheduler = Scheduler(engine.backend)
    running = start_server(create_app(served, scheduler))
    yield running
    running.stop()
    scheduler.close()


@pytest.fixture()
def remote(server, monkeypatch):
    monkeypatch.setenv("LOUPE_BACKEND", "openai")
    monkeypatch.setenv("LOUPE_OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("LOUPE_OPENAI_API_KEY", "k3y")
    from core.serving.engine import load_engine

    engine = load_engine(load_settings())
    yield engine
    engine.backend.unload()


def test_remote_answers_like_the_local_model(engine, remote) -> None:
    assert isinstance(remote.backend, OpenAIRemoteBackend) and remote.backend.has_local_gpus is False
    card = remote.describe()
    assert (card.name, card.backend, card.device) == ("demo-llava-v2", "openai", "remote")
    photo = jpeg_with_orientation(6)
    settings = GenerationSettings(max_new_tokens=12)
    local = engine.ask([photo], "图中有什么？", settings).collect()
    stream = remote.ask([photo], "图中有什么？", settings)
    pieces = list(stream)
    answer = stream.answer
    assert len(pieces) > 1 and answer is not None
    assert answer.text == local.text and answer.truncated
    assert (answer.input_tokens, answer.output_tokens) == (local.input_tokens, 12)
    t = answer.timings
    assert t.vision == 0 and t.prefill > 0 and t.decode > 0 and t.total >= t.prefill + t.decode
    assert answer.peak_memory_gb == {} and answer.model == "demo-llava-v2"
    assert answer.image_notes == ("rotated 90° from EXIF (orientation 6)",)


def test_remote_through_the_local_queue_and_cancel(remote) -> None:
    image = encode(Image.new("RGB", (64, 64), "olive"), "PNG")
    ticket = remote.submit([image], "Describe it.", GenerationSettings(max_new_tokens=400), session="remote-user")
    for _ in ticket:
        ticket.cancel()
    assert ticket.answer is not None and ticket.answer.truncated and ticket.answer.output_tokens < 400


def test_remote_refusals_are_typed(server, remote) -> None:
    query = remote.build_query([encode(Image.new("RGB", (32, 32)), "PNG")], "hi")
    too_long = dataclasses.replace(query, question="问" * 300)  # past the server's 200-character limit
    with pytest.raises(QuestionError, match="remote server refused the question: The question is 300"):
        remote.backend.stream(remote.backend.encode(too_long)).collect()
    wrong_key = OpenAIRemoteBackend(f"{server.url}/v1", "nope")
    with pytest.raises(ModelError, match="refused the API key"):
        wrong_key.load()
    with pytest.raises(ModelError, match="has no model 'other'"):
        OpenAIRemoteBackend(f"{server.url}/v1", "k3y", "other").load()
    with pytest.raises(ModelError, match="Cannot reach"):
        OpenAIRemoteBackend("http://127.0.0.1:9/v1", connect_timeout_s=2).load()
    with pytest.raises(ModelError, match="set openai_base_url"):
        create_backend(load_settings(backend="openai", openai_base_url=""))
