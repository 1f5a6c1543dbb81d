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

import torch  # noqa: E402

TEMPLATES = ("doc-title-en", "general-count-en", "edu-conditions-en", "mod-checklist-en")
RUNS = 3


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_backend(demo_dir: Path):
    """A TransformersBackend holding a 7B-class LLaVA with random bf16 weights, built on the GPU."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from core import demo_model
    from core.backends.transformers_native import TransformersBackend
    from core.model_source import ModelSource

    tokenizer = demo_model._build_tokenizer()
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=92544, max_position_embeddings=32768,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    backend = TransformersBackend(ModelSource(demo_dir, "llava-7b-class-random", False), device="cuda")
    backend.model = model
    backend.processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=demo_model.CHAT_TEMPLATE)
    return backend


def timed_s(fn) -> float:
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="the demo model on CPU (what CI runs)")
    parser.add_argument("--new-tokens", type=int, default=0, help="fixed answer length (default 128 GPU, 32 CPU)")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    new_tokens = args.new_tokens or (128 if on_gpu else 32)
    if not on_gpu:  # one thread: on a shared CI machine, spinning intra-op threads make the figures noise
        torch.set_num_threads(1)

    from core import demo_model, images, questions, samples
    from core.commands.common import quiet_libraries
    from core.engine import load_engine
    from core.records import GenerationSettings
    from core.settings import load_settings
    from core.templates import by_id

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
        runs["single"].append(timed_s(lambda: answer(queries[:1])))
        runs["batched"].append(timed_s(lambda: answer(queries)))
        runs["sequential"].append(timed_s(lambda: [answer([q]) for q in queries]))
    single_s, batched_s, sequential_s = (statistics.median(runs[k]) for k in ("single", "batched", "sequential"))
    batched = answer(queries)
    alone = [answer([q])[0] for q in queries]
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    result = {
        "device": device, "model": "llava-7b-class-random-bf16" if on_gpu else "demo-llava-v1 (float32)",
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
