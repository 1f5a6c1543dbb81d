"""InternLM-XComposer2.5, 7B-shaped, on Loupe's native implementation: one GPU run against the real code's anchor.

    python bench/xcomposer_cuda.py                                    # on a GPU: the "7b" folder in bf16
    python bench/xcomposer_cuda.py --preset tiny --device cpu --tokens 4 --repeats 1 --small-image   # CI smoke

Builds (once, into --model-dir on local disk) a published-layout XComposer2.5 folder with random weights
(core/models/xcomposer_folder.py: 32 layers, vocab 92544, CLIP-L 560, PLoRA rank 256), then in one run records:
the device and HBM copy bandwidth, the plan on this card and for 2 × 22.2 GB (the planner `python -m core plan`
uses), the predicted and the measured peak memory, load time, image tokens of the seed's 1280×720 product photo,
time to first token through the engine, decode tokens/s on the fast path against the bandwidth limit (bytes
of the decoder's weights read per token), the native model's own generate() (fast path off) in the same run,
and a 250-token answer end to end through the engine (stop tokens disabled so every run decodes all 250).
Each phase's error is recorded and the run goes on. Writes bench/results/xcomposer_<cuda|cpu>.json (and a copy
under $OUT when that is set) and prints it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

QUESTION = "Analyze the given image in a detail manner"  # the anchor's question (the model card's example)
TWO_CARDS_GB = (22.2, 22.2)
# The real remote code on the same H200 (transformers 4.45.2, bf16 + fp16 autocast as its model card runs it,
# eager attention, greedy, 250 tokens, the same 1280×720 image): anchor_xcomposer_real_code.json, 2026-12-01.
ANCHOR = {"answer_s_250_tokens": 21.13, "ttft_s": 0.4501, "decode_tok_s": 12.055, "image_tokens": 2861,
          "decoder_positions": 2889, "peak_alloc_GiB": 20.59, "answer_s_250_tokens_3_beams": 25.27,
          "source": "shared/gpu-runs/2026-12-01-h200/anchor_xcomposer_real_code.json"}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, Any]:
    """Seconds `fn()` takes (CUDA-synchronised on both ends) and what it returned."""
    sync()
    started = time.perf_counter()
    value = fn()
    sync()
    return time.perf_counter() - started, value


def decode_bytes_per_token(preset: str, vocab: int, element_size: int) -> int:
    """Weights one decode step reads: every decoder layer's linears and norms (not the Partial-LoRA branches,
    which run at image positions only, all in the prompt), the final norm and the LM head."""
    from core.models.xcomposer_folder import weight_shapes

    read = [shape for name, shape in weight_shapes(preset, vocab).items()
            if (name.startswith("model.layers.") and "Plora_" not in name) or name in ("model.norm.weight", "output.weight")]
    return sum(math.prod(shape) for shape in read) * element_size


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="7b", choices=("7b", "tiny"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--tokens", type=int, default=250, help="answer length of the decode and end-to-end runs")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each timed phase (the best is kept)")
    parser.add_argument("--model-dir", default=None, help="default /tmp/loupe-xcomposer-<preset>")
    parser.add_argument("--small-image", action="store_true", help="a 320×200 drawing instead of the 1280×720 photo")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/xcomposer_<cuda|cpu>.json)")
    return parser.parse_args()


def main() -> dict:
    args = parse_args()
    on_gpu = args.device == "cuda"
    result: dict[str, Any] = {"what": "InternLM-XComposer2.5 on Loupe's native implementation", "preset": args.preset,
                              "tokens": args.tokens, "question": QUESTION, "errors": {}, "anchor_real_code": ANCHOR}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"xcomposer_{args.device}.json"
    state: dict[str, Any] = {}

    def save() -> None:  # after every phase, so a failure late in the run keeps what was measured
        text = json.dumps(result, indent=1, ensure_ascii=False) + "\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / out.name).write_text(text, encoding="utf-8")

    def phase(name: str, fn) -> None:
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the others' figures
            result["errors"][name] = f"{type(exc).__name__}: {exc}"[:600] + " | " + traceback.format_exc()[-1200:]
        result.setdefault("phase_s", {})[name] = round(time.perf_counter() - started, 2)
        save()

    phase("environment", lambda: environment(result, on_gpu))
    phase("build", lambda: build(result, state, args, on_gpu))
    phase("plan", lambda: plan(result, state, args, on_gpu))
    phase("load", lambda: load(result, state))
    phase("image", lambda: image(result, state, args))
    phase("ttft", lambda: ttft(result, state, args, on_gpu))
    phase("fast_decode", lambda: fast_decode(result, state, args, on_gpu))
    phase("plain_generate", lambda: plain_generate(result, state, args, on_gpu))
    phase("answer_end_to_end", lambda: answer_end_to_end(result, state, args))
    if on_gpu:
        peaks = {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 1e9, 2) for i in range(torch.cuda.device_count())}
        result["peak_gb_per_gpu"] = peaks
        result["peak_gb"] = max(peaks.values())
    if result.get("answer_s_250_tokens"):
        result["anchor_over_loupe"] = round(ANCHOR["answer_s_250_tokens"] / result["answer_s_250_tokens"], 1)
    save()
    print(json.dumps(result, ensure_ascii=False))
    return result


def environment(result: dict, on_gpu: bool) -> None:
    import transformers

    result.update(device=torch.cuda.get_device_name(0) if on_gpu else "cpu", torch=torch.__version__,
                  transformers=transformers.__version__, python=sys.version.split()[0],
                  gpus=torch.cuda.device_count() if on_gpu else 0)
    if on_gpu:
        sys.path.insert(0, str(ROOT / "bench"))
        from decode_speed import copy_bandwidth_gbps

        result["hbm_GBps"] = round(copy_bandwidth_gbps(), 1)


def build(result: dict, state: dict, args: argparse.Namespace, on_gpu: bool) -> None:
    from core.models.xcomposer_folder import build_xcomposer_folder

    folder = Path(args.model_dir or f"/tmp/loupe-xcomposer-{args.preset}")
    marker = folder / "loupe-bench.json"
    wanted = {"preset": args.preset, "seed": 0, "dtype": "bfloat16" if on_gpu else "float32"}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        seconds, _ = timed(lambda: build_xcomposer_folder(folder, preset=args.preset, dtype=wanted["dtype"],
                                                          device=args.device))
        marker.write_text(json.dumps(wanted))
        result["build_s"] = round(seconds, 1)
    result["folder_gb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 1e9, 2)
    state["folder"] = folder


def plan(result: dict, state: dict, args: argparse.Namespace, on_gpu: bool) -> None:
    from core.models import preflight
    from core.settings import load_settings

    folder = state["folder"]
    settings = load_settings(model=str(folder), device=args.device)
    state["settings"] = settings
    clearance = preflight.check(folder, settings, name=folder.name)
    result["plan"] = {"this_device": clearance.plan.to_json() if clearance.plan else {"device": clearance.device},
                      "two_cards_22_2_gb": preflight.plan_for_cards(folder, TWO_CARDS_GB, settings, name=folder.name).to_json()}
    result["dtype"] = clearance.dtype
    if clearance.plan:
        result["predicted_gb"] = round(clearance.plan.total_bytes / 1e9, 2)


def load(result: dict, state: dict) -> None:
    from core.serving.engine import load_engine

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds, engine = timed(lambda: load_engine(state["settings"]))
    state["engine"] = engine
    card = engine.describe()
    result.update(load_s=round(seconds, 2), backend=card.backend, device_map=card.device_map_summary,
                  fast_status=getattr(engine.backend, "fast_status", ""))


def image(result: dict, state: dict, args: argparse.Namespace) -> None:
    import io

    engine = state["engine"]
    if args.small_image:
        from core.models.xcomposer_folder import reference_images

        buffer = io.BytesIO()
        reference_images()["small"].save(buffer, format="PNG")
        photo = buffer.getvalue()
    else:
        from core.inputs.samples import by_id

        sample = by_id("product-router")  # the seed's 1920×1080 product photo, prepared to 1280×720
        assert sample is not None
        photo = sample.read()
    prepared = engine.prepare_image(photo)
    state["photo"] = photo
    query = engine.build_query([prepared], QUESTION, generation(engine, args.tokens))
    encoded = engine.backend.encode(query)
    state["inputs"] = encoded.inputs
    result.update(image_size=list(prepared.image.size), image_tokens=encoded.image_tokens,
                  prompt_tokens=encoded.prompt_tokens)


def generation(engine, tokens: int):
    """The model's own chat() defaults: greedy, one beam, repetition penalty 1.005."""
    return engine.default_generation(max_new_tokens=tokens, do_sample=False, num_beams=1, repetition_penalty=1.005)


