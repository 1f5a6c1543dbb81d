"""Out-of-memory recovery and memory that comes back, through the shared queue (core/serving/scheduler.py).

    python bench/oom_recovery.py                 # GPU when there is one: bench/results/oom_recovery.json
    python bench/oom_recovery.py --device cpu    # CPU mode (CI):           bench/results/oom_recovery_cpu.json

What it shows:
1. burst: three submissions from three sessions at once are all answered, none errors;
2. sequential: 50 requests one after another leave the allocator (GPU) or RSS (CPU) where it was;
3. out of memory, on a GPU (`oom_paths`): a REAL CUDA out-of-memory error inside generation, once on the fast
   decode path (greedy) and once on generate() (sampling, seeded). The question is first answered normally (the
   reference answer, and every kernel and cuBLAS handle it needs is then loaded); then the card is filled with
   plain tensors, in 1 GiB, 64 MiB and 2 MiB pieces taken from the driver and from torch's own cache, until
   24-26 MiB is left: room for the question's inputs, far below its prefill (two 336 px images: ~1,190 prompt
   tokens, MLP activations of 20-40 MB each; `request_peak_above_baseline_mib` is measured). The question is
   asked again through history (core/serving/recorded_ask.py): the analyst must get OutOfMemoryError, kept in
   history as failed; then the filler is released and torch's allocated bytes must be back at the pre-request
   baseline, the model and its fast decoder still loaded, and the same question must get the same answer.
   `error_type` is the class of the exception torch raised (recorded where Loupe turns it into its own error);
   `exercised` says whether that was really an out-of-memory error. Admission (which would refuse the question
   up front with the card full, as `admission_with_card_full` records) is off for these requests: the point is
   what happens when memory runs out anyway (another process, a fragmenting cache). The model is a ~1.4B LLaVA
   (CLIP ViT-L/14-336 + a 12-layer 2048-wide Llama) built with random weights in the run (seconds); the demo
   model's activations are a few kB, below the allocator's 2 MiB granularity.
   On the CPU (`oom`), the failure is forced by a hook that asks the host allocator for 1 PiB in the middle of
   generation (layer 0's attention output, call 3) while holding a 256 MiB activation.
Every phase is run on its own: a failure is recorded in the JSON (`{"error": ...}`) and the next phase runs.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import re
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HELD_BYTES = 256 * 2**20
MIB, GIB = 2**20, 2**30
# Left free on the card when it is filled: room for the question's inputs (2.7 MB of pixels, which the
# allocator serves from one new 20 MiB segment) so that the failure comes inside generation, and far below
# what the prefill needs (its MLP activations alone are 20-40 MB each; the reference run's peak is recorded).
SLACK = 24 * MIB
# The GPU model: CLIP ViT-L/14-336 (576 tokens an image) + a Llama decoder of ~1 B parameters.
TEXT_SHAPE = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 12, "num_attention_heads": 16,
              "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}


def log(message: str) -> None:
    print(f"[oom_recovery {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    """CPU mode: on the Nth call of layer 0's attention output, hold an activation, then ask the host for 1 PiB."""

    def __init__(self, model: Any, on_call: int = 3) -> None:
        self.held: list[weakref.ref] = []
        self.calls = 0
        self._on_call = on_call
        self._handle = _hook_target(model).register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        import torch

        self.calls += 1
        if self.calls != self._on_call:
            return
        activation = torch.ones(HELD_BYTES, dtype=torch.uint8)
        self.held.append(weakref.ref(activation))
        torch.empty(2**50, dtype=torch.uint8)

    def remove(self) -> None:
        self._handle.remove()


