"""Unloading gives the GPU back, as the driver sees it (NVML, through core/telemetry/gpu_reader.py): a ~1.4 B
model loaded with the fast path (its decode step compiled, CUDA graphs recorded on the decoder's thread),
answering once, then unloaded through the model slot, leaves NVML's used memory within 0.5 GB of what it was
before the load. Skipped without CUDA (CI); run on the device machine.

The baseline is read after CUDA is initialised in this process (the model is built on the GPU first), so the
CUDA context (~0.5 GB, kept for the life of the process whatever is loaded) is in it: what is measured is what
loading and unloading a model leaves behind.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GB = 1e9
_BENCH = Path(__file__).resolve().parent.parent / "bench" / "oom_recovery.py"


def _nvml_used_bytes() -> int:
    from core.telemetry import gpu_reader

    gpu = next(g for g in gpu_reader.read_gpus() if g.index == 0)
    assert gpu.used_bytes is not None, "NVML gives no reading on this machine"
    return gpu.used_bytes


def _torch_bytes() -> str:
    return f"torch allocated {torch.cuda.memory_allocated() / GB:.3f} GB, reserved {torch.cuda.memory_reserved() / GB:.3f} GB"


def test_unload_returns_nvml_used_memory_to_the_baseline(tmp_path: Path) -> None:
    from PIL import Image

    from core.backends.runtime import give_back_gpu_memory
    from core.records import GenerationSettings
    from core.serving.lifecycle import ModelSlot
    from core.settings import load_settings
    from tests.image_factory import encode

    spec = importlib.util.spec_from_file_location("oom_recovery_bench", _BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder, _facts = bench.build_gpu_model(tmp_path)
    give_back_gpu_memory()
    baseline = _nvml_used_bytes()

    slot = ModelSlot()
    engine = slot.get(load_settings(model=str(folder)))
    decoder = engine.backend.fast_decoder
    assert decoder is not None and decoder.compiled, engine.describe().notes
    loaded = _nvml_used_bytes()
    image = encode(Image.new("RGB", (640, 480), "teal"), "PNG")
    answer = engine.submit([image], "What is in the image?", GenerationSettings(max_new_tokens=8)).collect()
    assert answer.output_tokens > 0
    del decoder
    slot.release()
    after = _nvml_used_bytes()

    print(f"\nNVML used: baseline {baseline / GB:.3f} GB, loaded {loaded / GB:.3f} GB, after unload {after / GB:.3f} GB; "
          f"{_torch_bytes()}")
    assert loaded - baseline > 2 * GB, "the model was never on the GPU: this test would prove nothing"
    assert after - baseline <= 0.5 * GB, f"unload left {(after - baseline) / GB:.3f} GB on the GPU ({_torch_bytes()})"
