"""The model is one shared resource per process: loaded once, attached to, switched with its memory released."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.backends import LoadProgress
from core.errors import ModelError
from core.settings import load_settings
from dashboard.widgets.model_resource import ModelSlot

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def test_loaded_once_then_attached_to_with_progress_lines() -> None:
    slot, steps = ModelSlot(), []
    first = slot.get(load_settings(), steps.append)
    assert steps and all(isinstance(s, LoadProgress) for s in steps) and steps[-1].fraction == 1.0
    assert steps[-1].message.startswith("Model ready")
    again = slot.get(load_settings(max_question_chars=50), steps.append)
    assert again is first and first.settings.max_question_chars == 50  # no reload for a non-model setting


def test_switching_models_unloads_the_old_one_first(demo_model_dir: Path) -> None:
    slot = ModelSlot()
    old = slot.get(load_settings())
    new = slot.get(load_settings(model=str(demo_model_dir)))
    assert new is not old and old.backend.model is None and new.backend.model is not None


def test_a_model_that_cannot_be_found_keeps_the_loaded_one(tmp_path: Path) -> None:
    slot = ModelSlot()
    loaded = slot.get(load_settings())
    with pytest.raises(ModelError, match="neither a folder nor in the local model cache"):
        slot.get(load_settings(model=str(tmp_path / "nowhere")))
    assert loaded.backend.model is not None and slot.engine is loaded


def test_a_second_session_waits_for_the_load_and_attaches() -> None:
    slot, engines = ModelSlot(), []
    threads = [threading.Thread(target=lambda: engines.append(slot.get(load_settings()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engines) == 2 and engines[0] is engines[1]


def test_a_model_that_cannot_load_is_an_error_on_every_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOUPE_MODEL", str(tmp_path / "missing-model"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("No model loaded" in e.value for e in at.sidebar.error)
    assert any(e.value.startswith("The model could not be loaded:") for e in at.main.error)
