"""Decode speed of a 7B-class VLM against the memory-bandwidth limit (issue: fast decode path).

    python bench/decode_speed.py [--model-dir DIR] [--skip-hf-compile]   # on a GPU: the 7B-class model
    python bench/decode_speed.py --cpu                                   # CI: the demo model, small numbers

Builds (once, into --model-dir) a LLaVA-shaped model with CLIP ViT-L/14-336 and a 32-layer, 4096-wide,
8-KV-head decoder (vocab 92544), bf16, random weights; loads it through Loupe's engine; then measures
in one run: copy bandwidth, load time, time to first token (1280×720 image, 60-token question), decode
tokens/s at batch 1 over 256 tokens for plain generate(), HF's static cache + compile, and Loupe's path,
4 prompts batched vs one, peak memory, and the correctness checks. Prints one JSON line and writes it
to bench/results/decode_speed_<cuda|cpu>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llava_7b  # noqa: E402  (bench/, beside this script)
import torch  # noqa: E402
from llava_7b import sync, timed  # noqa: E402

from core.models.fast_decode_accuracy import teacher_forced  # noqa: E402

NEW_TOKENS = 256


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy, counting bytes read and written (as the H100 figure of 3.0 TB/s does)."""
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync()
    started = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync()
    seconds = (time.perf_counter() - started) / 10
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 / seconds / 1e9


def build_7b(target: Path) -> None:
    from core.models import demo_model

    tokenizer = demo_model._build_tokenizer()
    model = llava_7b.build_on_gpu(tokenizer)
    model.save_pretrained(target)
    llava_7b.processor(tokenizer).save_pretrained(target)
    del model
    torch.cuda.empty_cache()


