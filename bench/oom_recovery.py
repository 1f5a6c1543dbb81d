"""Out-of-memory recovery and memory that comes back, through the shared queue (core/serving/scheduler.py).

    python bench/oom_recovery.py                 # GPU when there is one: bench/results/oom_recovery.json
    python bench/oom_recovery.py --device cpu    # CPU mode (CI):           bench/results/oom_recovery_cpu.json

What it shows, on the demo model (or LOUPE_MODEL):
1. burst: three submissions from three sessions at once are all answered, none errors;
2. sequential: 50 requests one after another leave the allocator (GPU) or RSS (CPU) where it was;
3. oom: a request fails with a real allocator out-of-memory error in the middle of generate() (third forward
   pass of the first decoder layer, so a KV cache and 256 MiB of activation are alive): that user gets a
   GenerationError, every tensor of the failed request is freed (allocated bytes back to the baseline), and
   the next request is answered at once, with the model still loaded.
The failure is forced because the demo model's activations are a few MB: no real input exhausts a GPU with
it. The hook asks the real allocator (CUDA's or the host's) for twice the device's memory while holding an
activation, which is what an oversized batch does. Runs in well under a minute on the demo model.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HELD_BYTES = 256 * 2**20


def _memory(device: str) -> int:
    """Allocator bytes on every GPU (GPU mode), or this process's RSS (CPU mode)."""
    import psutil
    import torch

    if device == "cuda":
        return sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count()))
    return psutil.Process().memory_info().rss


def _first_decoder_layer(model: Any) -> Any:
    for name, module in model.named_modules():
        if re.search(r"(^|\.)layers\.0$", name) and "vision" not in name and "visual" not in name:
            return module
    raise RuntimeError("no decoder layer found")


def _hook_target(model: Any) -> Any:
    """Layer 0's attention output projection: both generate() and the fast decode path call this module
    (the fast path reads the layer's other weights directly, so a hook on the layer itself never fires)."""
    layer = _first_decoder_layer(model)
    return getattr(getattr(layer, "self_attn", None), "o_proj", None) or layer


class OversizedActivation:
    """On the Nth call of layer 0's attention output: hold an activation, then ask for more memory than exists."""

    def __init__(self, model: Any, device: str, on_call: int = 3) -> None:
        import torch

        self.held: list[weakref.ref] = []
        self.calls = 0
        self._on_call = on_call
        self._device = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
        self._too_much = (torch.cuda.get_device_properties(self._device).total_memory * 2 if device == "cuda"
                          else 2**50)
        self._handle = _hook_target(model).register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        import torch

        self.calls += 1
        if self.calls != self._on_call:
            return
        activation = torch.ones(HELD_BYTES, dtype=torch.uint8, device=self._device)
        self.held.append(weakref.ref(activation))
        torch.empty(self._too_much, dtype=torch.uint8, device=self._device)

    def remove(self) -> None:
        self._handle.remove()


def run(device: str, sequential: int = 50) -> dict[str, Any]:
    import torch
    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.errors import GenerationError
    from core.records import GenerationSettings
    from core.serving.engine import load_engine
    from core.serving.scheduler import Scheduler
    from core.settings import load_settings

    quiet_libraries()
    engine = load_engine(load_settings(device=device))
    scheduler = Scheduler(engine.backend)
    image = Image.new("RGB", (640, 480), "teal")
    query = engine.build_query([engine.prepare_image(_png(image))], "What is in the image?",
                               GenerationSettings(max_new_tokens=16))
    try:
        for _ in range(3):
            scheduler.submit(query, session="warm-up").collect()
        result: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                                  "torch": torch.__version__, "model": engine.describe().name,
                                  "memory_measure": "allocator bytes" if device == "cuda" else "process RSS bytes"}

        tickets, barrier = {}, threading.Barrier(3)

        def analyst(name: str) -> None:
            barrier.wait()
            tickets[name] = scheduler.submit(query, session=name)

        threads = [threading.Thread(target=analyst, args=(f"analyst-{i}",)) for i in range(3)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes = []
        for ticket in tickets.values():
            try:
                ticket.collect()
                outcomes.append("answered")
            except GenerationError as exc:
                outcomes.append(f"error: {exc}")
        result["burst"] = {"sessions": 3, "answered": outcomes.count("answered"),
                           "errors": len(outcomes) - outcomes.count("answered"),
                           "seconds": round(time.perf_counter() - started, 3)}

        start = _memory(device)
        for _ in range(sequential):
            scheduler.submit(query, session="sequential").collect()
        end = _memory(device)
        result["sequential"] = {"requests": sequential, "start_bytes": start, "end_bytes": end,
                                "growth_bytes": end - start}

        baseline = _memory(device)
        hook = OversizedActivation(engine.backend.model, device)
        failing = scheduler.submit(query, session="oversized")
        try:
            failing.collect()
            error_type, message = "", "no error"
        except GenerationError as exc:
            error_type, message = type(exc).__name__, str(exc)
        finally:
            hook.remove()
        reported = time.perf_counter()
        after_oom = _memory(device)
        answer = scheduler.submit(query, session="next").collect()
        next_s = time.perf_counter() - reported
        after_next = _memory(device)
        tolerance = 2**20 if device == "cuda" else 64 * 2**20  # allocator bytes are near exact; RSS is not
        result["oom"] = {
            "forced_at": f"decoder layer 0 attention output, call {hook.calls} (during generation, KV cache alive)",
            "error_type": error_type, "message": message,
            "held_activation_freed": bool(hook.held) and hook.held[0]() is None,
            "baseline_bytes": baseline, "after_oom_bytes": after_oom, "after_next_bytes": after_next,
            "returned_to_baseline": abs(after_oom - baseline) <= tolerance and abs(after_next - baseline) <= tolerance,
            "next_request_ok": answer.output_tokens == 16, "next_request_s": round(next_s, 3),
            "model_still_loaded": engine.backend.model is not None,
        }
        if device == "cuda":
            result["oom"]["reserved_after_bytes"] = sum(torch.cuda.memory_reserved(i)
                                                        for i in range(torch.cuda.device_count()))
        return result
    finally:
        scheduler.close()


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--sequential", type=int, default=50)
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    started = time.perf_counter()
    result = run(device, args.sequential)
    result["bench_s"] = round(time.perf_counter() - started, 1)
    name = "oom_recovery.json" if device == "cuda" else "oom_recovery_cpu.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
