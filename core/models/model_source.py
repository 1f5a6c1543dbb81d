"""Which model folder to load: the configured one (a folder or a locally cached id) or the demo model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelError
from core.models import demo_model
from core.settings import Settings


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: its folder on disk, the name to show, and whether it is the demo."""

    path: Path
    name: str
    is_demo: bool


def resolve(settings: Settings) -> ModelSource:
    """Never downloads: a model id must already be in the local Hugging Face cache."""
    if not settings.model:
        path = demo_model.ensure(settings.models_dir)
        return ModelSource(path=path, name=demo_model.DEMO_NAME, is_demo=True)
    candidate = Path(settings.model).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelError(f"The model folder {candidate} has no config.json; is it a model folder?")
        return ModelSource(path=candidate.resolve(), name=candidate.name, is_demo=demo_model.is_demo(candidate))
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(settings.model, local_files_only=True))
    except Exception:  # noqa: BLE001 - any hub failure means "not cached here"
        raise ModelError(
            f"Model '{settings.model}' is neither a folder nor in the local model cache. "
            "Loupe never downloads weights: copy the model folder to this machine and set LOUPE_MODEL to it."
        ) from None
    return ModelSource(path=cached, name=settings.model, is_demo=False)