def decoder_bytes(model) -> int:
    """Bytes read per decoded token: every decoder layer and the LM head (embedding rows are lookups)."""
    lm = model.model.language_model
    layers = sum(p.numel() * p.element_size() for p in lm.layers.parameters())
    return layers + model.lm_head.weight.numel() * model.lm_head.weight.element_size()


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--model-dir", default="/tmp/loupe-7b")
    parser.add_argument("--skip-hf-compile", action="store_true")
    parser.add_argument("--rows", type=int, default=8, help="fast_decode_rows on the GPU (8 answers at once)")
    parser.add_argument("--other-attention", action="store_true", help="also time the other decode attention")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/decode_speed_<cuda|cpu>.json)")
    args = parser.parse_args()

    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.models.fast_decode import FastDecoder
    from core.serving.engine import load_engine
    from core.settings import load_settings

    quiet_libraries()
    on_gpu = torch.cuda.is_available() and not args.cpu
    result: dict = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "torch": torch.__version__}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"decode_speed_{'cuda' if on_gpu else 'cpu'}.json"

    def save() -> None:  # after every stage, so a failure late in the run keeps what was measured
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    if on_gpu:
        result["hbm_GBps"] = round(copy_bandwidth_gbps(), 1)
        target = Path(args.model_dir)
        if not (target / "config.json").is_file():
            result["build_and_save_s"] = round(timed(lambda: build_7b(target)), 1)
        settings = load_settings(model=str(target), device="cuda", fast_decode_rows=args.rows)
    else:
        settings = load_settings(device="cpu")
    started = time.perf_counter()
    engine = load_engine(settings)
    result["load_s"] = round(time.perf_counter() - started, 2)
    save()
    backend = engine.backend
    model = backend.model
    result["bytes_per_token_GB"] = round(decoder_bytes(model) / 1e9, 3)
    result["fast_status"] = getattr(backend, "fast_status", "")
    if on_gpu:
        result["bandwidth_limit_tok_s"] = round(result["hbm_GBps"] / result["bytes_per_token_GB"], 1)

    image = Image.new("RGB", (1280, 720), "teal")
    question = "请详细描述这张图片中的表格内容，包括标题、每一列的名称、每一行的数值，以及合计是多少？" * 1
    prepared = engine.prepare_image(_png(image))
    query = engine.build_query([prepared], question, engine.default_generation(max_new_tokens=NEW_TOKENS))
    inputs = backend.device_inputs(backend.encode(query))
    result["prompt_tokens"] = int(inputs["input_ids"].shape[1])
    eos: set[int] = set()  # fixed length: never stop early

    def plain(n: int, batch_inputs=None):
        return model.generate(**(batch_inputs or inputs), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              repetition_penalty=1.005)

    plain(4)  # warm-up
    torch.cuda.reset_peak_memory_stats() if on_gpu else None
    t1, tn = timed(lambda: plain(1)), timed(lambda: plain(NEW_TOKENS))
    result["plain_generate_tok_s"] = round((NEW_TOKENS - 1) / (tn - t1), 2)
    result["plain_ttft_s"] = round(t1, 4)
    save()
    if on_gpu:
        result["plain_peak_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)

    fast = backend.fast_decoder if getattr(backend, "fast_decoder", None) is not None else FastDecoder(model, 4096)
    warm = time.perf_counter()
    fast.generate(dict(inputs), 8, 1.005, eos)
    result["fast_first_call_s"] = round(time.perf_counter() - warm, 2)
    torch.cuda.reset_peak_memory_stats() if on_gpu else None
    from decode_compile_variants import decode_rate

    result["decode_tok_s"] = round(decode_rate(fast, inputs, NEW_TOKENS)[0], 2)  # best of two, as its anchors
    if on_gpu:
        result["fast_peak_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        result["decode_pct_of_limit"] = round(100 * result["decode_tok_s"] / result["bandwidth_limit_tok_s"], 1)
    save()
    result["decode_profile"] = profile_decode(fast, inputs, on_gpu)
    result["launches_per_token"] = result["decode_profile"]["kernel_launches_per_token"]
    result["gpu_busy_pct"] = result["decode_profile"]["device_busy_pct"]
    result["decode_attention"] = str(fast.attention)
    save()
    if on_gpu and args.other_attention:  # the other decode attention in the same run (decode_attention.py)
        result["other_attention"] = other_attention(model, inputs, fast, result["bandwidth_limit_tok_s"])
        save()

    # Time to first token through the engine, as an analyst sees it (image preparation included).
    ttfts = []
    for _ in range(3):
        stream = engine.ask([prepared], question, engine.default_generation(max_new_tokens=1))
        answer = stream.collect()
        ttfts.append(answer.timings.preprocess + answer.timings.vision + answer.timings.prefill)
    result["ttft_s"] = round(min(ttfts), 4)
    result["answer_timings_s"] = answer.to_json()["timings_s"]
    # And for questions of lengths not asked before, as analysts' questions are: a per-shape cost in the prefill
    # (cuDNN's attention graphs were one: core/backends/runtime.disable_cudnn_attention) shows here, not above.
    fresh = []
    for extra in range(1, 4):
        answer = engine.ask([prepared], question + "请回答。" * extra, engine.default_generation(max_new_tokens=1)).collect()
        fresh.append(answer.timings.preprocess + answer.timings.vision + answer.timings.prefill)
    result["ttft_new_lengths_s"] = [round(t, 4) for t in fresh]
    # Decoding as an analyst's question runs it: through the engine, from the answer's own generation thread.
    # It must match decode_tok_s (the fast path keeps its CUDA graphs on its own thread for this).
    answers = [engine.ask([prepared], question, engine.default_generation(max_new_tokens=NEW_TOKENS)).collect()
               for _ in range(2)]
    result["engine_decode_tok_s"] = round(max(a.tokens_per_s for a in answers), 2)
    result["engine_output_tokens"] = answers[-1].output_tokens
    save()

    # Compare: four different prompts over one image through the backend's batch path (on the fast path's rows
    # when the decoder has them), against one prompt through the same path: 64 tokens each.
    prompts = [question, "What is the title?", "List four items from left to right.", "Is there a signature?"]
    four = [engine.build_query([prepared], q, engine.default_generation(max_new_tokens=64)) for q in prompts]
    # Interleaved runs, the best of each: the machine drifts between a fast and a slow mode from run to run
    # (bench/results/compare_breakdown_cuda.json: vision 9 or 17 ms, prefill 27 or 47 ms, both paths alike).
    backend.answer_batch(four[:2], min_new_tokens=8)  # warm-up
    walls: dict[int, list[float]] = {1: [], 4: []}
    for _ in range(3):
        for count in walls:
            walls[count].append(timed(lambda count=count: backend.answer_batch(four[:count], min_new_tokens=64)))
    single_s, batched_s = min(walls[1]), min(walls[4])
    result["batch4_over_single"] = round(batched_s / single_s, 3)
    result["batch4_s"], result["batch1_s"] = round(batched_s, 3), round(single_s, 3)
    result["batch_rows"] = getattr(fast, "rows", 1)
    save()
    if getattr(fast, "rows", 1) >= 8:  # continuous batching through the scheduler (bench/concurrent_decode.py)
        from concurrent_decode import measure

        result["concurrent"] = measure(engine, prepared, 8, NEW_TOKENS)
        for key in ("concurrent8_throughput_over_single", "concurrent8_min_stream_over_alone"):
            result[key] = result["concurrent"][key]
        save()

    result.update(correctness(model, fast, inputs, on_gpu))
    save()
    if on_gpu and not args.skip_hf_compile:
        def hf_static(n: int):
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  repetition_penalty=1.005, cache_implementation="static")
        try:
            # Same max_new_tokens every call: another length means another static cache and a recompile.
            compile_started = time.perf_counter()
            hf_static(NEW_TOKENS)
            hf_static(NEW_TOKENS)
            result["hf_static_compile_first_calls_s"] = round(time.perf_counter() - compile_started, 1)
            hn = timed(lambda: hf_static(NEW_TOKENS))
            result["hf_static_compile_tok_s"] = round((NEW_TOKENS - 1) / (hn - result["plain_ttft_s"]), 2)
        except Exception as exc:  # noqa: BLE001 - HF's own path failing must not lose Loupe's figures
            result["hf_static_compile_error"] = f"{type(exc).__name__}: {exc}"[:500]

    if on_gpu:
        result["peak_GB_per_gpu"] = {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 1e9, 2)
                                     for i in range(torch.cuda.device_count())}
    save()
    print(json.dumps(result))
    return result


