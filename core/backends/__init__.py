"""Backends: pick one from the settings. The rest of Loupe only sees the Backend protocol."""
from __future__ import annotations

from core.backends.base import Backend, LoadProgress, ProgressCallback
from core.errors import ModelError
from core.settings import Settings

__all__ = ["Backend", "LoadProgress", "ProgressCallback", "create_backend"]


def create_backend(settings: Settings) -> Backend:
    """The backend the settings ask for, not yet loaded (call .load())."""
    kind = settings.backend
    if kind in ("auto", "transformers"):
        from core import model_source
        from core.backends.transformers_native import TransformersBackend

        return TransformersBackend(
            model_source.resolve(settings),
            device=settings.device,
            max_images=settings.max_images,
            stream_timeout_s=settings.stream_timeout_s,
        )
    if kind == "openai":  # a remote OpenAI-compatible server; `model` names the model it serves
        from core.backends.openai_remote import OpenAIRemoteBackend

        return OpenAIRemoteBackend(settings.openai_base_url, settings.openai_api_key, settings.model,
                                   max_images=settings.max_images, stream_timeout_s=settings.stream_timeout_s)
    raise ModelError(f"Unknown backend '{kind}' in the settings (use auto, transformers or openai).")