def ttft(result: dict, state: dict, args: argparse.Namespace, on_gpu: bool) -> None:
    """Time to first token as an analyst sees it: image preparation, encoding, vision and the prompt."""
    engine = state["engine"]
    runs = []
    for _ in range(args.repeats + 1 if on_gpu else args.repeats):  # on a GPU the first run warms up
        answer = engine.ask([state["photo"]], QUESTION, generation(engine, 1)).collect()
        t = answer.timings
        runs.append({"ttft_s": round(t.preprocess + t.vision + t.prefill, 4), "preprocess": round(t.preprocess, 4),
                     "vision": round(t.vision, 4), "prefill": round(t.prefill, 4)})
    best = min(runs[1:] if on_gpu else runs, key=lambda r: r["ttft_s"])
    result.update(ttft_s=best["ttft_s"], ttft_split_s=best)


class TokenClock:
    """A generation streamer that notes when each new token arrives (one prompt run gives the time to the first
    token and the decode rate: no second run whose difference would be noise on a busy CPU)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.token_times: list[float] = []

    def put(self, value) -> None:
        if value.numel() == 1:  # the prompt arrives first as one put of all its ids (none with embeddings)
            sync()
            self.token_times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def rates(self) -> tuple[float, float]:
        """(seconds to the first new token, new tokens per second after it)."""
        times = self.token_times
        return times[0] - self.started, (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def fast_decode(result: dict, state: dict, args: argparse.Namespace, on_gpu: bool) -> None:
    backend = state["engine"].backend
    decoder = getattr(backend, "fast_decoder", None)
    if decoder is None:
        raise RuntimeError(f"the fast decode path is off: {getattr(backend, 'fast_status', '?')}")
    inputs, n = state["inputs"], args.tokens
    if on_gpu:
        decoder.answer(inputs, 4, 1.005, set())  # warm-up
    rates = []
    for _ in range(args.repeats):
        clock = TokenClock()
        ids = decoder.answer(inputs, n, 1.005, set(), streamer=clock)
        assert len(ids) == n == len(clock.token_times), f"the fast path decoded {len(ids)} tokens, not {n}"
        rates.append(clock.rates()[1])
    result["decode_tok_s"] = round(max(rates), 2)
    element_size = 2 if result.get("dtype") == "bfloat16" else 4
    config = json.loads((state["folder"] / "config.json").read_text())
    per_token = decode_bytes_per_token(args.preset, config["vocab_size"], element_size)
    result["bytes_per_token_GB"] = round(per_token / 1e9, 3)
    if on_gpu and result.get("hbm_GBps"):
        result["bandwidth_limit_tok_s"] = round(result["hbm_GBps"] * 1e9 / per_token, 1)
        result["decode_pct_of_limit"] = round(100 * result["decode_tok_s"] / result["bandwidth_limit_tok_s"], 1)


def plain_generate(result: dict, state: dict, args: argparse.Namespace, on_gpu: bool) -> None:
    """The native model through transformers' generate() (the path with the fast decoder off)."""
    from core.models.xcomposer import answering

    model, inputs, n = state["engine"].backend.model, state["inputs"], args.tokens

    def run(tokens: int, clock: TokenClock | None = None):
        return answering.generate(model, inputs, set(), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                  num_beams=1, repetition_penalty=1.005, streamer=clock)

    if on_gpu:
        run(2)  # warm-up
    best: tuple[float, float, float] | None = None
    for _ in range(args.repeats):
        clock = TokenClock()
        seconds, (ids, _logits) = timed(lambda clock=clock: run(n, clock))
        assert ids.shape[1] == n == len(clock.token_times), f"generate() gave {ids.shape[1]} tokens, not {n}"
        first, rate = clock.rates()
        if best is None or rate > best[1]:
            best = (first, rate, seconds)
    assert best is not None
    result.update(plain_generate_tok_s=round(best[1], 2), plain_ttft_s=round(best[0], 4),
                  plain_generate_answer_s=round(best[2], 3))


def answer_end_to_end(result: dict, state: dict, args: argparse.Namespace) -> None:
    """`tokens` new tokens through the engine, from the photo's bytes to the last token, as a page asks."""
    engine = state["engine"]
    tokenizer = engine.backend.tokenizer
    stops = tokenizer.stop_ids
    tokenizer.stop_ids = frozenset()  # random weights may pick eos early: every run decodes all the tokens
    try:
        runs = []
        for _ in range(args.repeats):
            seconds, answer = timed(lambda: engine.ask([state["photo"]], QUESTION, generation(engine, args.tokens)).collect())
            runs.append((seconds, answer))
    finally:
        tokenizer.stop_ids = stops
    seconds, answer = min(runs, key=lambda run: run[0])
    assert answer.output_tokens == args.tokens, f"the engine answered {answer.output_tokens} tokens"
    result.update(answer_s_250_tokens=round(seconds, 3), answer_output_tokens=answer.output_tokens,
                  engine_decode_tok_s=round(answer.tokens_per_s, 2), answer_timings_s=answer.to_json()["timings_s"],
                  answer_peak_memory_gb=answer.to_json()["peak_memory_gb"], answer_runs_s=[round(s, 3) for s, _ in runs])


if __name__ == "__main__":
    main()