def other_attention(model, inputs, fast, limit: float) -> dict:
    """Decode tok/s of a one-row fast decoder with the attention the engine's decoder does not use: the
    anchor for switching the `decode_attention` default. (Its fused weights are a second copy: fine on a
    benchmark GPU.)"""
    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import FastDecoder

    kind = DecodeAttention.SDPA if fast.attention is DecodeAttention.FLEX else DecodeAttention.FLEX
    try:
        from decode_compile_variants import decode_rate

        other = FastDecoder(model, fast.max_len, attention=kind)
        compile_s = other.warm_up()
        # Warmed up and best of two, as decode_tok_s: a cold one-token call (its first eager prefill) once made
        # this 234 tok/s against the engine's 214 in the same run (a slow t1 inflates the difference).
        rate, _tokens = decode_rate(other, inputs, NEW_TOKENS)
        same = torch.equal(other.generate(dict(inputs), 64, 1.005, set()), fast.generate(dict(inputs), 64, 1.005, set()))
        other.close()
        return {"attention": str(kind), "decode_tok_s": round(rate, 2), "pct_of_limit": round(100 * rate / limit, 1),
                "compile_s": round(compile_s, 1), "same_64_tokens_as_engine": same}
    except Exception as exc:  # noqa: BLE001 - the engine's own figures stay
        return {"attention": str(kind), "error": f"{type(exc).__name__}: {exc}"[:500]}


PROFILED_STEPS = 32


def profile_decode(fast, inputs, on_gpu: bool) -> dict:
    """Where a decoded token's time goes: kernel time against wall time (the rest is launch gaps and host
    work), kernels and CUDA-graph replays per token, and the ops that take the most device time.

    Two profiled calls, 1 and 1 + PROFILED_STEPS new tokens; their difference is the decode steps alone."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])

    def run(new: int):
        def profiled():  # on the decoder's own thread, where its CUDA graphs (and its CPU ops) are
            with profile(activities=activities) as prof:
                wall = timed(lambda: fast.generate(dict(inputs), new, 1.005, set()))
            return wall, prof.key_averages()

        return fast.on_own_thread(profiled)

    from torch.autograd import DeviceType

    def on_device(event) -> bool:  # a kernel (or memcpy) as CUPTI saw it, CUDA-graph replays included
        return not on_gpu or getattr(event, "device_type", None) == DeviceType.CUDA

    def device_us(event) -> float:
        if not on_gpu:
            return float(event.self_cpu_time_total)
        # CPU ops carry their kernels' time too ("Call CompiledFxGraph"): only device events are counted
        return float(getattr(event, "self_device_time_total", 0.0) or 0.0) if on_device(event) else 0.0

    def totals(events) -> tuple[float, int, int]:
        kernel = sum(device_us(e) for e in events)
        launches = sum(e.count for e in events if on_gpu and on_device(e))  # kernels run, graph or not
        graphs = sum(e.count for e in events if e.key == "cudaGraphLaunch")
        return kernel, launches, graphs

    wall_1, events_1 = run(1)
    wall_n, events_n = run(1 + PROFILED_STEPS)
    (k1, l1, g1), (kn, ln, gn) = totals(events_1), totals(events_n)
    wall_us = (wall_n - wall_1) * 1e6
    top = sorted(events_n, key=device_us, reverse=True)[:8]
    return {
        "steps": PROFILED_STEPS,
        "wall_ms_per_token": round(wall_us / PROFILED_STEPS / 1e3, 3),
        ("kernel_ms_per_token" if on_gpu else "cpu_op_ms_per_token"): round((kn - k1) / PROFILED_STEPS / 1e3, 3),
        "device_busy_pct": round(100 * (kn - k1) / wall_us, 1) if on_gpu and wall_us > 0 else None,
        "kernel_launches_per_token": round((ln - l1) / PROFILED_STEPS, 1),
        "cuda_graph_replays_per_token": round((gn - g1) / PROFILED_STEPS, 2),
        "top_ops": [{"op": e.key[:80], "ms": round(device_us(e) / 1e3, 3), "calls": e.count} for e in top],
    }


def correctness(model, fast, inputs, on_gpu: bool) -> dict:
    """Teacher-forced over NEW_TOKENS greedy steps (core/models/fast_decode_accuracy.py): the fast path against
    generate()'s own logits, next to the noise floor between transformers' own two paths; against an fp32
    copy of the weights too where it fits (always on the CPU; on a GPU with room for it)."""
    truth = None
    weights = sum(p.numel() for p in model.parameters()) * 4
    if not on_gpu or torch.cuda.mem_get_info()[0] > 1.3 * weights:
        truth = copy.deepcopy(model).float()
    result = teacher_forced(model, fast, inputs, NEW_TOKENS, truth=truth)
    del truth
    return result


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