class CardFiller:
    """Takes the GPU's memory with plain tensors until less than `slack` is free (driver and torch's cache)."""

    def __init__(self, device_index: int = 0, slack: int = SLACK) -> None:
        self.device_index, self.slack = device_index, slack
        self.chunks: list[Any] = []

    def fill(self) -> dict[str, float]:
        import torch

        torch.cuda.synchronize(self.device_index)
        for piece in (GIB, 64 * MIB, 2 * MIB):
            # Pieces come from torch's cached free blocks first (free on the card does not move), then from the
            # driver; either way the loop ends when the driver has less than piece + slack left.
            while torch.cuda.mem_get_info(self.device_index)[0] >= piece + self.slack:
                try:
                    self.chunks.append(torch.empty(piece, dtype=torch.uint8, device=f"cuda:{self.device_index}"))
                except torch.OutOfMemoryError:
                    break
        free = torch.cuda.mem_get_info(self.device_index)[0]
        cached = torch.cuda.memory_reserved(self.device_index) - torch.cuda.memory_allocated(self.device_index)
        return {"filled_gb": round(sum(c.numel() for c in self.chunks) / 1e9, 3), "left_free_mib": round(free / MIB, 2),
                "torch_cached_unused_mib": round(cached / MIB, 2)}

    def release(self) -> None:
        import torch

        self.chunks.clear()
        gc.collect()
        torch.cuda.empty_cache()


class RaisedErrors:
    """Records the class and message of what generation raised, where Loupe turns it into its own error
    (core/backends/streaming.describe_failure); keeps no reference to the exception or its frames."""

    def __init__(self) -> None:
        from core.backends import streaming
        from core.serving import scheduler

        # The generation thread's error is described in streaming; one raised before it (inputs to the GPU) in
        # the scheduler, which imported the same function by name.
        self._modules, self._original = (streaming, scheduler), streaming.describe_failure
        self.seen: list[tuple[str, str]] = []

    def __enter__(self) -> RaisedErrors:
        def recording(error: BaseException) -> Any:
            kind = type(error)
            self.seen.append((f"{kind.__module__}.{kind.__qualname__}", str(error)[:600]))
            return self._original(error)

        for module in self._modules:
            module.describe_failure = recording  # type: ignore[attr-defined]
        return self

    def __exit__(self, *_: object) -> None:
        for module in self._modules:
            module.describe_failure = self._original  # type: ignore[attr-defined]


