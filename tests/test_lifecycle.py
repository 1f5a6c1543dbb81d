"""The model's lifecycle in core (core/serving/lifecycle.py), on the real demo model: loaded once and attached
to, switched with the old model's queue stopped and its memory released, kept when the new one fails."""
from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from PIL import Image

from core.backends import LoadProgress
from core.errors import ModelError, ModelUnloadingError
from core.records import GenerationSettings
from core.serving.lifecycle import LOAD_KEYS, ModelSlot, load_key
from core.serving.scheduler import scheduler_for
from core.settings import load_settings
from tests.image_factory import encode


def _png() -> bytes:
    return encode(Image.new("RGB", (96, 64), "navy"), "PNG")


def test_loaded_once_then_attached_to_with_progress_lines() -> None:
    slot, steps = ModelSlot(), []
    first = slot.get(load_settings(), steps.append)
    assert steps and all(isinstance(s, LoadProgress) for s in steps) and steps[-1].fraction == 1.0
    assert steps[-1].message.startswith("Model ready")
    again = slot.get(load_settings(max_question_chars=50), steps.append)
    assert again is first and first.settings.max_question_chars == 50  # no reload for a non-model setting


def test_loaded_never_loads_and_applies_the_settings_that_need_no_reload(demo_model_dir: Path) -> None:
    slot = ModelSlot()
    assert slot.loaded(load_settings()) is None and slot.engine is None
    engine = slot.get(load_settings())
    assert slot.loaded(load_settings(max_width=640)) is engine and engine.settings.max_width == 640
    assert slot.loaded(load_settings(model=str(demo_model_dir))) is None and slot.engine is engine


def test_the_load_key_is_the_settings_that_choose_and_place_the_model(demo_model_dir: Path) -> None:
    base = load_settings()
    assert load_key(base) == load_key(load_settings(max_question_chars=20, max_new_tokens=5))
    assert load_key(base) != load_key(load_settings(model=str(demo_model_dir)))
    assert {"model", "backend", "device", "split", "max_memory_gb"} <= set(LOAD_KEYS)


def test_switching_models_unloads_the_old_one_first(demo_model_dir: Path) -> None:
    slot = ModelSlot()
    old = slot.get(load_settings())
    new = slot.get(load_settings(model=str(demo_model_dir)))
    assert new is not old and old.backend.model is None and new.backend.model is not None


def test_switching_stops_the_old_models_queue_before_unloading(demo_model_dir: Path) -> None:
    slot = ModelSlot()
    old = slot.get(load_settings())
    queue = scheduler_for(old)
    long = GenerationSettings(max_new_tokens=4000)
    running = queue.submit(old.build_query([_png()], "first", long), session="a")
    waiting = queue.submit(old.build_query([_png()], "second", long), session="a")
    slot.get(load_settings(model=str(demo_model_dir)))
    assert running.finished and waiting.finished  # the worker was stopped before the weights went
    assert running.answer is None or running.answer.output_tokens < 4000
    with pytest.raises(ModelUnloadingError):  # a queued question hears why it never ran
        waiting.collect()
    with pytest.raises(ModelUnloadingError):
        queue.submit(old.build_query([_png()], "too late", long))
    assert old.backend.model is None


def test_release_unloads_and_the_next_get_loads_again() -> None:
    slot = ModelSlot()
    first = slot.get(load_settings())
    slot.release()
    assert slot.engine is None and slot.key is None and first.backend.model is None
    slot.release()  # nothing loaded: nothing to do
    second = slot.get(load_settings())
    assert second is not first and second.backend.model is not None
    answer = second.ask([_png()], "What is this?", GenerationSettings(max_new_tokens=3)).collect()
    assert answer.output_tokens == 3


def test_a_loaded_model_is_out_of_the_collectors_sight_until_released() -> None:
    """Full collections stall every thread (answers mid-stream too) for as long as they walk the heap: after a
    load, what lives as long as the process is frozen; an unload gives it back, so the old model can go."""
    slot = ModelSlot()
    engine = slot.get(load_settings())
    model = weakref.ref(engine.backend.model)
    assert gc.get_freeze_count() > 0
    slot.release()
    assert gc.get_freeze_count() == 0
    del engine
    gc.collect()
    assert model() is None


def test_a_model_that_cannot_be_found_keeps_the_loaded_one(tmp_path: Path) -> None:
    slot = ModelSlot()
    loaded = slot.get(load_settings())
    with pytest.raises(ModelError, match="neither a folder nor in the local model cache"):
        slot.get(load_settings(model=str(tmp_path / "nowhere")))
    assert loaded.backend.model is not None and slot.engine is loaded
    assert slot.get(load_settings()) is loaded


def test_a_second_caller_waits_for_the_load_and_attaches() -> None:
    slot, engines = ModelSlot(), []
    threads = [threading.Thread(target=lambda: engines.append(slot.get(load_settings()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engines) == 2 and engines[0] is engines[1]


def test_is_loading_while_another_caller_holds_the_slot() -> None:
    slot = ModelSlot()
    assert not slot.is_loading(load_settings())
    with slot.lock:  # what a load in progress looks like from another session
        assert slot.is_loading(load_settings())
    engine = slot.get(load_settings())
    with slot.lock:
        assert not slot.is_loading(load_settings())  # already served: attach, do not wait
    assert slot.loaded(load_settings()) is engine
