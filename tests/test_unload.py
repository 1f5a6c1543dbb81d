"""Unloading gives everything back (core/serving/lifecycle.py, the backend's unload()), on the real demo model on
the CPU: nothing keeps the model, its fast decoder or their tensors reachable, and the decoder's thread ends.
The same on a GPU, measured with NVML, is tests/test_unload_gpu.py."""
from __future__ import annotations

import gc
import threading
import weakref

from PIL import Image

from core.records import GenerationSettings
from core.serving.lifecycle import ModelSlot
from core.settings import load_settings
from tests.image_factory import encode


def _decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("loupe-fast-decode")]


def test_release_drops_every_reference_to_the_model_and_its_fast_decoder() -> None:
    threads_before = set(_decoder_threads())
    slot = ModelSlot()
    engine = slot.get(load_settings(device="cpu"))
    backend = engine.backend
    assert backend.fast_decoder is not None  # the fast path is what keeps most on the side
    image = encode(Image.new("RGB", (96, 64), "navy"), "PNG")
    answer = engine.submit([image], "What is in the image?", GenerationSettings(max_new_tokens=6)).collect()
    assert answer.output_tokens == 6
    model, decoder = weakref.ref(backend.model), weakref.ref(backend.fast_decoder)
    cache = weakref.ref(backend.fast_decoder.k_cache[0])
    weight = weakref.ref(backend.model.lm_head.weight)

    slot.release()
    del engine
    gc.collect()

    assert slot.engine is None and backend.model is None and backend.fast_decoder is None
    assert model() is None, "the unloaded model is still reachable"
    assert decoder() is None and cache() is None and weight() is None
    assert set(_decoder_threads()) <= threads_before, "the fast decoder's thread outlived the unload"
