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
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

NEW_TOKENS = 256


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from core import demo_model

    tokenizer = demo_model._build_tokenizer()
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=92544, max_position_embeddings=32768, rope_theta=1e6,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=demo_model.CHAT_TEMPLATE)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    del model
    torch.cuda.empty_cache()


def decoder_bytes(model) -> int:
    """Bytes read per decoded token: every decoder layer and the LM head (embedding rows are lookups)."""
    lm = model.model.language_model
    layers = sum(p.numel() * p.element_size() for p in lm.layers.parameters())
    return layers + model.lm_head.weight.numel() * model.lm_head.weight.element_size()


def timed(fn) -> float:
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--model-dir", default="/tmp/loupe-7b")
    parser.add_argument("--skip-hf-compile", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/decode_speed_<cuda|cpu>.json)")
    args = parser.parse_args()

    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.engine import load_engine
    from core.fast_decode import FastDecoder
    from core.settings import load_settings

    quiet_libraries()
    on_gpu = torch.cuda.is_available() and not args.cpu
    result: dict = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "torch": torch.__version__}
    if on_gpu:
        result["hbm_GBps"] = round(copy_bandwidth_gbps(), 1)
        target = Path(args.model_dir)
        if not (target / "config.json").is_file():
            result["build_and_save_s"] = round(timed(lambda: build_7b(target)), 1)
        settings = load_settings(model=str(target), device="cuda")
    else:
        settings = load_settings(device="cpu")
    started = time.perf_counter()
    engine = load_engine(settings)
    result["load_s"] = round(time.perf_counter() - started, 2)
    backend = engine.backend
    model, processor = backend.model, backend.processor
    result["bytes_per_token_GB"] = round(decoder_bytes(model) / 1e9, 3)
    if on_gpu:
        result["bandwidth_limit_tok_s"] = round(result["hbm_GBps"] / result["bytes_per_token_GB"], 1)

    image = Image.new("RGB", (1280, 720), "teal")
    question = "请详细描述这张图片中的表格内容，包括标题、每一列的名称、每一行的数值，以及合计是多少？" * 1
    prepared = engine.prepare_image(_png(image))
    query = engine.build_query([prepared], question, engine.default_generation(max_new_tokens=NEW_TOKENS))
    inputs = backend._inputs(query)
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
    if on_gpu:
        result["plain_peak_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)

    fast = backend.fast_decoder if getattr(backend, "fast_decoder", None) is not None else FastDecoder(model, 4096)
    warm = time.perf_counter()
    fast.generate(dict(inputs), 8, 1.005, eos)
    result["fast_first_call_s"] = round(time.perf_counter() - warm, 2)
    torch.cuda.reset_peak_memory_stats() if on_gpu else None
    f1 = timed(lambda: fast.generate(dict(inputs), 1, 1.005, eos))
    fn = timed(lambda: fast.generate(dict(inputs), NEW_TOKENS, 1.005, eos))
    result["decode_tok_s"] = round((NEW_TOKENS - 1) / (fn - f1), 2)
    if on_gpu:
        result["fast_peak_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        result["decode_pct_of_limit"] = round(100 * result["decode_tok_s"] / result["bandwidth_limit_tok_s"], 1)

    # Time to first token through the engine, as an analyst sees it (image preparation included).
    ttfts = []
    for _ in range(3):
        stream = engine.ask([prepared], question, engine.default_generation(max_new_tokens=1))
        answer = stream.collect()
        ttfts.append(answer.timings.preprocess + answer.timings.vision + answer.timings.prefill)
    result["ttft_s"] = round(min(ttfts), 4)
    result["answer_timings_s"] = answer.to_json()["timings_s"]

    # Four different prompts over one image, batched (left padding) vs one alone, same fixed length.
    prompts = [question, "What is the title?", "List four items from left to right.", "Is there a signature?"]
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                           add_generation_prompt=True, tokenize=False) for q in prompts]
    processor.tokenizer.padding_side = "left"
    batch = processor(images=[image] * 4, text=texts, return_tensors="pt", padding=True).to(model.device)
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    one = processor(images=[image], text=texts[:1], return_tensors="pt").to(model.device)
    one["pixel_values"] = one["pixel_values"].to(model.dtype)
    plain(2, batch)
    single_s, batched_s = timed(lambda: plain(64, one)), timed(lambda: plain(64, batch))
    result["batch4_over_single"] = round(batched_s / single_s, 3)

    if on_gpu and not args.skip_hf_compile:
        def hf_static(n: int):
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  repetition_penalty=1.005, cache_implementation="static")
        compile_started = time.perf_counter()
        hf_static(8)
        hf_static(8)
        result["hf_static_compile_first_calls_s"] = round(time.perf_counter() - compile_started, 1)
        h1, hn = timed(lambda: hf_static(1)), timed(lambda: hf_static(NEW_TOKENS))
        result["hf_static_compile_tok_s"] = round((NEW_TOKENS - 1) / (hn - h1), 2)

    result.update(correctness(model, fast, inputs))
    if on_gpu:
        result["peak_GB_per_gpu"] = {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 1e9, 2)
                                     for i in range(torch.cuda.device_count())}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"decode_speed_{'cuda' if on_gpu else 'cpu'}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return result


def correctness(model, fast, inputs) -> dict:
    """Teacher-forced logits of both paths over the same 256 tokens: worst relative difference per step."""
    with torch.no_grad():
        reference_ids = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        full = dict(inputs, input_ids=reference_ids,
                    attention_mask=torch.ones_like(reference_ids))
        ref_logits = model(**full).logits[0].float()
        length = fast.prefill(dict(inputs))
        worst = 0.0
        for step in range(NEW_TOKENS - 1):
            pos = length + step
            got = fast.logits_at(reference_ids[:, pos], fast.positions[pos: pos + 1])
            ref = ref_logits[pos]
            worst = max(worst, float((got - ref).norm() / ref.norm()))
    return {"teacher_forced_max_rel_diff": round(worst, 5), "teacher_forced_ok": worst <= 1e-2}


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
