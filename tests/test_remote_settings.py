"""The remote backend's settings: checked on load like every other, and reaching the backend."""
from __future__ import annotations

import pytest

from core.backends import create_backend
from core.backends.openai_remote import OpenAIRemoteBackend
from core.backends.remote_request import data_uri
from core.errors import ConfigError
from core.inputs.images import prepare
from core.settings import ASSETS_DIR, load_settings


def test_defaults_and_what_reaches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.remote_model, settings.remote_image_format, settings.remote_max_retries) == ("", "jpeg", 2)
    monkeypatch.setenv("LOUPE_REMOTE_IMAGE_FORMAT", "PNG")
    monkeypatch.setenv("LOUPE_REMOTE_MAX_RETRIES", "0")
    monkeypatch.setenv("LOUPE_REMOTE_MODEL", "internlm-xcomposer2d5-7b")
    backend = create_backend(load_settings(backend="openai", openai_base_url="http://127.0.0.1:23333/v1"))
    assert isinstance(backend, OpenAIRemoteBackend)
    assert (backend.model_id, backend.image_format, backend.max_retries) == ("internlm-xcomposer2d5-7b", "png", 0)


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("remote_image_format", "webp", "allowed: jpeg, png"),
    ("remote_max_retries", "-1", "at least 0"),
    ("remote_max_retries", "2.5", "at least 0"),
    ("remote_model", 7, "must be a string"),
])
def test_wrong_values_are_refused(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"setting '{key}' .*{allowed}"):
        load_settings(**{key: value})


def test_jpeg_is_about_a_third_of_png_for_a_photo() -> None:
    photo = prepare((ASSETS_DIR / "samples" / "product_router.jpg").read_bytes())
    jpeg, png = len(data_uri(photo.image, "jpeg")), len(data_uri(photo.image, "png"))
    assert jpeg < 0.5 * png
