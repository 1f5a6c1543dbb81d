"""Compare columns that are models as well as prompts: the local demo model beside a remote OpenAI-compatible
one (Loupe's own API server on 127.0.0.1, serving the same demo model: a real HTTP server, no mocks)."""
from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from core.analysis import compare
from core.analysis.compare import LOCAL, REMOTE, CompareColumn
from core.errors import QuestionError
from core.history import HistoryStore
from core.serving.api import create_app, start_server
from core.serving.engine import Engine, load_engine
from core.serving.recorded_ask import ImageUpload
from core.serving.scheduler import Scheduler
from tests.image_factory import encode


@pytest.fixture(scope="module")
def remote(engine):
    served = Engine(backend=engine.backend, settings=engine.settings)
    scheduler = Scheduler(engine.backend)
    running = start_server(create_app(served, scheduler))
    remote_engine = load_engine(dataclasses.replace(engine.settings, backend="openai", model="",
                                                    openai_base_url=f"{running.url}/v1"))
    yield remote_engine
    remote_engine.backend.unload()
    running.stop()
    scheduler.close()


@pytest.fixture
def store(loupe_home) -> HistoryStore:
    return HistoryStore(loupe_home / "history.sqlite3")


def _png(colour: str) -> bytes:
    return encode(Image.new("RGB", (96, 64), colour), "PNG")


def test_a_remote_column_answers_beside_the_local_ones(engine, remote, store) -> None:
    generation = engine.default_generation(max_new_tokens=8)
    columns = [CompareColumn("Describe", "Describe the photo."), CompareColumn("Colours", "List its colours."),
               CompareColumn("Describe", "Describe the photo.", model=REMOTE)]
    images = [ImageUpload(_png("navy"), "a.png"), ImageUpload(_png("red"), "b.png")]
    run = compare.compare(engine, store, images, columns, generation=generation, remote=remote)
    assert run.model_names == (engine.describe().name,) * 2 + (remote.describe().name,)
    assert run.column_backends == ("transformers", "transformers", "openai")
    for i in range(2):
        local, remote_cell = run.cell(i, 0), run.cell(i, 2)
        assert local.batched and not remote_cell.batched  # the local columns keep the batched fast path
        assert remote_cell.entry.status == "answered" and remote_cell.entry.output_tokens > 0
        # The same demo model behind HTTP answers the same question with the same greedy words.
        assert remote_cell.entry.answer == local.entry.answer
        assert remote_cell.entry.stamp["backend"] == "openai"
    reopened = compare.load_group(store, run.group_id)
    assert [c.model for c in reopened.columns] == [LOCAL, LOCAL, REMOTE]
    assert reopened.model_names == run.model_names


def test_a_remote_column_without_a_remote_model_says_how_to_configure_one(engine, store) -> None:
    columns = [CompareColumn("Describe", "Describe the photo."), CompareColumn("Describe", "Describe it.", model=REMOTE)]
    with pytest.raises(QuestionError, match="openai_base_url"):
        compare.compare(engine, store, [ImageUpload(_png("navy"), "a.png")], columns)