def _bench_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"loupe_bench_{name}", Path(__file__).parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_gpu_model(root: Path, device: str = "cuda") -> tuple[Path, dict]:
    """The ~1.4 B LLaVA of this benchmark (random bf16 weights made on `device`), saved to root; (folder, facts)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from tests.model_configs import CLIP_L14_336

    config = LlavaConfig(vision_config=CLIPVisionConfig(**CLIP_L14_336, projection_dim=768),
                         text_config=LlamaConfig(**TEXT_SHAPE), image_seq_length=576)
    folder = root / "llava-1b-shaped"
    facts = _bench_module("gpu_load_check").build_model(folder, config, device)
    return folder, facts


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _images() -> tuple[bytes, bytes]:
    from PIL import Image

    return _png(Image.new("RGB", (640, 480), "teal")), _png(Image.new("RGB", (480, 640), "maroon"))


def _phase(result: dict[str, Any], name: str, action: Any) -> None:
    """Run one phase; an unexpected failure is recorded under its name and the next phase runs."""
    log(f"{name} ...")
    started = time.perf_counter()
    try:
        result[name] = action()
    except Exception as exc:  # noqa: BLE001 - a benchmark records what happened and goes on
        result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    log(f"{name} done in {time.perf_counter() - started:.1f} s: {json.dumps(result[name], ensure_ascii=False)[:400]}")


def _burst(scheduler: Any, query: Any) -> dict[str, Any]:
    from core.errors import GenerationError

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
    return {"sessions": 3, "answered": outcomes.count("answered"), "errors": len(outcomes) - outcomes.count("answered"),
            "seconds": round(time.perf_counter() - started, 3)}


def _sequential(scheduler: Any, query: Any, device: str, count: int) -> dict[str, Any]:
    start = _memory(device)
    for _ in range(count):
        scheduler.submit(query, session="sequential").collect()
    end = _memory(device)
    return {"requests": count, "start_bytes": start, "end_bytes": end, "growth_bytes": end - start}


def _cpu_oom(engine: Any, scheduler: Any, query: Any) -> dict[str, Any]:
    """CPU mode: a host-allocator failure forced in the middle of generation (see the module's docstring)."""
    from core.errors import GenerationError

    baseline = _memory("cpu")
    hook = OversizedActivation(engine.backend.model)
    failing = scheduler.submit(query, session="oversized")
    try:
        failing.collect()
        error_type, message = "", "no error"
    except GenerationError as exc:
        error_type, message = type(exc).__name__, str(exc)
    finally:
        hook.remove()
    reported = time.perf_counter()
    after_oom = _memory("cpu")
    answer = scheduler.submit(query, session="next").collect()
    next_s = time.perf_counter() - reported
    after_next = _memory("cpu")
    tolerance = 64 * MIB  # RSS is not exact
    return {
        "forced_at": f"decoder layer 0 attention output, call {hook.calls} (during generation, KV cache alive)",
        "error_type": error_type, "message": message,
        "held_activation_freed": bool(hook.held) and hook.held[0]() is None,
        "baseline_bytes": baseline, "after_oom_bytes": after_oom, "after_next_bytes": after_next,
        "returned_to_baseline": abs(after_oom - baseline) <= tolerance and abs(after_next - baseline) <= tolerance,
        "next_request_ok": answer.output_tokens == query.settings.max_new_tokens, "next_request_s": round(next_s, 3),
        "model_still_loaded": engine.backend.model is not None,
    }


def _gpu_oom(engine: Any, images: tuple[bytes, ...], generation: Any, history_dir: Path) -> dict[str, Any]:
    """One question, answered, then asked with the card full (a real CUDA OOM), then asked again."""
    import torch

    from core.backends.stage_clocks import find_vision_module
    from core.errors import AdmissionError, LoupeError
    from core.history import HistoryStore
    from core.serving.engine import Engine
    from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
    from core.serving.scheduler import Scheduler, scheduler_for

    backend = engine.backend
    admit_all = Scheduler(backend, admission=False)

    class AdmitAllEngine(Engine):  # the same engine; its questions skip admission (see the module's docstring)
        def submit(self, images: Any, question: str, generation: Any = None, *, session: str = "default",
                   history: Any = ()) -> Any:  # Engine.submit's signature, history included (what ask_and_record passes)
            return admit_all.submit(self.build_query(images, question, generation, history), session=session)

    served = AdmitAllEngine(backend=backend, settings=engine.settings)
    store = HistoryStore(history_dir / "history.sqlite3")
    request = AskRequest(session_id="0123456789ab", page="documents", question="What is in these images?",
                         images=tuple(ImageUpload(data, f"image-{i}.png") for i, data in enumerate(images)),
                         generation=generation)
    record: dict[str, Any] = {"settings": {"do_sample": generation.do_sample, "seed": generation.seed,
                                           "max_new_tokens": generation.max_new_tokens}}
    try:
        torch.cuda.reset_peak_memory_stats()
        before_alloc = _memory("cuda")
        reference = ask_and_record(served, store, request).run().answer
        assert reference is not None
        record["prompt_tokens"] = reference.input_tokens
        record["request_peak_above_baseline_mib"] = round((torch.cuda.max_memory_allocated() - before_alloc) / MIB, 1)
        record["reference_tokens_per_s"] = reference.tokens_per_s
        gc.collect()
        baseline = _memory("cuda")
        reached: list[bool] = []
        handle = None
        filler = CardFiller()
        try:
            record["card"] = filler.fill()
            try:  # what normal serving (admission on) says with the card this full: refused before generation
                scheduler_for(engine).submit(engine.build_query(
                    [engine.prepare_image(data) for data in images], request.question, generation)).collect()
                record["admission_with_card_full"] = "admitted"
            except AdmissionError as exc:
                record["admission_with_card_full"] = f"refused: {exc}"
            except LoupeError as exc:
                record["admission_with_card_full"] = f"{type(exc).__name__}: {exc}"
            vision = find_vision_module(backend.model)  # its first call is the start of generation
            handle = vision.register_forward_pre_hook(lambda *_: reached.append(True)) if vision is not None else None
            raised = RaisedErrors()
            with raised:
                failing = ask_and_record(served, store, request)
                try:
                    failing.run()
                    loupe_error = ("", "no error")
                except LoupeError as exc:
                    loupe_error = (type(exc).__name__, str(exc))
        finally:
            if handle is not None:
                handle.remove()
            filler.release()
        after_oom = _memory("cuda")
        error_type, message = raised.seen[0] if raised.seen else ("", "no error")
        entry = store.get(failing.entry.id) if failing.entry is not None else None
        record.update({
            "exercised": "OutOfMemoryError" in error_type or "out of memory" in message.lower(),
            "error_type": error_type, "message": message,
            "loupe_error_type": loupe_error[0], "loupe_message": loupe_error[1],
            "failed_inside_generation": bool(reached),
            "history": {"status": str(getattr(entry.status, "value", entry.status)) if entry else "",
                        "error_type": entry.error_type if entry else ""},
            "baseline_allocated_bytes": baseline, "after_oom_allocated_bytes": after_oom,
            "returned_to_baseline": abs(after_oom - baseline) <= MIB,
            "model_still_loaded": backend.model is not None,
            "fast_decoder_still_loaded": getattr(backend, "fast_decoder", None) is not None,
        })
        again = ask_and_record(served, store, request).run().answer
        assert again is not None
        record.update({"next_request_ok": again.output_tokens > 0, "same_answer": again.text == reference.text,
                       "next_tokens_per_s": again.tokens_per_s, "after_next_allocated_bytes": _memory("cuda"),
                       "reserved_after_bytes": torch.cuda.memory_reserved()})
        return record
    finally:
        admit_all.close()


def run(device: str, sequential: int = 50, workdir: str | None = None) -> dict[str, Any]:
    import torch

    from core.commands.common import quiet_libraries
    from core.records import GenerationSettings
    from core.serving.engine import load_engine
    from core.serving.scheduler import Scheduler, close_scheduler_for
    from core.settings import load_settings

    quiet_libraries()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                              "torch": torch.__version__,
                              "memory_measure": "allocator bytes" if device == "cuda" else "process RSS bytes"}
    work = Path(tempfile.mkdtemp(prefix="loupe-oom-", dir=workdir))
    settings = load_settings(device=device)
    if device == "cuda":
        log("building the ~1.4 B model on the GPU")
        folder, result["model_build"] = build_gpu_model(work)
        settings = load_settings(device=device, model=str(folder))
    log("loading")
    started = time.perf_counter()
    engine = load_engine(settings)
    result.update(model=engine.describe().name, load_s=round(time.perf_counter() - started, 1),
                  model_card_notes=list(engine.describe().notes))
    log(f"loaded {result['model']} in {result['load_s']} s")
    images = _images() if device == "cuda" else _images()[:1]
    scheduler = Scheduler(engine.backend)
    query = engine.build_query([engine.prepare_image(data) for data in images], "What is in the image?",
                               GenerationSettings(max_new_tokens=16))
    try:
        for _ in range(3):
            scheduler.submit(query, session="warm-up").collect()
        _phase(result, "burst", lambda: _burst(scheduler, query))
        _phase(result, "sequential", lambda: _sequential(scheduler, query, device, sequential))
        if device == "cuda":
            paths: dict[str, Any] = {}
            greedy = engine.default_generation(max_new_tokens=16)
            sampled = engine.default_generation(max_new_tokens=16, do_sample=True, seed=7)
            _phase(paths, "fast_decode", lambda: _gpu_oom(engine, images, greedy, work))
            _phase(paths, "generate", lambda: _gpu_oom(engine, images, sampled, work))
            result["oom_paths"] = paths
        else:
            _phase(result, "oom", lambda: _cpu_oom(engine, scheduler, query))
        return result
    finally:
        scheduler.close()
        close_scheduler_for(engine)  # the one the admission check used, if any
        engine.backend.unload()  # so that the tests run after this in one process start from a bare GPU
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--workdir", default=None, help="where the GPU model's safetensors go (a few GB)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    started = time.perf_counter()
    try:
        result = run(device, args.sequential, args.workdir)
    except Exception as exc:  # noqa: BLE001 - the model could not even be built or loaded: say so in the JSON
        result = {"device": device, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["bench_s"] = round(time.perf_counter() - started, 1)
    write(result, device)
    print(json.dumps(result, ensure_ascii=False))
    return result


def write(result: dict[str, Any], device: str) -> Path:
    name = "oom_recovery.json" if device == "cuda" else "oom_recovery_cpu.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
