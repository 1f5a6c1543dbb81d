"""The dashboard answers a question on the demo model (Streamlit AppTest, no mocks)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.image_factory import encode

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def test_playground_labels_the_demo_model() -> None:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("demo weights — answers are noise" in w.value for w in at.warning)
    assert at.title[0].value == "Playground"
