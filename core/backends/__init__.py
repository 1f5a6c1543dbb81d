"""Backends: pick one from the settings. The rest of Loupe only sees the Backend protocol.

Owns running a model: encoding a query once (base.EncodedQuery, encoding.py), the transformers backend
(with the fast decode path), the batched compare call, the XComposer backend, the remote OpenAI-compatible
backend, generation threads (streaming.py), and building every backend's Answer from what it generated and
the stage clock's readings (answer_builder.py). May import
core.models, core.inputs, core.telemetry, core.records, core.errors, core.messages and core.settings; never
core.serving, core.analysis or core.history.
"""
from __future__ import annotations

from core.backends.base import Backend, EncodedQuery
from core.errors import ModelError
from core.models.load_progress import LoadProgress, ProgressCallback
from core.settings import Settings

__all__ = ["Backend", "EncodedQuery", "LoadProgress", "ProgressCallback", "create_backend"]


def create_backend(settings: Settings, *, replacing: Backend | None = None) -> Backend:
    """The backend the settings ask for, not yet loaded (call .load()).

    Local models pass the pre-flight check first (core/models/preflight.py): the split over the GPUs is planned
    from config.json alone and a model that would not fit is refused, with the numbers, before any weight
    is read. An InternLM-XComposer2.5 folder (model_type internlm2 + InternLMXComposer2ForCausalLM, or
    internlmxcomposer2) or backend = "xcomposer" selects the XComposer backend, Loupe's own implementation
    (no remote code runs). `replacing`: the loaded backend
    this one will replace (unloaded before this one loads); its GPU memory counts as free in the check.
    """
    kind = settings.backend
    if kind in ("auto", "transformers", "xcomposer"):
        from core.backends.runtime import disable_cudnn_attention, use_generation_threads
        from core.models import model_shape, model_source, preflight

        use_generation_threads()  # the CLI, the dashboard and the API server alike (its docstring says why)
        disable_cudnn_attention()  # no attention graph built per prompt length (its docstring says why)
        source = model_source.resolve(settings)
        reclaim = preflight.memory_held(replacing)
        if kind == "xcomposer" or model_shape.is_xcomposer(model_shape.read_config(source.path)):
            from core.backends.xcomposer import create_xcomposer

            return create_xcomposer(source, settings, reclaim=reclaim)
        from core.backends.transformers_native import TransformersBackend

        clearance = preflight.check(source.path, settings, name=source.name, reclaim=reclaim)
        return TransformersBackend(
            source,
            device=clearance.device,
            device_map=clearance.device_map,
            device_map_summary=clearance.summary,
            plan=clearance.plan,
            notes=clearance.notes,
            note_messages=clearance.note_messages,
            max_images=settings.max_images,
            stream_timeout_s=settings.stream_timeout_s,
            fast_decode=settings.fast_decode, fast_decode_rows=settings.fast_decode_rows,
            decode_attention=settings.decode_attention,
        )
    if kind == "openai":  # a remote OpenAI-compatible server; remote_model (else model) names the model it serves
        from core.backends.openai_remote import OpenAIRemoteBackend

        return OpenAIRemoteBackend(settings.openai_base_url, settings.openai_api_key,
                                   settings.remote_model or settings.model, max_images=settings.max_images,
                                   stream_timeout_s=settings.stream_timeout_s,
                                   max_in_flight=settings.remote_max_in_flight,
                                   max_retries=settings.remote_max_retries, image_format=settings.remote_image_format)
    raise ModelError(f"Unknown backend '{kind}' in the settings (use auto, transformers, xcomposer or openai).")
