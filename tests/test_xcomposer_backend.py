"""The XComposer backend without its weights: opt-in, config handling, the device_map it would pass."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.backends import Backend, create_backend
from core.backends.xcomposer import XComposerBackend
from core.errors import ModelError, PreflightError
from core.models import model_source, preflight
from core.settings import load_settings
from tests.model_configs import xcomposer_folder
from tests.test_preflight import gpu

XCOMPOSER_FIRST = {"vit", "vision_proj", "plora_glb_GN", "plora_sub_GN", "model.tok_embeddings"}


def _backend(folder: Path, **settings: object) -> XComposerBackend:
    chosen = load_settings(model=str(folder), trust_remote_code=True, **settings)
    clearance = preflight.check(folder, chosen, gpus=(gpu(0, 22.2), gpu(1, 22.2)))
    return XComposerBackend(model_source.resolve(chosen), clearance)


def test_an_xcomposer_folder_is_refused_without_opt_in(tmp_path: Path) -> None:
    folder = xcomposer_folder(tmp_path)
    for backend in ("auto", "xcomposer", "transformers"):  # the config alone selects the XComposer backend
        with pytest.raises(ModelError, match="set trust_remote_code = true"):
            create_backend(load_settings(model=str(folder), backend=backend))


def test_with_opt_in_but_no_gpu_it_is_refused_by_the_preflight_check(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(PreflightError, match="too large for the CPU"):
        create_backend(load_settings(model=str(xcomposer_folder(tmp_path)), trust_remote_code=True))


def test_backend_xcomposer_on_a_native_model_says_what_it_is(demo_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="is a 'llava' model; use backend = 'auto'"):
        create_backend(load_settings(model=str(demo_model_dir), backend="xcomposer", trust_remote_code=True))


def test_the_device_map_it_would_pass_uses_xcomposer_names(tmp_path: Path) -> None:
    backend = _backend(xcomposer_folder(tmp_path))
    assert isinstance(backend, Backend) and backend.name == "xcomposer"
    kwargs = backend.load_kwargs()
    assert kwargs["trust_remote_code"] is True and kwargs["local_files_only"] is True
    assert str(kwargs["dtype"]) == "torch.bfloat16"
    device_map = kwargs["device_map"]
    assert {k for k, v in device_map.items() if not k.startswith("model.layers.")} == XCOMPOSER_FIRST | {"model.norm", "output"}
    assert all(device_map[name] == 0 for name in XCOMPOSER_FIRST)
    assert device_map["model.norm"] == device_map["output"] == 1
    layers = [device_map[f"model.layers.{i}"] for i in range(32)]
    assert layers == sorted(layers) and 14 <= layers.count(0) <= 16  # about half; GPU0 also holds the vision tower
    card = backend.describe()
    assert "unverified on real weights" in card.notes[0] and card.device_map_summary.startswith("GPU0: layers 0-")


def test_a_pinned_split_reaches_the_device_map(tmp_path: Path) -> None:
    device_map = _backend(xcomposer_folder(tmp_path), split="0-15,16-31").load_kwargs()["device_map"]
    assert [device_map[f"model.layers.{i}"] for i in (0, 15, 16, 31)] == [0, 0, 1, 1]


def test_loading_a_folder_without_code_or_weights_fails_cleanly(tmp_path: Path) -> None:
    backend = _backend(xcomposer_folder(tmp_path))
    with pytest.raises(ModelError, match="could not be loaded"):
        backend.load()
    assert backend.model is None and backend.tokenizer is None
    with pytest.raises(ModelError, match="not loaded"):
        backend.stream(None)  # type: ignore[arg-type]
