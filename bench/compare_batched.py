"""Compare page: 4 templates over one image in ONE batched generate() call vs one template alone vs the 4 in turn.

    python bench/compare_batched.py          # GPU: 7B-class LLaVA, random bf16 weights built on the GPU (~2 min)
    python bench/compare_batched.py --cpu    # CI: the demo model on CPU

Every answer has the same fixed length (min_new_tokens = max_new_tokens), all three through the same code
path (core/backends/batched.py: left padding, one vision encoding); each figure is the median of 3
interleaved runs after a warm-up, wall time around the call, the image already prepared. Writes
bench/results/compare_batched_<cuda|cpu>.json with `device`, `single_s`, `batched_s`, `sequential_s` and
`ratio` (= batched_s / single_s; the goal on a GPU is at most 1.2), and prints it as one JSON line.

The GPU model: CLIP ViT-L/14-336 vision tower, a Llama decoder of 32 layers, 4096 wide, 8 KV heads, 14336
intermediate, vocab 92544 (InternLM-XComposer2.5's shape), built directly on the GPU, never saved.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llava_7b  # noqa: E402  (bench/, beside this script)
import torch  # noqa: E402

TEMPLATES = ("doc-title-en", "general-count-en", "edu-conditions-en", "mod-checklist-en")
RUNS = 3


def gpu_backend(demo_dir: Path):
    """A TransformersBackend holding the 7B-class LLaVA (bench/llava_7b.py), built on the GPU."""
    from core.backends.transformers_native import TransformersBackend
    from core.models import demo_model
    from core.models.model_source import ModelSource

    tokenizer = demo_model._build_tokenizer()
    backend = TransformersBackend(ModelSource(demo_dir, "llava-7b-class-random", False), device="cuda")
    backend.model = llava_7b.build_on_gpu(tokenizer)
    backend.processor = llava_7b.processor(tokenizer)
    return backend


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="the demo model on CPU (what CI runs)")
    parser.add_argument("--new-tokens", type=int, default=0, help="fixed answer length (default 128 GPU, 32 CPU)")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    new_tokens = args.new_tokens or (128 if on_gpu else 32)
    if not on_gpu:  # one thread: on a shared CI machine, spinning intra-op threads make the figures noise
        torch.set_num_threads(1)

    from core.commands.common import quiet_libraries
    from core.inputs import images, questions, samples
    from core.inputs.templates import by_id
    from core.models import demo_model
    from core.records import GenerationSettings
    from core.serving.engine import load_engine
    from core.settings import load_settings

    quiet_libraries()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        demo_dir = demo_model.build(Path(home) / "models" / demo_model.DEMO_NAME)
        backend = gpu_backend(demo_dir) if on_gpu else load_engine(
            load_settings(home=home, model=str(demo_dir), device="cpu")).backend
    build_s = time.perf_counter() - started
    sample = samples.by_id("product-router")  # 1920×1080 photo, prepared to 1280×720
    prepared = images.prepare(sample.read())
    generation = GenerationSettings(max_new_tokens=new_tokens)
    queries = [questions.build_query([prepared], by_id(t).fill(), generation) for t in TEMPLATES]

    def answer(batch):
        return backend.answer_batch(batch, min_new_tokens=new_tokens)

    answer(queries)  # warm-up: kernels, allocator, caches
    answer(queries[:1])
    runs: dict[str, list[float]] = {"single": [], "batched": [], "sequential": []}
    for _ in range(RUNS):  # interleaved, so a change in machine load hits all three alike
        runs["single"].append(llava_7b.timed(lambda: answer(queries[:1])))
        runs["batched"].append(llava_7b.timed(lambda: answer(queries)))
        runs["sequential"].append(llava_7b.timed(lambda: [answer([q]) for q in queries]))
    single_s, batched_s, sequential_s = (statistics.median(runs[k]) for k in ("single", "batched", "sequential"))
    batched = answer(queries)
    alone = [answer([q])[0] for q in queries]
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    result = {
        "device": device, "model": "llava-7b-class-random-bf16" if on_gpu else "demo-llava-v2 (float32)",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "templates": list(TEMPLATES), "image": f"{sample.id} ({prepared.width}×{prepared.height})",
        "new_tokens": new_tokens, "runs": RUNS, "cpu_threads": torch.get_num_threads(),
        "single_s": round(single_s, 4), "batched_s": round(batched_s, 4), "sequential_s": round(sequential_s, 4),
        "ratio": round(batched_s / single_s, 3), "sequential_over_single": round(sequential_s / single_s, 3),
        "speedup_vs_sequential": round(sequential_s / batched_s, 3),
        "output_tokens": [a.output_tokens for a, _ids in batched],
        "prompt_tokens": [a.input_tokens for a, _ids in batched],
        "vision_s_batched": round(batched[0][0].timings.vision, 4),
        "identical_tokens": [ids == one_ids for (_a, ids), (_b, one_ids) in zip(batched, alone)],
        "runs_s": {k: [round(v, 4) for v in times] for k, times in runs.items()},
        "setup_s": round(build_s, 1),
        "peak_memory_gb": batched[0][0].peak_memory_gb,
    }
    out = ROOT / "bench" / "results" / f"compare_batched_{'cuda' if on_gpu else 'cpu'}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
