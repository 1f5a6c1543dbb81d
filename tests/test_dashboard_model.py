"""The dashboard's side of the model's lifecycle (core/serving/lifecycle.py, tested in test_lifecycle.py):
a model that cannot load is an error on every page, not a crash."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def test_a_model_that_cannot_load_is_an_error_on_every_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOUPE_MODEL", str(tmp_path / "missing-model"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("No model loaded" in e.value for e in at.sidebar.error)
    assert any(e.value.startswith("The model could not be loaded:") for e in at.main.error)
